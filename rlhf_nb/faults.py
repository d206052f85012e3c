"""Failure switches: run the RLHF loop with one thing deliberately wrong.

    broken = faults.run(cfg, "topk_logprob_mismatch")
    healthy = faults.run(cfg)          # same cfg, same seed: the only difference is the fault

Each fault edits one part of a freshly built `TrainState`: its sampler, its forward pass, its KL loss term (the
parts `ppo_step` calls through the state for this purpose), or its policy, optimizer, reward or β. Nothing in the
package is patched, so `RunConfig` and the production path carry no traps. Every fault is one that people hit in real
runs; `FAULTS` names the issue-tracker threads, the metric that gives it away and the section of
docs/troubleshooting.md that explains it. Lesson 10 reproduces each one against the healthy run with the same seed.
"""
from __future__ import annotations

import contextlib
import functools
import io
import random
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import policy as _policy
from .kl import FixedKLController, kl_estimate
from .masking import masked_mean
from .train import TrainState, setup, train


@dataclass(frozen=True)
class Fault:
    """One deliberate bug: how it breaks a run's state, where people met it, and which logged metric flags it."""

    name: str
    apply: Callable[..., None]  # apply(state, **params): edits a freshly built TrainState in place
    reference: str  # the issue-tracker threads where people hit it
    metric: str  # the logged metric that moves first
    section: str  # anchor in docs/troubleshooting.md
    demo: dict[str, Any] = field(default_factory=dict)  # RunConfig overrides under which the lesson shows it


# ------------------------------------------------------------------ the faults

def _topk_logprob_mismatch(s: TrainState, top_k: int = 5) -> None:
    """Sample from the top-k tokens only, but score log-probs (policy and reference) on the full distribution."""
    real = s.sampler

    def sample_top_k(model, tokenizer, prompts, max_new_tokens, temperature=1.0, cfg_top_k=0, top_p=1.0, generator=None):
        return real(model, tokenizer, prompts, max_new_tokens, temperature, cfg_top_k or top_k, top_p, generator=generator)

    s.sampler = sample_top_k


def _mask_out_eos(ro: _policy.Rollout, eos_id: int) -> _policy.Rollout:
    """The completion mask with every EOS set to 0, as when EOS doubles as the pad token and padding is masked."""
    is_eos = ro.responses == eos_id  # (B, T)
    only_token = ro.completion_mask.sum(1, keepdim=True) == 1  # a bare EOS keeps its one token (else no token holds the score)
    ro.completion_mask = torch.where(is_eos & ~only_token, torch.zeros_like(ro.completion_mask), ro.completion_mask)
    return ro


def _pad_is_eos(s: TrainState) -> None:
    """pad = EOS: the EOS token is treated as padding, so it is masked out of every loss and never trained."""
    real = s.sampler

    def sample_eos_as_pad(model, tokenizer, *args, **kwargs):
        return _mask_out_eos(real(model, tokenizer, *args, **kwargs), tokenizer.eos_token_id)

    s.sampler = sample_eos_as_pad


def _no_position_ids(s: TrainState) -> None:
    """Score log-probs without position ids: a left-padded prompt is read at shifted positions.
    Sampling keeps the right positions (as generate() does), so rollout and scoring see different models."""
    s.forward = functools.partial(s.forward, position_ids=False)


def _dropout_on(s: TrainState, p: float = 0.1) -> None:
    """The policy left in train mode with dropout p (GPT-2's checkpoints ship with 0.1); the reference stays in eval."""
    for m in s.policy.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    s.policy.train()


def k1_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
            bias_correction: bool = True, aggregate: Callable = masked_mean) -> torch.Tensor:
    """The broken KL loss term: token mean of k1 = log π_θ − log ρ on tokens sampled from π_θ (zero-mean gradient)."""
    return aggregate(kl_estimate(logp_new, ref_logp, "k1"), mask)


def _k1_in_loss(s: TrainState) -> None:
    """--kl_in_loss with k1 instead of k3: the term's value is the KL, its gradient is zero in expectation."""
    s.kl_loss = k1_loss


def _lr_x30(s: TrainState, factor: float = 30.0) -> None:
    """The optimizer's learning rate multiplied by `factor` (a misplaced zero, or an SFT learning rate reused)."""
    for g in s.optimizer.param_groups:
        g["lr"] *= factor


