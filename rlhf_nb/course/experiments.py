"""Lesson 06's experiments as plain functions: one short RLHF run per (kl_coef, batch_size), β sweeps over seeds, their
seed bands and their place against the KL-regularised optimum, sample tables, runs with a refreshed reference. At the end, lesson 00's stored smoke
seeds and its KL replay, and lesson 04's table of the adaptive controller's runs.

The interactive panel (rlhf_nb.course.widgets) only moves sliders and calls `run_experiment`; everything here runs and is
tested without a kernel or a browser.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..config import RunConfig
from ..policy import sample

# a few fixed prompts whose completions we read before and after training
PROBE_PROMPTS = ("The acting was", "I thought the plot", "This movie is", "The ending felt")
PROBE_SEED = 1234  # its own generator: probing never shifts the training run's random streams
SUMMARY_KEYS = ("objective/scores", "objective/kl", "objective/rlhf_reward", "policy/entropy")
# lesson 06's panel: 100 steps of 32 prompts at RunConfig's defaults (lr 1e-3 decaying linearly, one gradient step a
# rollout) sketch the β trade-off in about 13 CPU seconds a run, short of the optimum (the stored sweep, CAPSTONE_RUN,
# gets there); run_sweep's default for quick sweeps
LESSON_RUN = {"batch_size": 32, "steps": 100, "learning_rate": 1e-3}
SWEEP_BETAS = (0.0, 0.02, 0.05, 0.2)
SWEEP_SEEDS = (0, 1, 2)
# lesson 06's capstone sweep: long enough to reach the optimum (J/J* 0.83-0.92 for every β > 0), so too long to run
# live in the lesson (about a CPU minute a run; `make capstone` runs them all and writes CAPSTONE_PATH). One gradient
# step per rollout at 1e-3, decaying linearly: fast progress early, small steps late; vf_coef 1.0 lets the shared
# trunk learn features for the critic (lesson 06 compares 0.1). At 140-160 steps β = 0.2 ended at J/J* 0.80 (screened), at 200 0.83
CAPSTONE_RUN = {"batch_size": 64, "steps": 200, "learning_rate": 1e-3, "lr_decay": "linear", "ppo_epochs": 1,
                "num_minibatches": 1, "vf_coef": 1.0}
# the same β = 0.05 runs with one thing changed: what the critic section and its baselines compare
CAPSTONE_VARIANTS = {"vf_coef 0.1": {"vf_coef": 0.1},
                     "rloo, 16 prompts × 4": {"advantage": "rloo", "batch_size": 16, "num_generations": 4},
                     "grpo, 16 prompts × 4": {"advantage": "grpo", "batch_size": 16, "num_generations": 4}}
CAPSTONE_VARIANT_BETA = 0.05
CAPSTONE_PATH = Path(__file__).resolve().parents[1] / "assets" / "capstone-sweep.json"
# the per-step metrics a stored run keeps (the lesson's plots and the diagnostics' inputs; not wall-clock times)
STORED_KEYS = ("step", "objective/scores", "objective/scores_std", "objective/kl", "objective/rlhf_reward",
               "policy/entropy", "policy/approx_kl", "policy/clipfrac", "value/explained_variance",
               "rollout/completion_len")


@dataclass
class ExperimentResult:
    """One short run: its settings, per-step metrics, probe samples before/after, and end-of-run averages."""

    kl_coef: float
    batch_size: int
    steps: int
    seed: int
    history: list[dict[str, float]]
    samples_before: list[dict[str, Any]]
    samples_after: list[dict[str, Any]]
    final: dict[str, float] = field(default_factory=dict)  # SUMMARY_KEYS averaged over the last quarter of steps
    state: Any = field(default=None, repr=False, compare=False)  # the trained TrainState, kept only when asked
    warnings: list[str] = field(default_factory=list)  # the diagnostics' lines the run printed (rlhf_nb.diagnostics)
    settings: dict[str, Any] = field(default_factory=dict)  # the RunConfig overrides beyond β, batch, steps, seed
    cpu_s: float = 0.0  # process CPU seconds of the run (set-up and probes included)

    @property
    def final_reward(self) -> float:
        return self.final["objective/scores"]

    @property
    def final_kl(self) -> float:
        return self.final["objective/kl"]

    def summary(self, digits: int = 3) -> dict[str, float]:
        """Settings and end-of-run averages, rounded for printing."""
        return {"kl_coef": round(self.kl_coef, 4), "batch_size": self.batch_size, "steps": self.steps,
                **{k: round(v, digits) for k, v in self.final.items()}}


def probe_samples(state, prompts: tuple[str, ...] = PROBE_PROMPTS, seed: int = PROBE_SEED) -> list[dict[str, Any]]:
    """Sample one completion per probe prompt from the current policy and score it with the run's reward."""
    cfg = state.cfg
    g = torch.Generator(device=state.device)
    g.manual_seed(seed)
    ro = sample(state.policy, state.tokenizer, list(prompts), cfg.max_new_tokens, cfg.temperature, cfg.top_k,
                cfg.top_p, generator=g)
    scores = state.reward_fn(ro.prompts, ro.completions).float().tolist()
    return [{"prompt": p, "completion": c, "score": s} for p, c, s in zip(ro.prompts, ro.completions, scores)]


