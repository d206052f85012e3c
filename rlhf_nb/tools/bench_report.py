"""Render the results of `make bench` as docs/benchmarks.md."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..cli import cli_from_dataclass
from ..config import ConfigError, Options, check_file_writable, option

TARGETS = {
    "train_smoke_s": ("`make train_smoke` (end to end, incl. Python start)", 30.0, "≤"),
    "smoke_s": ("`make smoke` (papermill, kernel start included)", 45.0, "≤"),
}
J_TARGET = 0.9  # J/J* that a learning run should reach within the budget (issue 9)


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
        if key in r:  # judged on CPU seconds when measured: the wall time grows with whatever else runs
            cpu = r.get(key.replace("_s", "_cpu_s"))
            judged = r[key] if cpu is None else cpu
            what = f"{r[key]:.1f} s" if cpu is None else f"{cpu:.1f} CPU s ({r[key]:.1f} s wall)"
            lines.append(f"| {label} | {what} | {op} {target:g} s | {_ok(judged, target, op)} |")
    runs = {k[len("learn_"):]: v for k, v in r.items()
            if k.startswith("learn_") and isinstance(v, dict) and "steps_in_budget" in v}  # not learn_flags/_seeds
    budget = r.get("budget_s", 60)
    opt = r.get("optimum")
    beta = r.get("beta", 0.05)
    star = _at(opt["betas"], beta) if opt else None
    for name, L in runs.items():
        if L.get("eval_j_ratio") is not None:
            ratios = [v["eval_j_ratio"] for v in L.get("by_seed", {"": L}).values()]
            seeds = "" if len(ratios) == 1 else f"; {len(ratios)} seeds: mean [lowest, highest]"
            before = name.endswith("_old")  # the defaults before the retune: shown for comparison, not judged
            lines.append(f"| {name}: J/J* after {budget:.0f} CPU s of training (β = {beta:g}{seeds}) | "
                         f"{_spread(ratios, 2)} (lowest {min(ratios):.3f}) | "
                         + ("— (RunConfig's defaults before 2026-12-05, for comparison) | |" if before else
                            f"≥ {J_TARGET:g} on every seed | {_ok(min(ratios), J_TARGET, '≥')} |"))
        lines.append(f"| {name}: peak RSS of the training process | {L['peak_rss_mb']:.0f} MB | ≤ 2048 MB | "
                     f"{_ok(L['peak_rss_mb'], 2048, '≤')} |")
    lines += ["", "Timings are judged on CPU seconds (user + system of the command and its children): wall time grows "
              "with whatever else runs on the machine, and on a quiet machine it comes close to the CPU seconds."]
    if runs and star:
        lines += _learning_section(r, runs, opt, star, beta, budget)
    if r.get("search") and star:
        lines += _search_section(r["search"], r.get("search_seeds"), star, beta)
    for name, L in runs.items():
        if name not in ("ppo", "grpo"):
            continue
        lines += [
            "",
            f"## One {name.upper()} step on the sentiment task",
            "",
            f"Flags: `{r.get('learn_flags', {}).get(name, '')}`, stopped after {budget:.0f} CPU seconds of training. "
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
    nbs = r.get("notebooks")
    if nbs:
        lines += ["", "## Notebooks", "", "Each notebook executed top to bottom in a fresh kernel (kernel start included).", "",
                  "| notebook | seconds |", "|---|---|"]
        lines += [f"| `{k}` | {v:.1f} |" for k, v in nbs.items()]
        lines += [f"| total | {sum(nbs.values()):.1f} |", ""]
    T = r.get("trl")
    if T:
        from .bench_trl import render_markdown

        lines += render_markdown(T)
    if r.get("speed"):
        from .bench_speed import render_speed

        lines += ["", *render_speed(r["speed"], notes=hand_notes("speed_notes.md"))]
    if r.get("dpo"):
        from .bench_dpo import render_dpo

        lines += render_dpo(r["dpo"])
    path.write_text("\n".join(lines) + "\n")


def search_key(base: str, changes: dict) -> str:
    """A search row's name: its base run and the flags it changes, e.g. 'grpo --learning_rate 0.001'."""
    return " ".join([base] + [f"--{k} {v}" for k, v in changes.items()])