def _reward_hacking(s: TrainState) -> None:
    """Nothing holds the policy near the reference: β = 0 and no entropy bonus, on a reward with a shortcut."""
    s.kl_ctl = FixedKLController(0.0)
    s.cfg = s.cfg.replace(ent_coef=0.0)


def _same_score_in_group(s: TrainState) -> None:
    """Every completion of a prompt gets the same score (its group's mean): a reward that cannot tell them apart."""
    real, k = s.reward_fn, s.cfg.num_generations

    def group_mean_reward(prompts, completions):
        scores = real(prompts, completions)
        return scores.view(-1, k).mean(1, keepdim=True).expand(-1, k).reshape(-1)  # (B,)

    s.reward_fn = group_mean_reward


# ------------------------------------------------------------------ the catalogue

# seconds per run; four passes of two minibatches (RunConfig's defaults until 2026-12-05), because the ratio,
# clipping and approx_kl the faults move read exactly 1, 0 and 0 when each rollout gets a single gradient step
TINY = dict(device="cpu", batch_size=8, max_new_tokens=8, steps_per_epoch=10, progress=False, learning_rate=3e-4,
            lr_decay="constant", ppo_epochs=4, num_minibatches=2, vf_coef=0.1)
GRPO_AS_TRL = dict(advantage="grpo", num_generations=4, kl_in_loss=True, learning_rate=1e-3, ppo_epochs=1,
                   num_minibatches=1)  # lesson 07's TRL-matched GRPO

FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("topk_logprob_mismatch", _topk_logprob_mismatch, "huggingface/trl#925, #1857 (TRL's FAQ: negative KL)",
          "objective/kl", "negative-kl", {}),
    Fault("pad_is_eos", _pad_is_eos, "huggingface/trl#1623", "rollout/completion_len",
          "eos-masked-out-of-the-loss", {}),
    Fault("no_position_ids", _no_position_ids, "huggingface/trl#469, #6800; OpenRLHF#217", "loss/kl",
          "kl-spike", GRPO_AS_TRL),
    Fault("dropout_on", _dropout_on, "huggingface/trl#925, #1005 (negative KL only with PEFT: LoRA dropout)",
          "policy/ratio", "policy-and-reference-disagree-at-step-1", {"learning_rate": 1e-8}),
    Fault("k1_in_loss", _k1_in_loss, "Schulman, 'Approximating KL Divergence'; huggingface/trl#2703", "objective/kl",
          "kl-runaway", {**GRPO_AS_TRL, "kl_coef": 2.0, "steps_per_epoch": 15}),
    Fault("lr_x30", _lr_x30, "verl#5953; huggingface/trl#3893", "policy/approx_kl", "update-too-large", {}),
    Fault("reward_hacking", _reward_hacking, "open-r1#373", "objective/scores_std", "reward-hacking",
          {"reward": "length", "max_new_tokens": 16, "learning_rate": 1e-3, "kl_coef": 0.3, "steps_per_epoch": 15}),
    Fault("grpo_same_scores", _same_score_in_group, "huggingface/trl#3452, #2703", "policy/grad_norm",
          "zero-advantages", {"advantage": "grpo", "num_generations": 4, "steps_per_epoch": 6}),
)}


def get(name: str) -> Fault:
    """The fault called `name`; a ValueError lists the known ones."""
    if name not in FAULTS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS)}; got {name!r}")
    return FAULTS[name]


def demo_config(name: str, seed: int = 0, **overrides: Any):
    """The tiny RunConfig under which fault `name` is shown (its healthy twin is the same config, no fault)."""
    from .config import RunConfig

    return RunConfig(**{**TINY, **get(name).demo, "seed": seed, **overrides})


def broken_setup(cfg, name: str, **params: Any) -> TrainState:
    """train.setup(cfg), then fault `name` applied to the state (with its optional `params`, e.g. top_k=5):
    `train(cfg, state=broken_setup(cfg, "lr_x30"))` runs the broken loop."""
    s = setup(cfg)
    get(name).apply(s, **params)
    return s


# ------------------------------------------------------------------ runs and measurements the lesson and tests share

@dataclass
class FaultRun:
    """One short run: per-step metrics, the trainer's warning lines, and the last step's samples."""

    history: list[dict[str, float]]
    warnings: list[str]
    samples: dict[str, list]
    state: TrainState | None = field(default=None, repr=False)  # the trained state, when run(keep_state=True)

    def column(self, key: str) -> list[float]:
        return [r.get(key) for r in self.history]