def final_averages(history: list[dict[str, float]], keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, float]:
    """Mean of each key over the last quarter of steps (at least one): one step's batch is too noisy to compare runs."""
    tail = history[-max(1, len(history) // 4):]
    return {k: sum(r[k] for r in tail) / len(tail) for k in keys}


def run_experiment(kl_coef: float, batch_size: int, steps: int = 10, seed: int = 0,
                   callback: Callable[[int, dict, dict], None] | None = None, keep_state: bool = False,
                   **overrides: Any) -> ExperimentResult:
    """Train a fresh policy for `steps` PPO steps with this KL coefficient and batch size; nothing written to disk.

    Every value goes through RunConfig first, so a bad one raises ConfigError naming its flag before torch sees it.
    `overrides` are any other RunConfig fields (e.g. reward="length", max_new_tokens=8)."""
    import time

    from ..train import setup, train  # imported here so `import rlhf_nb.course.experiments` stays light

    t0 = time.process_time()
    cfg = RunConfig(kl_coef=kl_coef, batch_size=batch_size, steps_per_epoch=steps, epochs=1, seed=seed,
                    **{"progress": False, "device": "cpu", **overrides})
    state = setup(cfg)
    before = probe_samples(state)
    res = train(cfg, callback=callback, write_run=False, state=state)
    after = probe_samples(res.state)
    return ExperimentResult(float(kl_coef), int(batch_size), int(steps), int(seed), res.history, before, after,
                            final_averages(res.history), res.state if keep_state else None, res.warnings,
                            dict(overrides), time.process_time() - t0)


def run_settings(kl_coef: float, seed: int, settings: dict[str, Any], keep_state: bool = False) -> ExperimentResult:
    """run_experiment with its batch size and steps taken from a settings dict like CAPSTONE_RUN."""
    rest = {k: v for k, v in settings.items() if k not in ("batch_size", "steps")}
    return run_experiment(kl_coef, settings["batch_size"], steps=settings["steps"], seed=seed, keep_state=keep_state,
                          **rest)


def run_capstone(kl_coef: float, seed: int, variant: str | None = None, keep_state: bool = False) -> ExperimentResult:
    """One run of lesson 06's stored sweep (CAPSTONE_RUN), or of one of its CAPSTONE_VARIANTS, exactly as
    `make capstone` runs it."""
    return run_settings(kl_coef, seed, {**CAPSTONE_RUN, **(CAPSTONE_VARIANTS[variant] if variant else {})}, keep_state)


def warning_kinds(r: ExperimentResult) -> list[str]:
    """The kinds of the diagnostics' warnings a run printed, in order (e.g. ["kl_runaway"])."""
    return [line.split("[", 1)[1].split("]", 1)[0] for line in r.warnings]


def history_columns(history: list[dict[str, float]], digits: int = 6,
                    keys: Sequence[str] = STORED_KEYS) -> dict[str, list]:
    """A run's per-step metrics as one column per metric of `keys` it has, floats rounded to `digits` (nan stays nan):
    how a run is stored."""
    kept = [k for k in keys if k in history[0]] if history else []
    return {k: [round(h[k], digits) if isinstance(h[k], float) else h[k] for h in history] for k in kept}


def history_rows(cols: dict[str, list]) -> list[dict[str, float]]:
    """The inverse of history_columns: one dict per step."""
    return [dict(zip(cols, row)) for row in zip(*cols.values())]


def result_to_dict(r: ExperimentResult, digits: int = 6, keys: Sequence[str] = STORED_KEYS) -> dict[str, Any]:
    """A JSON-ready copy of a result: its history as one column per metric of `keys`, rounded to `digits`."""
    return {"kl_coef": r.kl_coef, "batch_size": r.batch_size, "steps": r.steps, "seed": r.seed,
            "settings": r.settings, "cpu_s": round(r.cpu_s, 1), "final": r.final, "warnings": r.warnings,
            "samples_before": r.samples_before, "samples_after": r.samples_after,
            "history": history_columns(r.history, digits, keys)}


def result_from_dict(d: dict[str, Any]) -> ExperimentResult:
    """The inverse of result_to_dict (no trained state: a stored run has only its numbers and samples)."""
    return ExperimentResult(d["kl_coef"], d["batch_size"], d["steps"], d["seed"], history_rows(d["history"]),
                            d["samples_before"], d["samples_after"], d["final"], None, d["warnings"], d["settings"],
                            d["cpu_s"])


def largest_difference(live: list[dict[str, float]], stored: list[dict[str, float]], digits: int = 6,
                       keys: Sequence[str] = STORED_KEYS) -> float:
    """The largest difference between two runs' per-step metrics, over every metric the stored run kept (`live`
    rounded as stored); 0.0 when the live run reproduces the stored one. nan matches nan; nan against a number is an
    infinite difference. Raises ValueError when they did not run the same steps."""
    a, b = history_rows(history_columns(live, digits, keys)), stored
    if [h["step"] for h in a] != [h["step"] for h in b]:
        raise ValueError(f"different steps: {len(a)} live, {len(b)} stored")
    out = 0.0
    for x, y in zip(a, b):
        for k in y:
            if k == "step" or (math.isnan(x[k]) and math.isnan(y[k])):
                continue
            out = max(out, math.inf if math.isnan(x[k]) or math.isnan(y[k]) else abs(x[k] - y[k]))
    return out


def same_run(live: ExperimentResult, stored: ExperimentResult, digits: int = 6) -> float:
    """largest_difference of two runs' histories: 0.0 when the live run reproduces the stored one."""
    return largest_difference(live.history, stored.history, digits)


def load_capstone(path: str | Path = CAPSTONE_PATH) -> dict[str, Any]:
    """Lesson 06's stored runs (written by `make capstone`): {"sweep": {β: [result per seed]}, "variants":
    {label: [result per seed]}, "refresh": {"fixed": [RefreshResult per seed], "refreshed": [… per seed]},
    "settings": CAPSTONE_RUN as run, "refresh_settings": REFRESH_RUN as run, "cpu_s": …, "command": …}."""
    raw = json.loads(Path(path).read_text())
    return {**raw, "sweep": {float(b): [result_from_dict(d) for d in runs] for b, runs in raw["sweep"].items()},
            "variants": {k: [result_from_dict(d) for d in runs] for k, runs in raw["variants"].items()},
            "refresh": {k: [refresh_from_dict(d) for d in runs] for k, runs in raw["refresh"].items()}}



def samples_table(before: list[dict], after: list[dict], digits: int = 2):
    """A pandas DataFrame: one row per probe prompt, its completion and score before and after training."""
    import pandas as pd

    rows = [{"prompt": b["prompt"], "before": b["completion"], "score before": round(b["score"], digits),
             "after": a["completion"], "score after": round(a["score"], digits)} for b, a in zip(before, after)]
    return pd.DataFrame(rows)


def samples_html(before: list[dict], after: list[dict], digits: int = 2) -> str:
    """The same table as samples_table, as escaped HTML for a widget."""
    pad = "style='padding:2px 10px;text-align:left'"
    head = "".join(f"<th {pad}>{h}</th>" for h in ("prompt", "before", "score", "after", "score"))
    body = "".join(
        f"<tr><td {pad}>{html.escape(b['prompt'])}</td><td {pad}>{html.escape(b['completion'])}</td>"
        f"<td {pad}>{b['score']:+.{digits}f}</td><td {pad}>{html.escape(a['completion'])}</td>"
        f"<td {pad}>{a['score']:+.{digits}f}</td></tr>" for b, a in zip(before, after))
    return f"<table class='rlhf-samples'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def run_sweep(betas=SWEEP_BETAS, seeds=SWEEP_SEEDS, batch_size: int = LESSON_RUN["batch_size"],
              steps: int = LESSON_RUN["steps"], **overrides: Any) -> dict[float, list[ExperimentResult]]:
    """One run per (β, seed), all other settings equal: {β: [result per seed]}."""
    overrides = {"learning_rate": LESSON_RUN["learning_rate"], **overrides}
    return {float(b): [run_experiment(b, batch_size, steps=steps, seed=s, **overrides) for s in seeds] for b in betas}


def band(results: list[ExperimentResult], key: str) -> dict[str, list[float]]:
    """Across seeds, step by step: the mean and the min–max band of one metric."""
    n = min(len(r.history) for r in results)
    cols = [[float(r.history[i][key]) for r in results] for i in range(n)]
    return {"step": [results[0].history[i]["step"] for i in range(n)], "mean": [sum(c) / len(c) for c in cols],
            "lo": [min(c) for c in cols], "hi": [max(c) for c in cols]}


def separated_from(a: list[ExperimentResult], b: list[ExperimentResult], key: str) -> int | None:
    """The first step from which the min–max bands of a and b never overlap again, one staying on the same side of
    the other; None if they overlap (or swap sides) at the last step.

    Conclusions from a sweep are drawn only there: before it, a seed of one setting can beat a seed of the other."""
    ba, bb = band(a, key), band(b, key)
    first, side = None, 0
    for step, lo_a, hi_a, lo_b, hi_b in zip(ba["step"], ba["lo"], ba["hi"], bb["lo"], bb["hi"]):
        now = 1 if lo_a > hi_b else -1 if hi_a < lo_b else 0  # a above b, a below b, or overlapping
        if now == 0 or now != side:
            first = step if now else None
        side = now
    return first


def regularised_table(runs: dict[str, tuple[float, list[ExperimentResult]]], optimum: dict[float, dict]) -> list[dict]:
    """One row per run: its last-quarter score and KL, J = score − β·KL, and J/J* against the optimum at its β.

    runs: {label: (β, results)}; optimum: {β: {"J_star", …}} from rlhf_nb.optimum.frontier."""
    from ..optimum import objective

    rows = []
    for label, (beta, results) in runs.items():
        j_star = optimum[float(beta)]["J_star"]
        for r in results:
            j = objective(r.final_reward, r.final_kl, beta)
            rows.append({"run": label, "beta": beta, "seed": r.seed, "score": r.final_reward, "kl": r.final_kl,
                         "J": j, "J_star": j_star, "J/J*": j / j_star})
    return rows


# lesson 06, "Why the reference stays frozen": a run whose reference is refreshed (ρ ← π_θ every `every` steps) next
# to its fixed-reference twin. Small batches keep six runs (3 seeds × 2) to about 25 CPU s in the lesson; a constant
# learning rate, because a short run whose rate decays to 0 barely moves in its last intervals
REFRESH_RUN = {"kl_coef": 0.2, "batch_size": 16, "steps": 50, "learning_rate": 1e-3, "lr_decay": "constant"}
REFRESH_EVERY = 10
REFRESH_SEEDS = (0, 1, 2)
KL_PROBE_SAMPLES = 128  # completions per measurement of KL(π‖π_0), on their own generator


def refresh_reference(state, every: int) -> Callable[[int, dict, dict], None]:
    """A `train` callback that sets ρ ← π_θ after every `every`-th step: it copies the policy's language-model
    weights into `state.ref`. From then on the KL penalty, and the logged objective/kl, measure the distance from the
    policy of the last refresh, no longer from the model the run started from."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1 (steps between refreshes), got {every!r}")

    def refresh(step: int, metrics: dict, samples: dict) -> None:
        if step % every == 0:
            state.ref.load_state_dict(state.policy.lm.state_dict())

    return refresh


@torch.no_grad()
def kl_to(state, model, n: int = KL_PROBE_SAMPLES, seed: int = PROBE_SEED) -> float:
    """KL(π_θ‖model) in nats per completion: the mean k1 over n fresh completions of the current policy
    (`policy.sample_with_kl`), drawn on their own generator so that measuring never shifts the run's random streams."""
    from ..corpus import get_prompts
    from ..policy import sample_with_kl

    g = torch.Generator(device=state.device).manual_seed(seed)
    _, kl = sample_with_kl(state.policy, model, state.tokenizer, get_prompts(n, seed=seed), state.cfg.max_new_tokens,
                           state.cfg.temperature, generator=g)
    return float(kl.mean())


@dataclass
class RefreshResult:
    """One run of `run_refresh`: the trainer's metrics (objective/kl: the distance from the reference in use) and
    KL(π_θ‖π_0), the distance from the model the run started from, measured at some steps."""

    every: int | None  # steps between refreshes; None: a fixed reference
    seed: int
    history: list[dict[str, float]]
    kl_to_original: dict[int, float]  # step -> nats per completion, measured on KL_PROBE_SAMPLES samples
    warnings: list[str] = field(default_factory=list)
    cpu_s: float = 0.0


def refresh_to_dict(r: RefreshResult, digits: int = 6) -> dict[str, Any]:
    """A JSON-ready copy of a reference-refresh run, rounded as result_to_dict rounds."""
    return {"every": r.every, "seed": r.seed, "cpu_s": round(r.cpu_s, 1), "warnings": r.warnings,
            "kl_to_original": {str(step): round(kl, digits) for step, kl in r.kl_to_original.items()},
            "history": history_columns(r.history, digits)}


def refresh_from_dict(d: dict[str, Any]) -> RefreshResult:
    return RefreshResult(d["every"], d["seed"], history_rows(d["history"]),
                         {int(step): kl for step, kl in d["kl_to_original"].items()}, d["warnings"], d["cpu_s"])


def same_refresh(live: RefreshResult, stored: RefreshResult, digits: int = 6) -> float:
    """The largest difference between two refresh runs, over every stored metric and step and the KL to π_0."""
    if live.every != stored.every or sorted(live.kl_to_original) != sorted(stored.kl_to_original):
        raise ValueError(f"different runs: refreshed every {live.every} and {stored.every} steps, KL measured after "
                         f"steps {sorted(live.kl_to_original)} and {sorted(stored.kl_to_original)}")
    kl = max(abs(round(v, digits) - stored.kl_to_original[step]) for step, v in live.kl_to_original.items())
    return max(kl, largest_difference(live.history, stored.history, digits))


def run_refresh(every: int | None, seed: int, measure_at: tuple[int, ...] | None = None, n: int = KL_PROBE_SAMPLES,
                **overrides: Any) -> RefreshResult:
    """Train a fresh policy at REFRESH_RUN (with `overrides`: kl_coef, batch_size, steps or any RunConfig field) whose
    reference is refreshed every `every` steps, or stays fixed (every=None), and measure its KL to a frozen copy of
    the initial model after the steps in `measure_at` (default: every REFRESH_EVERY steps and the last). With the same
    seed it is the fixed-reference run, step for step, up to the first refresh."""
    import time

    from ..policy import make_reference
    from ..train import setup, train

    t0 = time.process_time()
    settings = {**REFRESH_RUN, **overrides}
    steps = settings.pop("steps")
    cfg = RunConfig(steps_per_epoch=steps, epochs=1, seed=seed, **{"progress": False, "device": "cpu", **settings})
    state = setup(cfg)
    original = make_reference(state.ref)  # π_0, kept frozen whatever happens to state.ref
    when = set(measure_at) if measure_at is not None else {*range(REFRESH_EVERY, steps + 1, REFRESH_EVERY), steps}
    refresh = refresh_reference(state, every) if every else None
    kl = {}

    def callback(step: int, metrics: dict, samples: dict) -> None:
        if step in when:
            kl[step] = kl_to(state, original, n)
        if refresh:
            refresh(step, metrics, samples)

    res = train(cfg, callback=callback, write_run=False, state=state)
    return RefreshResult(every, seed, res.history, kl, res.warnings, time.process_time() - t0)


def refresh_table(results: list[RefreshResult]) -> list[dict[str, Any]]:
    """One row per run: its reference, seed, the logged KL and the score averaged over the last quarter of steps, and
    the KL to the original model measured after the last step."""
    rows = []
    for r in results:
        last = max(r.kl_to_original)
        avg = final_averages(r.history, ("objective/kl", "objective/scores"))
        rows.append({"reference": f"refreshed every {r.every} steps" if r.every else "fixed", "seed": r.seed,
                     "logged KL (to the reference in use)": avg["objective/kl"],
                     f"KL to π_0 after step {last}": r.kl_to_original[last], "score": avg["objective/scores"],
                     "warnings": len(r.warnings)})
    return rows


@torch.no_grad()
def _value_data(state, n: int, seed: int):
    """n rollouts of the state's policy: trunk features where each token is chosen, value head, Monte-Carlo returns."""
    from ..corpus import get_prompts
    from ..kl import kl_k1
    from ..policy import forward_tokens, position_ids_from_mask

    s, g = state, torch.Generator().manual_seed(seed)
    ro = sample(s.policy, s.tokenizer, get_prompts(n, seed=seed), s.cfg.max_new_tokens, s.cfg.temperature,
                s.cfg.top_k, s.cfg.top_p, generator=g)
    ids, attn, P, mask = ro.query_responses, ro.attention_mask, ro.context_length, ro.completion_mask.float()
    hidden = s.policy.lm(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn),
                         output_hidden_states=True).hidden_states[-1][:, P - 1:-1]  # (B, T, H): what V(s_t) reads
    logp, _, _ = forward_tokens(s.policy.lm, ids, attn, P, s.cfg.temperature)
    ref_logp, _, _ = forward_tokens(s.ref, ids, attn, P, s.cfg.temperature)
    kl_to_go = (kl_k1(logp, ref_logp) * mask).flip(1).cumsum(1).flip(1)  # Σ_{u ≥ t} kl_u
    scores = s.reward_fn(ro.prompts, ro.completions).float()
    returns = (scores[:, None] - s.kl_ctl.value * kl_to_go) * mask  # R_t with γ = λ = 1: what V(s_t) estimates
    return hidden, s.policy.value_head(hidden) * mask, returns, mask


