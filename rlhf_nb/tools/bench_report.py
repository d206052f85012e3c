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
        f"Written by `make bench` (`python -m rlhf_nb.tools.bench`) on {r['date']}. Re-run it to refresh every figure on",
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
    runs = {k[len("learn_"):]: v for k, v in r.items() if k.startswith("learn_") and k != "learn_flags"}
    budget = r.get("budget_s", 60)
    for name, L in runs.items():
        lines += [
            f"| {name}: sentiment score (mean VADER compound, last 5 steps) after {budget:.0f} s of training | "
            f"{L['score_at_budget']:.3f} (from {L['score_first']:.3f}) | ≥ 0.8 | {_ok(L['score_at_budget'], 0.8, '≥')} |",
            f"| {name}: per-sequence KL to the reference at that point (k1, nats) | {L['kl_at_budget']:.2f} "
            f"(max in budget {L['max_kl_in_budget']:.2f}) | ≤ 5 | {_ok(L['kl_at_budget'], 5.0, '≤')} |",
            f"| {name}: peak RSS of the training process | {L['peak_rss_mb']:.0f} MB | ≤ 2048 MB | "
            f"{_ok(L['peak_rss_mb'], 2048, '≤')} |",
        ]
    opt = r.get("optimum")
    if opt:
        b = opt["betas"]
        lines += [
            "",
            "### How far can the score go at this β? The KL-regularised optimum",
            "",
            "RLHF maximises E[r] − β·KL(π‖ρ); its exact maximiser is π*(y) ∝ ρ(y)·exp(r(y)/β) (Ziegler et al. 2019).",
            f"Reweighting {opt['n']} samples of the base policy (mean score {opt['base_mean']:+.3f}; only "
            f"{100 * opt['base_frac_ge_0.8']:.1f}% of them score ≥ 0.8) estimates what π* reaches — the ceiling for any "
            "optimiser at that β (rough: the samples see only part of the support):",
            "",
            "| β | E_π*[score] | KL(π*‖ρ), nats |",
            "|---|---|---|",
        ]
        lines += [f"| {float(beta):g} | {v['reward']:.3f} | {v['kl']:.2f} |" for beta, v in b.items()]
        ceiling = b.get(0.05, b.get("0.05"))
        if ceiling and runs:
            best_name, best = max(runs.items(), key=lambda kv: kv[1]["score_at_budget"])
            verdict = ("reaches the target" if best["score_at_budget"] >= 0.8 else
                       f"gets {best['score_at_budget'] / ceiling['reward']:.0%} of the way to that ceiling's score")
            lines += [
                "",
                f"At β = 0.05 the ceiling is a mean score of {ceiling['reward']:.3f} at {ceiling['kl']:.2f} nats: a mean "
                "of 0.8 within 5 nats asks the policy to put nearly all its mass on the rare high-scoring sentences "
                f"(two positive adjectives). In {budget:.0f} s the best run here ({best_name}, "
                f"{best['score_at_budget']:.3f} at {best['kl_at_budget']:.2f} nats) {verdict}. A lower β "
                "(`--kl_coef 0.03`) raises the ceiling, at more KL.",
            ]
    for name, L in runs.items():
        lines += [
            "",
            f"## One {name.upper()} step on the sentiment task",
            "",
            f"Flags: `{r.get('learn_flags', {}).get(name, '')}`, stopped by the {budget:.0f} s budget. "
            f"Medians over {L['steps_in_budget']} steps.",
            "",
            "| stage | seconds |",
            "|---|---|",
            f"| rollout (sampling with KV cache) | {L['rollout_s_median']:.3f} |",
            f"| scoring (VADER) | {L['score_s_median']:.3f} |",
            f"| forward passes for old / reference log-probs, KL, advantages | {L['forward_s_median']:.3f} |",
            f"| PPO epochs (forward + backward + Adam) | {L['update_s_median']:.3f} |",
            f"| **whole step** | **{L['step_s_median']:.3f}** |",
            "",
            f"Sampled tokens per second during rollout: {L['tokens_per_s_median']:.0f}. "
            f"Set-up (load policy, reference, reward): {L['setup_s']:.1f} s.",
        ]
    if runs:
        lines += ["", "![learning curves: score and KL by step and by wall seconds](bench_learning_curve.png)", ""]
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