def run(cfg, fault: str | None = None, reward_fn: Callable | None = None, keep_state: bool = False,
        **params: Any) -> FaultRun:
    """train(cfg) with `fault` applied when given; nothing written to disk, the trainer's warnings captured.

    reward_fn: a reward to use instead of the one cfg.reward names (set before the fault, which may wrap it).
    keep_state: keep the trained TrainState (policy, reference, tokenizer) on the result, to inspect the policy."""
    err, last = io.StringIO(), {}
    with contextlib.redirect_stderr(err):
        state = setup(cfg)
        if reward_fn is not None:
            state.reward_fn = reward_fn
        if fault:
            get(fault).apply(state, **params)
        res = train(cfg, write_run=False, state=state, callback=lambda step, m, s: last.update(s))
    return FaultRun(res.history, res.warnings, last, state if keep_state else None)


AGGREGATES = {"mean": statistics.fmean, "max": max, "min": min, "first": lambda v: v[0], "last": lambda v: v[-1],
              "absmax": lambda v: max(abs(x) for x in v)}


def table(runs: dict[str, FaultRun], rows: dict[str, tuple[str | Callable, str, int, int | None]], digits: int = 3):
    """A healthy-vs-broken table: one column per run; each row (metric, how, first step, last step) aggregates
    metric over steps first..last (1-based, inclusive; None: to the end) with how in mean, max, min, first, last,
    absmax (the largest |value|). metric is a logged name, or a function of the run that returns one value per step
    (e.g. `k1_identity_gap`)."""
    import pandas as pd

    out = {}
    for name, r in runs.items():
        col = {}
        for label, (key, how, first, last) in rows.items():
            per_step = key(r) if callable(key) else r.column(key)
            vals = [x for x in per_step[first - 1:last] if x is not None]
            col[label] = round(float(AGGREGATES[how](vals)), digits) if vals else float("nan")
        out[name] = col
    return pd.DataFrame(out)


def expected_kl_loss_gradient(logits: torch.Tensor, ref_logits: torch.Tensor, estimator: str) -> torch.Tensor:
    """Exact E_{y~π}[∇_z kl(y)] for a categorical π = softmax(z): what a KL-in-the-loss term pulls on average.

    The sampled token y is held fixed inside the loss (as in training), so this is Σ_y π(y)·∇_z kl_est(y). For k1 it
    is Σ_y π(y)·∇ log π(y) = ∇ Σ_y π(y) = 0: k1 in the loss pulls nowhere. For k3 it is ∇_z KL(ρ‖π) ≠ 0."""
    z = logits.detach().clone().requires_grad_(True)
    logp, ref_logp = torch.log_softmax(z, -1), torch.log_softmax(ref_logits.detach(), -1)  # (V,)
    per_token = kl_estimate(logp, ref_logp, estimator)  # (V,): the loss if token y were the sample
    (torch.softmax(z, -1).detach() * per_token).sum().backward()
    return z.grad


def logged_kl(logits: torch.Tensor, ref_logits: torch.Tensor, top_k: int = 0) -> float:
    """Exact expectation of the logged k1, E_{y~q}[log π(y) − log ρ(y)], when y is drawn from q = top-k(π).

    top_k=0 samples from π itself and gives KL(π‖ρ) ≥ 0; any other sampler gives a number that is not a KL
    (negative when π has spread mass onto tokens the sampler never picks)."""
    logp, ref_logp = torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1)  # (V,)
    q = torch.softmax(_policy.filter_logits(logits, top_k=top_k), -1)  # (V,) the sampler
    return float((q * (logp - ref_logp)).sum())


def kl_at_first_token(state: TrainState, prompts: list[str], top_k: int = 5) -> dict[str, list[float]]:
    """Exactly, at the first completion token of each prompt, for a (trained) state's policy π and reference ρ:
    "logged k1" = E_{y~top-k(π)}[log π(y) − log ρ(y)], what the loop logs when it samples top-k, and
    "KL(π‖ρ)" = the same expectation with y ~ π. Which is larger says which way top-k moved the logged number."""
    lm = getattr(state.policy, "lm", state.policy)
    out: dict[str, list[float]] = {"logged k1": [], "KL(π‖ρ)": []}
    with torch.no_grad():
        for p in prompts:
            ids = state.tokenizer(p, return_tensors="pt", add_special_tokens=False)["input_ids"].to(state.device)
            z, z_ref = lm(ids).logits[0, -1].float(), state.ref(ids).logits[0, -1].float()  # (V,) each
            out["logged k1"].append(logged_kl(z, z_ref, top_k=top_k))
            out["KL(π‖ρ)"].append(logged_kl(z, z_ref))
    return out


