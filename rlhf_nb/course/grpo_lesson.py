"""Lesson 11, the GRPO family as practitioners use it: its stored sweep (one GRPO run per variant and seed), the
length of completions by the sign of their advantage, seed bands, J/J*, the exact gradient of each KL placement on a
case small enough to enumerate, and TRL 1.16's GRPOConfig names next to the kit's flags and their equations.

`python -m rlhf_nb.tools.grpo_sweep` runs GRPO_VARIANTS × GRPO_SEEDS once and writes GRPO_SWEEP_PATH; the lesson plots
the file and re-runs one run live (`run_variant`) to check that it matches the file.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .experiments import (STORED_KEYS, ExperimentResult, largest_difference, result_from_dict, result_to_dict,
                          run_settings)

# every run: GRPO, 16 prompts × 4 completions, 10 new tokens, 60 steps of 2 PPO epochs × 2 minibatches (so that the
# ratio leaves 1 and the clip, symmetric or not, has something to clip), the KL as β·Σk1 in the reward at β = 0.05
GRPO_RUN = {"advantage": "grpo", "batch_size": 16, "num_generations": 4, "max_new_tokens": 10, "steps": 60,
            "learning_rate": 1e-3, "ppo_epochs": 2, "num_minibatches": 2}
GRPO_BETA = 0.05
GRPO_SEEDS = (0, 1, 2)
# label -> what it changes from GRPO_RUN (and from the default loss_type bnpo, symmetric clip 0.2, no bonus)
GRPO_VARIANTS: dict[str, dict[str, Any]] = {
    "bnpo": {},
    "grpo": {"loss_type": "grpo"},
    "dr_grpo": {"loss_type": "dr_grpo"},
    "clip-higher 0.28": {"clip_range_high": 0.28},
    "entropy bonus 0.01": {"ent_coef": 0.01},
    "dynamic sampling": {"dynamic_sampling": True},
    "scale none": {"scale_rewards": "none"},
    "scale batch": {"scale_rewards": "batch"},
    "TRL defaults (dapo, β = 0)": {"loss_type": "dapo", "kl_coef": 0.0},  # GRPOConfig's own: no KL term at all
    "k3 in loss × ratio": {"kl_in_loss": True, "kl_loss_ratio": True},
    "k3 in loss": {"kl_in_loss": True, "kl_loss_ratio": False},
    "phrase reward": {"reward": "phrase"},
    "phrase reward + dynamic sampling": {"reward": "phrase", "dynamic_sampling": True},
}
# the sentiment variants, whose J/J* against the optimum the lesson tabulates (the phrase runs have another reward)
SENTIMENT_VARIANTS = tuple(k for k, v in GRPO_VARIANTS.items() if "reward" not in v)
GRPO_SWEEP_PATH = Path(__file__).resolve().parents[1] / "assets" / "grpo-sweep.json"
# what a stored run keeps per step: experiments.STORED_KEYS and the GRPO family's own metrics
GRPO_KEYS = ("policy/clipfrac_low", "policy/clipfrac_high", "rollout/zero_std_frac", "rollout/completion_len_pos_adv",
             "rollout/completion_len_neg_adv", "rollout/eos_frac", "loss/kl")
OPTIMUM_SAMPLES = 64  # base samples per prompt for J* (rlhf_nb.optimum), as lesson 06


def variant_settings(label: str) -> dict[str, Any]:
    """GRPO_RUN with one variant's change (KeyError naming the labels for an unknown one)."""
    if label not in GRPO_VARIANTS:
        raise KeyError(f"no variant {label!r}; the variants are {', '.join(GRPO_VARIANTS)}")
    return {**GRPO_RUN, **GRPO_VARIANTS[label]}


def run_variant(label: str, seed: int) -> ExperimentResult:
    """One run of the stored sweep, exactly as `make grpo_sweep` runs it."""
    return run_settings_beta(seed, variant_settings(label))