def value_probe(state, n: int = 256, ridge: float = 0.1) -> dict[str, float]:
    """Explained variance, on n fresh rollouts, of the value head and of the best linear head on the same trunk.

    The best head is a ridge regression fit on n other rollouts: if it cannot explain the returns, no training of the
    value head can; if it can and the head does not, the head is lagging behind its features."""
    from ..ppo import explained_variance

    h_fit, _, r_fit, m_fit = _value_data(state, n, seed=101)
    h, v, r, m = _value_data(state, n, seed=202)
    sel = m_fit.bool()
    X = torch.cat([h_fit[sel], torch.ones(int(sel.sum()), 1)], 1).double()
    w = torch.linalg.solve(X.T @ X + ridge * torch.eye(X.shape[1], dtype=torch.float64), X.T @ r_fit[sel].double())
    best = (torch.cat([h, torch.ones(*h.shape[:2], 1)], -1).double() @ w).float()
    return {"value head": explained_variance(v, r, m), "best linear head": explained_variance(best, r, m)}


# ------------------------------------------------------------------ lesson 00: the smoke run over seeds

# the smoke notebook's run at its default parameters, once per seed: written by `python -m rlhf_nb.tools.smoke_seeds`,
# so that lesson 00 shows the seed spread of its run without training two more policies live (a run is ~20 CPU s)
SMOKE_SEEDS_PATH = Path(__file__).resolve().parents[1] / "assets" / "smoke-seeds.json"
SMOKE_PARAMS = ("kl_coef", "batch_size", "steps", "max_new_tokens", "lr_warmup_steps", "reward")  # what shapes a run