def hand_notes(name: str) -> list[str]:
    """A hand-written reading of measured tables (docs/<name>), as report lines after a blank one; none if absent."""
    notes = Path(__file__).resolve().parents[2] / "docs" / name
    return ["", notes.read_text().strip()] if notes.exists() else []


def _at(by_beta: dict, beta: float) -> dict:
    """by_beta[beta] whether the JSON round trip made the keys strings or not."""
    return next(v for k, v in by_beta.items() if abs(float(k) - beta) < 1e-12)


def _spread(xs: list[float], nd: int) -> str:
    """'mean [lowest, highest]' of several seeds' values; one value alone."""
    if len(xs) == 1:
        return f"{xs[0]:.{nd}f}"
    return f"{sum(xs) / len(xs):.{nd}f} [{min(xs):.{nd}f}, {max(xs):.{nd}f}]"


def _flags(text: str) -> str:
    return text.replace(" --progress False", "").replace(" --steps_per_epoch 100000", "")


def _learning_section(r: dict, runs: dict, opt: dict, star: dict, beta: float, budget: float) -> list[str]:
    """Each learning run's score, KL and J/J* after the budget, against the KL-regularised optimum."""
    n_eval = next(iter(runs.values())).get("eval_n", 0)
    lines = [
        "",
        f"## Learning speed against the optimum (sentiment reward, β = {beta:g})",
        "",
        "RLHF maximises J(π) = E_π[r] − β·KL(π‖ρ); its exact maximiser is π*(y|x) ∝ ρ(y|x)·exp(r(x, y)/β), and "
        "J* = E_x[β·log E_ρ[exp(r/β)]] (`rlhf_nb.optimum`, lesson 06). J* is estimated per prompt from "
        f"N = {opt['n_per_prompt']} base-policy samples of each of the {opt['n'] // opt['n_per_prompt']} training "
        f"prompts ({opt['n']} in all; base mean score {opt['base_mean']:+.3f}, only {100 * opt['base_frac_ge_0.8']:.1f}% "
        "of samples score ≥ 0.8). A finite N misses the rare high-scoring tail, so Ĵ* is biased low and J/J* a little "
        "high.",
        "",
        f"Each run trains for {budget:.0f} seconds of **process CPU time** (`time.process_time()` of the one-thread "
        "training process: about its wall time on a quiet machine, and unaffected by other jobs sharing the CPU). Then, "
        f"outside the budget, the policy is measured on {n_eval} fresh samples ({n_eval // 32} per training prompt, the "
        "prompts and weights of J*): score, KL(π‖ρ) (k1 summed per completion, unbiased) and J = score − β·KL.",
        "",
        f"Seeds {', '.join(str(x) for x in r.get('learn_seeds', [0]))}: mean [lowest, highest]; the curves show the "
        "first seed.",
        "",
        "| run | flags | steps in budget | score | KL (nats) | J | J/J* |",
        "|---|---|---|---|---|---|---|",
        f"| optimum π* (N = {opt['n_per_prompt']} per prompt) | | | {star['score']:.3f} | {star['kl']:.2f} | "
        f"{star['J_star']:.3f} | 1 |",
    ]
    for name, L in runs.items():
        vs = list(L.get("by_seed", {"": L}).values())
        col = lambda k, nd: _spread([v[k] for v in vs], nd)  # noqa: E731
        lines.append(f"| {name} | `{_flags(r.get('learn_flags', {}).get(name, ''))}` | {col('steps_in_budget', 0)} | "
                     f"{col('eval_score', 3)} | {col('eval_kl', 2)} | {col('eval_j', 3)} | **{col('eval_j_ratio', 2)}** |")
    lines += ["", "![score, KL and J against CPU seconds, with the optimum](bench_learning_curve.png)"]
    return lines