def run_settings_beta(seed: int, settings: dict[str, Any]) -> ExperimentResult:
    """experiments.run_settings at the settings' own kl_coef where a variant sets one, else at GRPO_BETA."""
    rest = dict(settings)
    return run_settings(rest.pop("kl_coef", GRPO_BETA), seed, rest)


def grpo_result_to_dict(r: ExperimentResult, digits: int = 6) -> dict[str, Any]:
    """experiments.result_to_dict, with GRPO_KEYS kept too (nan stays nan: JSON's NaN)."""
    return result_to_dict(r, digits, (*STORED_KEYS, *GRPO_KEYS))


def difference(live: ExperimentResult, stored: ExperimentResult, digits: int = 6) -> float:
    """experiments.largest_difference over GRPO_KEYS too: 0.0 when the live run reproduces the stored one."""
    return largest_difference(live.history, stored.history, digits, (*STORED_KEYS, *GRPO_KEYS))


def load_grpo_sweep(path: str | Path = GRPO_SWEEP_PATH) -> dict[str, Any]:
    """The stored sweep: {"runs": {label: [result per seed]}, "optimum": {"J_star", "score", "kl", "n"} at GRPO_BETA,
    "settings", "variants", "beta", "cpu_s", "command"}."""
    raw = json.loads(Path(path).read_text())
    return {**raw, "runs": {k: [result_from_dict(d) for d in runs] for k, runs in raw["runs"].items()}}


# ------------------------------------------------------------------ reading the sweep

def nanmean(xs) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def run_mean(r: ExperimentResult, key: str, last: int | None = None) -> float:
    """A run's mean of one metric over all its steps (or its last `last`), skipping nan steps."""
    h = r.history if last is None else r.history[-last:]
    return nanmean([h_[key] for h_ in h])


def spread(results: list[ExperimentResult], key: str, last: int | None = None) -> dict[str, float]:
    """Across seeds: the mean, min and max of each run's run_mean."""
    per = [run_mean(r, key, last) for r in results]
    return {"mean": sum(per) / len(per), "min": min(per), "max": max(per)}


def fmt(s: dict[str, float], digits: int = 2) -> str:
    """'mean [min, max]'."""
    return f"{s['mean']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}]"


def length_table(runs: dict[str, list[ExperimentResult]], labels=("bnpo", "grpo", "dr_grpo"), last: int = 20):
    """Mean completion length by aggregation × sign of advantage over the last `last` steps, 'mean [min, max]' over
    seeds, and the gap (negative − positive side): Dr. GRPO's claim is that under grpo the gap grows."""
    import pandas as pd

    rows = []
    for lab in labels:
        rs = runs[lab]
        gap = [run_mean(r, "rollout/completion_len_neg_adv", last) - run_mean(r, "rollout/completion_len_pos_adv", last)
               for r in rs]
        rows.append({"loss_type": lab,
                     "len, A > 0": fmt(spread(rs, "rollout/completion_len_pos_adv", last)),
                     "len, A < 0": fmt(spread(rs, "rollout/completion_len_neg_adv", last)),
                     "gap (A<0 − A>0)": fmt({"mean": sum(gap) / len(gap), "min": min(gap), "max": max(gap)}),
                     "EOS share": fmt(spread(rs, "rollout/eos_frac", last))})
    return pd.DataFrame(rows).set_index("loss_type")


def metric_table(runs: dict[str, list[ExperimentResult]], labels, keys: dict[str, str], last: int = 20, digits: int = 3):
    """One row per variant, one column per metric (keys: {column: metric}), each 'mean [min, max]' over seeds of the
    last `last` steps' mean."""
    import pandas as pd

    return pd.DataFrame([{"variant": lab, **{col: fmt(spread(runs[lab], k, last), digits) for col, k in keys.items()}}
                         for lab in labels]).set_index("variant")