def run_smoke(params: dict[str, Any], seed: int) -> ExperimentResult:
    """The smoke notebook's training run (its RunConfig, nothing written) for these parameters and this seed."""
    rest = {k: params[k] for k in ("max_new_tokens", "lr_warmup_steps", "reward")}
    return run_experiment(params["kl_coef"], params["batch_size"], steps=params["steps"], seed=seed, **rest)


def history_difference(live: list[dict[str, float]], stored: ExperimentResult, digits: int = 6) -> float:
    """same_run for a plain history (e.g. train(...).history): the largest difference from a stored run's metrics."""
    return largest_difference(live, stored.history, digits)


def smoke_seed_runs(params: dict[str, Any], history: list[dict[str, float]], seed: int,
                    path: str | Path = SMOKE_SEEDS_PATH) -> tuple[list[ExperimentResult], str]:
    """The stored smoke runs (one per seed) when `params` are the ones they ran at, and one line on how this run
    (`history` at `seed`) compares with its stored twin; ([], why) when the parameters differ."""
    raw = json.loads(Path(path).read_text())
    wanted = {k: params[k] for k in SMOKE_PARAMS}
    if raw["params"] != wanted:
        changed = ", ".join(f"{k} {wanted[k]!r} (stored: {raw['params'][k]!r})" for k in SMOKE_PARAMS
                            if wanted[k] != raw["params"][k])
        return [], f"no stored seeds to compare: they ran at the notebook's defaults, and this run changed {changed}"
    runs = [result_from_dict(d) for d in raw["runs"]]
    twin = next((r for r in runs if r.seed == seed), None)
    seeds = ", ".join(str(r.seed) for r in runs)
    if twin is None:
        return runs, f"stored seeds {seeds} ({Path(path).name}); seed {seed} is not among them"
    diff = history_difference(history, twin)
    same = "the same run, step for step" if diff == 0 else f"NOT the same run: metrics differ by up to {diff:.3g}"
    return runs, f"stored seeds {seeds} ({Path(path).name}); this run against the stored seed {seed}: {same}"