def k1_identity_gap(r: FaultRun) -> list[float | None]:
    """Per step, loss/kl − objective/kl ÷ rollout/completion_len (None where loss/kl is not logged).

    objective/kl is the per-completion sum of k1 = log π − log ρ averaged over completions, and completion_len the mean
    number of tokens in the mask, so their ratio is the token mean of k1: when the KL loss term is k1 on the same
    tokens (`k1_in_loss`, one update per batch) the gap is 0 at every step; k3's token mean is another number."""
    out = []
    for row in r.history:
        lk, kl, n = row.get("loss/kl"), row.get("objective/kl"), row.get("rollout/completion_len")
        out.append(None if lk is None or lk != lk or not n else lk - kl / n)
    return out


def entropy_without_eos(metrics: dict[str, float]) -> float:
    """What policy/entropy (a token mean over the completion mask) would read once every EOS leaves the mask, if each
    EOS is drawn with entropy 0: the same sum over f fewer tokens per completion, H·L/(L − f), from one step's metrics
    with the EOS in the mask: H = policy/entropy, L = rollout/completion_len, f = rollout/eos_frac."""
    h, n, f = metrics["policy/entropy"], metrics["rollout/completion_len"], metrics["rollout/eos_frac"]
    return h * n / (n - f)


# ------------------------------------------------------------------ lesson 10's diagnosis exercise

HEALTHY = "healthy"  # the answer for a run with no fault
MYSTERY_STEPS = 6
MYSTERY_LABELS = ("A", "B", "C", "D", "E", "F")
# the exercise's runs before the shuffle. pad_is_eos comes with a healthy twin (same config and seed): next to it, and
# only there, its logs show it. The others run in their demo config, dropout_on at the usual learning rate.
_MYSTERY_CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("pad_is_eos", {}), (HEALTHY, {}), ("k1_in_loss", {}), ("no_position_ids", {}),
    ("dropout_on", {"learning_rate": 3e-4}), ("lr_x30", {}))
_MYSTERY_SALT = "rlhf_nb lesson 10: which run is which"


def _mystery_key() -> dict[str, tuple[str, Any]]:
    """label -> (fault or HEALTHY, its RunConfig), drawn by a seeded shuffle: which label holds which fault, and the
    seeds (3-99, none of the lesson's), are printed nowhere; the checker (course.checks.check_diagnosis) reads them."""
    rng = random.Random(_MYSTERY_SALT)
    seeds = rng.sample(range(3, 100), len(_MYSTERY_CASES) - 1)
    seeds = [seeds[0]] + seeds  # the healthy twin shares pad_is_eos's seed
    order = list(range(len(_MYSTERY_CASES)))
    rng.shuffle(order)
    key = {}
    for label, i in zip(MYSTERY_LABELS, order):
        name, overrides = _MYSTERY_CASES[i]
        demo = "pad_is_eos" if name == HEALTHY else name
        key[label] = (name, demo_config(demo, seed=seeds[i], steps_per_epoch=MYSTERY_STEPS, **overrides))
    return key


def mystery_runs() -> dict[str, FaultRun]:
    """The runs of the diagnosis exercise, by label: metrics and samples only (the trainer's warnings would name the
    fault; that is the exercise)."""
    out = {}
    for label, (name, cfg) in _mystery_key().items():
        r = run(cfg, None if name == HEALTHY else name)
        out[label] = FaultRun(r.history, [], r.samples)
    return out


def twin(label: str, runs: dict[str, FaultRun]) -> str | None:
    """The other run that sampled the same completions at step 1 (same config and seed: the policy is still the
    reference, so objective/scores, its std and rollout/eos_frac agree to the last digit), or None."""
    keys = ("objective/scores", "objective/scores_std", "rollout/eos_frac")
    mine = runs[label].history[0]
    for other, r in runs.items():
        first = r.history[0]
        if other != label and first["objective/kl"] == mine["objective/kl"] == 0 and \
                all(first[k] == mine[k] for k in keys):
            return other
    return None