def j_ratio_table(runs: dict[str, list[ExperimentResult]], optimum: dict[str, float], beta: float = GRPO_BETA,
                  labels=SENTIMENT_VARIANTS):
    """J/J* per variant: J = score − β·KL over the run's last quarter (ExperimentResult.final), against the stored J*
    at β; 'mean [min, max]' over seeds, and the mean CPU seconds a run took (every run has the same steps and batch)."""
    import pandas as pd

    from ..optimum import objective

    rows = []
    for lab in labels:
        ratios = [objective(r.final_reward, r.final_kl, beta) / optimum["J_star"] for r in runs[lab]]
        rows.append({"variant": lab, "J/J*": fmt({"mean": sum(ratios) / len(ratios), "min": min(ratios),
                                                  "max": max(ratios)}),
                     "score": fmt(spread(runs[lab], "objective/scores", len(runs[lab][0].history) // 4), 3),
                     "KL (nats)": fmt(spread(runs[lab], "objective/kl", len(runs[lab][0].history) // 4)),
                     "CPU s a run": round(sum(r.cpu_s for r in runs[lab]) / len(runs[lab]), 1)})
    return pd.DataFrame(rows).set_index("variant")


def length_score_correlation(scores: torch.Tensor, lengths: torch.Tensor) -> float:
    """Pearson correlation of score and completion length: near 0 says the reward does not pay for length."""
    s, n = scores.double(), lengths.double()
    s, n = s - s.mean(), n - n.mean()
    return float((s * n).sum() / (s.norm() * n.norm()).clamp(min=1e-12))


@torch.no_grad()
def base_length_and_score(n: int = 256, seed: int = 0, max_new_tokens: int = GRPO_RUN["max_new_tokens"]):
    """n completions of the base policy and their sentiment scores: (lengths (n,), scores (n,)) to check that the
    reward does not depend on length."""
    from ..corpus import get_prompts
    from ..policy import load_policy
    from ..rewards import get_reward

    lm, tok = load_policy("embedded")
    g = torch.Generator().manual_seed(seed)
    ro = sample_rollout(lm, tok, get_prompts(n, seed=seed), max_new_tokens, g)
    return ro.completion_mask.float().sum(1), get_reward("sentiment")(ro.prompts, ro.completions).float()


def base_group_scores(n_prompts: int = 64, num_generations: int = GRPO_RUN["num_generations"], seed: int = 0,
                      max_new_tokens: int = GRPO_RUN["max_new_tokens"]) -> torch.Tensor:
    """One GRPO batch of the base policy, scored: n_prompts prompts × num_generations completions, each prompt's
    completions next to each other (as rlhf_nb.train draws them), sentiment scores (n_prompts·num_generations,)."""
    from ..corpus import get_prompts
    from ..policy import load_policy
    from ..rewards import get_reward

    lm, tok = load_policy("embedded")
    prompts = [p for p in get_prompts(n_prompts, seed=seed) for _ in range(num_generations)]
    ro = sample_rollout(lm, tok, prompts, max_new_tokens, torch.Generator().manual_seed(seed))
    return get_reward("sentiment")(ro.prompts, ro.completions).double()


def group_weight_table(scores: torch.Tensor, num_generations: int, bins: int = 4,
                       scales=("group", "batch", "none")):
    """How hard each group pushes under each --scale_rewards. Groups are sorted by the std of their scores into `bins`
    bins of equal size; per bin: its std range and, per scaling, its share of the batch's Σ_i |A_i| with A from
    rlhf_nb.advantages.group_advantages (the package's, as the trainer computes it). A pandas DataFrame."""
    import pandas as pd

    from ..advantages import group_advantages

    std = scores.double().view(-1, num_generations).std(dim=1)  # (groups,), unbiased like the advantage's divisor
    order = torch.argsort(std, stable=True)
    mass = {sc: group_advantages(scores.double(), num_generations, "grpo", sc).abs().view(-1, num_generations).sum(1)
            for sc in scales}  # Σ_i |A_i| per group
    rows = []
    for part in torch.tensor_split(order, bins):
        row = {"groups": len(part), "group std": f"{std[part].min():.3f}–{std[part].max():.3f}"}
        for sc, m in mass.items():
            row[f"share of |A|, {sc}"] = float(m[part].sum() / m.sum())
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index([f"{i + 1}" for i in range(bins)], name="std quartile" if bins == 4
                                             else "std bin"))


def sample_rollout(lm, tok, prompts, max_new_tokens, generator):
    from ..policy import sample

    return sample(lm, tok, prompts, max_new_tokens, 1.0, 0, 1.0, generator=generator)


# ------------------------------------------------------------------ the KL gradient, exactly

PLACEMENTS = ("k1 in reward", "k3 in loss × ratio", "k3 in loss", "k1 in loss")


def true_kl_gradient(z: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
    """∇_z KL(π‖ρ) for categoricals π = softmax(z), ρ = softmax(z_ref) over the last axis, by autograd of the exact sum
    Σ_y π(y)·(log π(y) − log ρ(y)) (equal to π ⊙ (log π/ρ − KL))."""
    z = z.detach().clone().requires_grad_(True)
    logp, ref = torch.log_softmax(z, -1), torch.log_softmax(z_ref.detach(), -1)
    (logp.exp() * (logp - ref)).sum().backward()
    return z.grad


def placement_surrogate(logp: torch.Tensor, ref_logp: torch.Tensor, placement: str) -> torch.Tensor:
    """The term one sampled token y contributes, whose gradient in the policy's logits is what training follows
    (logp, ref_logp: log π(y), log ρ(y) at the sampled tokens, logp differentiable; π_old = π, detached):

        k1 in reward        k1(y)·log π(y), k1 detached    (REINFORCE: the penalty −β·k1 is part of the reward)
        k3 in loss × ratio  (π/π_old)(y)·k3(y)              (TRL 1.16's default use_bias_correction_kl=True)
        k3 in loss          k3(y) = ρ/π − 1 − log(ρ/π)      (TRL before 1.16, the GRPO paper)
        k1 in loss          k1(y) = log π(y) − log ρ(y)     (differentiated as a loss)

    The k3 terms are rlhf_nb.ppo.kl_penalty_loss per token, the one the kit's trainer and TRL's cross-check use."""
    from ..kl import kl_k1
    from ..ppo import kl_penalty_loss

    mask = torch.ones_like(logp)
    per_token = lambda x, m: x  # noqa: E731  (kl_penalty_loss's aggregate: keep each token's term)
    if placement == "k1 in reward":
        return kl_k1(logp, ref_logp).detach() * logp
    if placement == "k3 in loss × ratio":
        return kl_penalty_loss(logp, logp.detach(), ref_logp, mask, True, per_token)
    if placement == "k3 in loss":
        return kl_penalty_loss(logp, logp.detach(), ref_logp, mask, False, per_token)
    if placement == "k1 in loss":
        return kl_k1(logp, ref_logp)
    raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}; got {placement!r}")


def expected_gradient(z: torch.Tensor, z_ref: torch.Tensor, placement: str) -> torch.Tensor:
    """E_{y~π}[∇_z surrogate(y)] exactly: Σ_y π(y)·∇_z surrogate(y), every y of the vocabulary enumerated (the
    sampling distribution π is held fixed, as a sample is in training)."""
    z = z.detach().clone().requires_grad_(True)
    logp, ref = torch.log_softmax(z, -1), torch.log_softmax(z_ref.detach(), -1)  # (..., V): y = every token
    (logp.exp().detach() * placement_surrogate(logp, ref, placement)).sum().backward()
    return z.grad


def sampled_gradient(z: torch.Tensor, z_ref: torch.Tensor, placement: str, n: int,
                     generator: torch.Generator) -> torch.Tensor:
    """The same gradient estimated from n tokens y ~ π per row (what one batch of training sees), averaged."""
    z = z.detach().clone().requires_grad_(True)
    logp, ref = torch.log_softmax(z, -1), torch.log_softmax(z_ref.detach(), -1)  # (R, V)
    y = torch.multinomial(logp.detach().exp(), n, replacement=True, generator=generator)  # (R, n)
    surrogate = placement_surrogate(logp.gather(-1, y), ref.gather(-1, y), placement)  # (R, n)
    (surrogate.mean(-1)).sum().backward()
    return z.grad


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    den = float(a.norm() * b.norm())
    return float((a @ b) / den) if den > 0 else 0.0


def relative_error(a: torch.Tensor, truth: torch.Tensor) -> float:
    """‖a − truth‖ / ‖truth‖."""
    return float((a - truth).double().norm() / truth.double().norm())


def gradient_table(z: torch.Tensor, z_ref: torch.Tensor, n: int = 64, repeats: int = 200, seed: int = 0):
    """For each placement: cosine and relative error of its exact expected gradient against ∇KL(π‖ρ), the same for
    the reverse-KL's mirror ∇KL(ρ‖π) (which k3 alone follows), and over `repeats` sampled estimates of n tokens a row,
    the mean cosine ± its std and the relative error of the estimates' mean (→ the expected gradient's bias)."""
    import pandas as pd

    truth = true_kl_gradient(z, z_ref)
    forward = _forward_kl_gradient(z, z_ref)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for p in PLACEMENTS:
        exact = expected_gradient(z, z_ref, p)
        samples = [sampled_gradient(z, z_ref, p, n, g) for _ in range(repeats)]
        cos = torch.tensor([cosine(s, truth) for s in samples], dtype=torch.float64)
        mean = torch.stack(samples).mean(0)
        zero = float(exact.norm()) < 1e-4 * float(truth.norm())  # no direction: its cosine is undefined
        rows.append({"placement": p, "‖E∇‖ / ‖∇KL(π‖ρ)‖": round(float(exact.norm() / truth.norm()), 4),
                     "cos(E∇, ∇KL(π‖ρ))": math.nan if zero else round(cosine(exact, truth), 4),
                     "rel. error": round(relative_error(exact, truth), 4),
                     "cos(E∇, ∇KL(ρ‖π))": math.nan if zero else round(cosine(exact, forward), 4),
                     f"sampled cos (n={n}), mean ± std": f"{float(cos.mean()):.3f} ± {float(cos.std()):.3f}",
                     f"rel. error of the mean of {repeats}": round(relative_error(mean, truth), 3)})
    return pd.DataFrame(rows).set_index("placement")


def _forward_kl_gradient(z: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
    """∇_z KL(ρ‖π) = π − ρ, by autograd of Σ_y ρ(y)·(log ρ(y) − log π(y))."""
    z = z.detach().clone().requires_grad_(True)
    logp, ref = torch.log_softmax(z, -1), torch.log_softmax(z_ref.detach(), -1)
    (ref.exp() * (ref - logp)).sum().backward()
    return z.grad


GRADIENT_PROMPTS = ("The acting was", "I thought the plot", "This movie is", "The ending felt")


@torch.no_grad()
def first_token_logits(prompts=GRADIENT_PROMPTS, shift: float = 1.0, seed: int = 0):
    """The embedded model's next-token logits after each prompt (the reference ρ, (R, V)), and a policy π whose
    logits are those plus `shift` × a fixed standard-normal draw (a policy that has moved away from ρ, as training
    moves it): one-token completions over the full vocabulary, small enough to enumerate."""
    from ..policy import load_policy

    lm, tok = load_policy("embedded")
    rows = []
    for p in prompts:
        ids = tok(p, return_tensors="pt", add_special_tokens=False)["input_ids"]
        rows.append(lm(ids).logits[0, -1].float())
    z_ref = torch.stack(rows)
    g = torch.Generator().manual_seed(seed)
    return z_ref + shift * torch.randn(z_ref.shape, generator=g), z_ref


def kl_exact(z: torch.Tensor, z_ref: torch.Tensor) -> float:
    """KL(π‖ρ) summed over the rows, nats."""
    logp, ref = torch.log_softmax(z, -1), torch.log_softmax(z_ref, -1)
    return float((logp.exp() * (logp - ref)).sum())


# ------------------------------------------------------------------ TRL's names, from the cross-checked bridge

KNOB_EQUATIONS = {
    "loss_type": "bnpo: Σ_it ℓ_it / Σ_it 1 · grpo: 1/G Σ_i (1/|o_i|) Σ_t ℓ_it · dr_grpo: Σ_it ℓ_it / (G·L_max) · "
                 "dapo: Σ_it ℓ_it / N̄ (tokens per minibatch)",
    "scale_rewards": "A_i = (r_i − mean_group r) / std  (group: the group's std; batch: the batch's; none: no division)",
    "clip_range": "ℓ = −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A),  ρ = π_θ/π_old",
    "clip_range_high": "ε_high in the clip above (none: ε_high = ε_low)",
    "kl_coef": "β: GRPO adds β·k3 to each token's loss; k3 = π_ref/π − 1 − log(π_ref/π)",
    "kl_loss_ratio": "β·(π_θ/π_old)·k3 instead of β·k3 (unbiased ∇KL(π‖π_ref))",
    "ent_coef": "− c·H(π_θ(·|s_t)) added to the loss",
    "num_generations": "G completions per prompt, the group",
    "ppo_epochs": "μ passes over each generation",
}


def knob_table(flags=tuple(KNOB_EQUATIONS)):
    """One row per flag: TRL 1.16 GRPOConfig's name and how the value travels (rlhf_nb.bridges.trl.KNOB_MAP, which
    the cross-check tests run), and the equation the flag sets."""
    import pandas as pd

    from ..bridges.trl import KNOB_MAP

    rows = [{"rlhf_nb flag": f"--{f}", "TRL GRPOConfig": KNOB_MAP[f][0], "carried over": KNOB_MAP[f][1],
             "equation": KNOB_EQUATIONS[f]} for f in flags]
    return pd.DataFrame(rows).set_index("rlhf_nb flag")


# ------------------------------------------------------------------ small worked examples and verdicts

def token_weights(lengths=(2, 8), max_len: int = 10, loss_types=("bnpo", "grpo", "dr_grpo")):
    """The weight ∂loss/∂ℓ_it that each loss_type (rlhf_nb.ppo.aggregate_loss, by autograd) gives ONE token of each
    completion of the given lengths, in one batch: a DataFrame, one row per completion length."""
    import pandas as pd

    from ..ppo import aggregate_loss

    mask = torch.tensor([[1.0] * n + [0.0] * (max_len - n) for n in lengths])
    rows = {}
    for lt in loss_types:
        per_token = torch.zeros(len(lengths), max_len, requires_grad=True)
        aggregate_loss(per_token, mask, lt, max_len=max_len).backward()
        rows[lt] = [round(float(per_token.grad[i, 0]), 4) for i in range(len(lengths))]
    return pd.DataFrame(rows, index=pd.Index([f"{n} tokens" for n in lengths], name="completion"))


def verdict(runs: dict[str, list[ExperimentResult]], a: str, b: str, key: str, min_steps: int = 6) -> str:
    """One line: whether the seed bands of variants a and b separate on `key` (experiments.separated_from) for at
    least the last `min_steps` steps, and which side is higher; only then is there a conclusion to draw."""
    from .experiments import band, separated_from

    step = separated_from(runs[a], runs[b], key)
    if step is None:
        return f"{key}: {a} vs {b}: the seed bands overlap at the last step — no conclusion"
    last = runs[a][0].history[-1]["step"]
    if last - step + 1 < min_steps:
        return (f"{key}: {a} vs {b}: the bands separate only over the last {last - step + 1} step(s) — too short to "
                f"draw a conclusion")
    higher = a if band(runs[a], key)["mean"][-1] > band(runs[b], key)["mean"][-1] else b
    return f"{key}: {a} vs {b}: bands separate from step {step} on; {higher} is higher"


def band_runs(runs: dict[str, list[ExperimentResult]], labels) -> dict[str, list[list[dict]]]:
    """{label: [history per seed]} for plots.plot_bands (nan steps are plotted as gaps)."""
    return {lab: [r.history for r in runs[lab]] for lab in labels}