def seeds_table(results: list[ExperimentResult], last: int = 5):
    """One row per seed: the score at step 1, score and KL averaged over the last `last` steps, the lowest and the
    largest KL of one step (and its step), the entropy's range, and how many diagnostics warnings the run printed."""
    import pandas as pd

    rows = []
    for r in results:
        h, tail = r.history, r.history[-last:]
        big = max(h, key=lambda x: x["objective/kl"])
        ent = [x["policy/entropy"] for x in h]
        rows.append({"seed": r.seed, "score at step 1": h[0]["objective/scores"],
                     f"score, last {last}": sum(x["objective/scores"] for x in tail) / len(tail),
                     f"KL, last {last}": sum(x["objective/kl"] for x in tail) / len(tail),
                     "lowest KL": min(x["objective/kl"] for x in h), "largest KL": big["objective/kl"],
                     "at step": big["step"],
                     "entropy min": min(ent), "entropy max": max(ent), "warnings": len(r.warnings)})
    return pd.DataFrame(rows).set_index("seed")


def largest_kl_step(results: list[ExperimentResult], first: int) -> tuple[int, int]:
    """(seed, step) of the largest one-step KL among the first `first` steps of these runs."""
    r, h = max(((r, h) for r in results for h in r.history[:first]), key=lambda rh: rh[1]["objective/kl"])
    return r.seed, int(h["step"])