def _search_section(screen: dict, seeds: dict | None, star: dict, beta: float) -> list[str]:
    """The settings search of `python -m rlhf_nb.tools.bench --only search` (docs/bench_search*.json)."""
    lines = [
        "",
        f"## Settings search: what reaches J/J* ≥ {J_TARGET:g} in {screen['budget_s']:.0f} CPU seconds",
        "",
        "`python -m rlhf_nb.tools.bench --only search` changes the named flags of the PPO or GRPO run with RunConfig's "
        "defaults before 2026-12-05 (the rows ppo_old and grpo_old above); what it found became today's defaults. "
        f"Same β and CPU-time budget; J/J* against the J* measured when the search ran ({screen.get('j_star', star['J_star']):.3f}, on "
        "the sampler of that time).",
        "",
        "**Pass 1, the screen** (`docs/bench_search.json`): one run per row (seed 0 unless the row says otherwise), in "
        "the order tried, scored by the mean of its last 5 training steps (160 rollouts, so ±0.05 or so in J/J*).",
        "",
        "| run | steps | score | KL (nats) | J/J* |",
        "|---|---|---|---|---|",
    ]
    for key, v in screen["runs"].items():
        lines.append(f"| `{key}` | {v['steps_in_budget']} | {v['score_at_budget']:.3f} | {v['kl_at_budget']:.2f} | "
                     f"{v['j_ratio']:.2f} |")
    if seeds:
        groups: dict[str, list[dict]] = {}
        for v in seeds["runs"].values():
            changes = {k: x for k, x in v["changes"].items() if k != "seed"}
            groups.setdefault(search_key(v["base"], changes), []).append(v)
        n_eval = next(iter(seeds["runs"].values()))["eval_n"]
        lines += [
            "",
            f"**Pass 2, three seeds** (`docs/bench_search_seeds.json`): the defaults and the screen's best rows with seeds "
            f"0, 1 and 2, each measured after the budget on {n_eval} fresh samples as above; mean over the seeds, "
            "and [lowest, highest].",
            "",
            "| run | steps | score | KL (nats) | J/J* |",
            "|---|---|---|---|---|",
        ]
        for key, vs in groups.items():
            col = lambda k, nd: _spread([v[k] for v in vs], nd)  # noqa: E731
            lines.append(f"| `{key}` ({len(vs)} seeds) | {col('steps_in_budget', 0)} | {col('eval_score', 3)} | "
                         f"{col('eval_kl', 2)} | {col('eval_j_ratio', 2)} |")
    lines += hand_notes("bench_search_notes.md")  # the reading of the tables, written by hand after the search
    return lines


DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass
class BenchReportOptions(Options):
    """`python -m rlhf_nb.tools.bench_report`: which results to read and which report to write."""

    json: str = option(str(DOCS / "benchmarks.json"), "the results `make bench` wrote")
    out: str = option(str(DOCS / "benchmarks.md"), "the report to write")


def read_results(path: str | Path) -> dict:
    """A `make bench` result from `path`; ConfigError naming --json when it is not one."""
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--json: cannot read {path} as JSON ({type(e).__name__})") from None
    if not isinstance(r, dict) or "machine" not in r:
        raise ConfigError(f"--json: {path} is not a `make bench` result (no 'machine' entry)")
    return r


def check_options(o: BenchReportOptions) -> None:
    read_results(o.json)
    check_file_writable(o.out, "--out")


def main(argv: list[str] | None = None) -> int:
    """`python -m rlhf_nb.tools.bench_report`: render docs/benchmarks.md again from docs/benchmarks.json (and the search
    files), without measuring anything: after editing a hand-written note, for example."""
    o = cli_from_dataclass(BenchReportOptions, argv, prog="python -m rlhf_nb.tools.bench_report",
                           description=main.__doc__.splitlines()[0], check=check_options)
    r = read_results(o.json)
    for key, name in (("search", "bench_search.json"), ("search_seeds", "bench_search_seeds.json")):
        if (DOCS / name).exists():
            r[key] = json.loads((DOCS / name).read_text())
    write_report(r, Path(o.out))
    print(f"wrote {o.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
