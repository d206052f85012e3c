"""Lesson 06's experiments as plain functions: one short RLHF run per (kl_coef, batch_size), sample tables, exercise checks.

The interactive panel (rlhf_nb.course.widgets) only moves sliders and calls `run_experiment`; everything here runs and is
tested without a kernel or a browser.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..config import RunConfig
from ..policy import sample

# a few fixed prompts whose completions we read before and after training
PROBE_PROMPTS = ("The acting was", "I thought the plot", "This movie is", "The ending felt")
PROBE_SEED = 1234  # its own generator: probing never shifts the training run's random streams
SUMMARY_KEYS = ("objective/scores", "objective/kl", "objective/rlhf_reward", "policy/entropy")


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
                   callback: Callable[[int, dict, dict], None] | None = None, **overrides: Any) -> ExperimentResult:
    """Train a fresh policy for `steps` PPO steps with this KL coefficient and batch size; nothing written to disk.

    Every value goes through RunConfig first, so a bad one raises ConfigError naming its flag before torch sees it.
    `overrides` are any other RunConfig fields (e.g. reward="length", max_new_tokens=8)."""
    from ..train import setup, train  # imported here so `import rlhf_nb.course.experiments` stays light

    cfg = RunConfig(kl_coef=kl_coef, batch_size=batch_size, steps_per_epoch=steps, epochs=1, seed=seed,
                    **{"progress": False, "device": "cpu", **overrides})
    state = setup(cfg)
    before = probe_samples(state)
    res = train(cfg, callback=callback, write_run=False, state=state)
    after = probe_samples(res.state)
    return ExperimentResult(float(kl_coef), int(batch_size), int(steps), int(seed), res.history, before, after,
                            final_averages(res.history))


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