def replay_step_kl(cfg: RunConfig, step: int, top: int = 3) -> dict[str, Any]:
    """Replay a run (`cfg`, nothing written) up to `step` and return that step's per-completion KL: the batch mean
    (the logged objective/kl), the `top` completions with the largest Σ_t log π/ρ, and the mean without them.

    The rollout is the one ppo_step drew (its sampler is wrapped to keep it); the log-ratios are scored with a copy
    of the policy taken before that step's update, as ppo_step scores them."""
    import copy

    from ..kl import kl_k1
    from ..policy import forward_tokens
    from ..train import ppo_step, setup

    state = setup(cfg)
    for _ in range(step - 1):
        ppo_step(state)
    before, kept = copy.deepcopy(state.policy), {}

    def keep(*args, **kwargs):
        kept["ro"] = sample(*args, **kwargs)
        return kept["ro"]

    state.sampler = keep
    metrics, _ = ppo_step(state)
    ro = kept["ro"]
    ids, attn, P, mask = ro.query_responses, ro.attention_mask, ro.context_length, ro.completion_mask.float()
    with torch.no_grad():
        logp = forward_tokens(before, ids, attn, P, cfg.temperature)[0]
        ref_logp = forward_tokens(state.ref, ids, attn, P, cfg.temperature)[0]
    seq_kl = (kl_k1(logp, ref_logp) * mask).sum(1)  # (B,)
    order = seq_kl.argsort(descending=True).tolist()
    rest = order[top:]
    return {"step": step, "logged": metrics["objective/kl"], "mean": float(seq_kl.mean()),
            "mean without top": float(seq_kl[rest].mean()) if rest else float("nan"),
            "top": [{"prompt": ro.prompts[i], "completion": ro.completions[i], "KL": float(seq_kl[i]),
                     "tokens": int(mask[i].sum())} for i in order[:top]]}


# ------------------------------------------------------------------ lesson 04: the adaptive KL controller in a real run

def controller_table(histories: dict[Any, list[dict[str, float]]], target: float, last: int = 20):
    """One row per run (label: its history): β at the first step, its lowest value and step, β at the last step,
    the first step whose KL was above the target and how many were, and the KL averaged over the last `last` steps."""
    import pandas as pd

    rows = []
    for label, h in histories.items():
        low = min(h, key=lambda r: r["objective/kl_coef"])
        tail = h[-last:]
        rows.append({"run": label, "β at step 1": h[0]["objective/kl_coef"], "lowest β": low["objective/kl_coef"],
                     "at step": low["step"], f"β at step {h[-1]['step']}": h[-1]["objective/kl_coef"],
                     "first step KL > target": next((r["step"] for r in h if r["objective/kl"] > target), None),
                     "steps with KL > target": sum(r["objective/kl"] > target for r in h),
                     f"KL, last {last} steps": sum(r["objective/kl"] for r in tail) / len(tail)})
    return pd.DataFrame(rows).set_index("run")
