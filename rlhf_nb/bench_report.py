"""Render the results of `make bench` as docs/benchmarks.md."""
from __future__ import annotations

from pathlib import Path

TARGETS = {
    "train_smoke_s": ("`make train_smoke` wall time (end to end, incl. Python start)", 30.0, "≤"),
    "smoke_s": ("`make smoke` wall time (papermill, kernel start included)", 45.0, "≤"),
}


def _ok(value: float, target: float, op: str) -> str:
    good = value <= target if op == "≤" else value >= target
    return "met" if good else "**missed**"


def _fmt(v, nd=3) -> str:
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def write_report(r: dict, path: Path) -> None:
    m = r["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m rlhf_nb.bench`) on {r['date']}. Re-run it to refresh every figure on",
        "this page; the raw numbers are in `docs/benchmarks.json`. Timings are measured, never asserted in tests.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']} "
        f"(CUDA: {'yes' if m['cuda'] else 'no'}), {m['platform']}. Training uses 1 torch thread (`--threads 1`, the",
        "default, so that logged numbers reproduce exactly).",
        "",
        "## Targets",
        "",
        "| what | measured | target | |",
        "|---|---|---|---|",
    ]
    for key, (label, target, op) in TARGETS.items():
        if key in r:
            lines.append(f"| {label} | {r[key]:.1f} s | {op} {target:g} s | {_ok(r[key], target, op)} |")
    L = r.get("learn")
    if L:
        lines += [
            f"| sentiment score (mean VADER compound) after {r.get('budget_s', 60):.0f} s of training "
            f"(mean of the last 5 steps in budget) | {L['score_at_budget']:.3f} (from {L['score_first']:.3f}) | ≥ 0.8 | "
            f"{_ok(L['score_at_budget'], 0.8, '≥')} |",
            f"| per-sequence KL to the reference at that point (k1, nats) | {L['kl_at_budget']:.2f} "
            f"(max in budget {L['max_kl_in_budget']:.2f}) | ≤ 5 | {_ok(L['kl_at_budget'], 5.0, '≤')} |",
            f"| peak RSS of the training process | {L['peak_rss_mb']:.0f} MB | ≤ 2048 MB | {_ok(L['peak_rss_mb'], 2048, '≤')} |",
            "",
            "## One PPO step on the sentiment task",
            "",
            f"Settings: `{r.get('learn_flags', '')}`. Medians over {L['steps_in_budget']} steps.",
            "",
            "| stage | seconds |",
            "|---|---|",
            f"| rollout (sampling with KV cache) | {L['rollout_s_median']:.3f} |",
            f"| scoring (VADER) | {L['score_s_median']:.3f} |",
            f"| forward passes for old / reference log-probs, KL, GAE | {L['forward_s_median']:.3f} |",
            f"| PPO epochs (forward + backward + Adam) | {L['update_s_median']:.3f} |",
            f"| **whole step** | **{L['step_s_median']:.3f}** |",
            "",
            f"Sampled tokens per second during rollout: {L['tokens_per_s_median']:.0f}. "
            f"Set-up (load policy, reference, reward): {L['setup_s']:.1f} s.",
            "",
            "![learning curve](bench_learning_curve.png)",
            "",
        ]
    nbs = r.get("notebooks")
    if nbs:
        lines += ["## Notebooks", "", "Each notebook executed top to bottom in a fresh kernel (kernel start included).", "",
                  "| notebook | seconds |", "|---|---|"]
        lines += [f"| `{k}` | {v:.1f} |" for k, v in nbs.items()]
        lines += [f"| total | {sum(nbs.values()):.1f} |", ""]
    T = r.get("trl")
    if T:
        from .bench_trl import render_markdown

        lines += render_markdown(T)
    path.write_text("\n".join(lines) + "\n")