def diagnose(runs: dict[str, FaultRun]) -> dict[str, str]:
    """A careful reader's diagnosis of each run from its logged metrics alone (the exercise's solution), in this
    order: no gradient; step 1 not exact; a k3 spike; an update too large; a KL loss that is k1; EOS out of the mask
    (against a twin); else healthy. The thresholds are rlhf_nb.diagnostics' ones."""
    from . import diagnostics as d

    out = {}
    for label, r in runs.items():
        first = r.history[0]
        loss_kl = [x for x in r.column("loss/kl") if x is not None and x == x]
        gaps = [g for g in k1_identity_gap(r) if g is not None]
        mate = twin(label, runs)
        if all(g <= d.GRAD_ZERO for g in r.column("policy/grad_norm")):
            out[label] = "grpo_same_scores"
        elif abs(first["objective/kl"]) > d.FIRST_STEP_KL:
            out[label] = "dropout_on"
        elif loss_kl and max(loss_kl) > d.KL_LOSS_MAX:
            out[label] = "no_position_ids"
        elif first["policy/approx_kl"] > d.APPROX_KL_MAX:
            out[label] = "lr_x30"
        elif gaps and any(loss_kl) and max(abs(g) for g in gaps) < 1e-5:
            out[label] = "k1_in_loss"
        elif mate and first["rollout/completion_len"] < runs[mate].history[0]["rollout/completion_len"]:
            out[label] = "pad_is_eos"
        else:
            out[label] = HEALTHY
    return out


def clue(fault: str, label: str, runs: dict[str, FaultRun]) -> str:
    """What in run `label`'s logged metrics shows `fault` (or that it is healthy), with the run's own numbers."""
    r = runs[label]
    first, col = r.history[0], r.column
    if fault == "grpo_same_scores":
        return "policy/grad_norm is exactly 0 at every step: every advantage is 0"
    if fault == "dropout_on":
        return (f"objective/kl = {first['objective/kl']:.3f} and policy/ratio = {first['policy/ratio']:.3f} at step 1, "
                "before any update, where a healthy run reads exactly 0 and 1")
    if fault == "no_position_ids":
        lk = col("loss/kl")
        k = max(range(len(lk)), key=lambda i: lk[i])
        return (f"loss/kl (k3) jumps to {lk[k]:.4g} at step {k + 1} (healthy: below ~0.1), while objective/kl "
                f"reads {col('objective/kl')[k]:.3f}")
    if fault == "lr_x30":
        return (f"policy/approx_kl = {first['policy/approx_kl']:.3g} at step 1 (healthy: below ~0.05), "
                f"policy/clipfrac {first['policy/clipfrac']:.2f}")
    if fault == "k1_in_loss":
        row = r.history[-1]
        why = (f"loss/kl is objective/kl ÷ rollout/completion_len at every step (step {row['step']}: "
               f"{row['loss/kl']:.4f} = {row['objective/kl']:.4f} / {row['rollout/completion_len']:.3f}): the KL "
               "loss term is the logged k1 itself")
        lk = col("loss/kl")
        k = min(range(len(lk)), key=lambda i: lk[i])
        return why + (f", and it reads {lk[k]:.3f} at step {k + 1}, which k3 ≥ 0 never can" if lk[k] < 0 else "")
    mate = twin(label, runs)
    if fault == "pad_is_eos":
        if mate is None:
            return f"look at {FAULTS[fault].metric} and policy/entropy against a healthy run with the same seed"
        h, m = first, runs[mate].history[0]
        fewer = m["rollout/completion_len"] - h["rollout/completion_len"]
        return (f"it sampled what run {mate} sampled at step 1 (objective/scores {h['objective/scores']:.3f}, "
                f"rollout/eos_frac {h['rollout/eos_frac']:.3f} in both) but has {fewer:.3f} "
                f"fewer tokens in the loss (rollout/completion_len {h['rollout/completion_len']:.3f} against "
                f"{m['rollout/completion_len']:.3f}) and a higher policy/entropy ({h['policy/entropy']:.3f} against "
                f"{m['policy/entropy']:.3f}; H·L/(L − f) = {entropy_without_eos(m):.3f}): "
                "every EOS, a token of entropy ≈ 0, left the mask")
    if fault == HEALTHY:
        lk = [x for x in col("loss/kl") if x is not None and x == x]
        why = (f"objective/kl exactly 0 at step 1, policy/approx_kl at most {max(col('policy/approx_kl')):.3f}, "
               "policy/grad_norm above 0" + (f", loss/kl at most {max(lk):.3f}" if lk else ""))
        return why + (f"; run {mate} sampled the same completions at step 1 and is the one with tokens missing"
                      if mate else "")
    return f"look at {FAULTS[fault].metric}"
