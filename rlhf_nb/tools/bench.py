"""`make bench`: measure speed, memory and learning on this machine and write docs/benchmarks.md.

Timings are measured here and written down, never asserted in tests. Each measured workload runs in its own
child process so that its peak RSS is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# the sentiment task of the benchmark, cut at a wall-clock budget: PPO with the defaults (what `make train_quick`
# runs), and GRPO with the same completions per step (8 prompts x 4 generations) and the same beta
LEARN_RUNS = {
    "ppo": dict(seed=0, batch_size=32, max_new_tokens=12, kl_coef=0.05, steps_per_epoch=1000, progress=False),
    "grpo": dict(seed=0, batch_size=8, num_generations=4, advantage="grpo", max_new_tokens=12, kl_coef=0.05,
                 steps_per_epoch=1000, progress=False),
}
LEARN_BUDGET_S = 60.0
FRONTIER_BETAS = (0.02, 0.03, 0.05, 0.1)


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": 1, "cuda": torch.cuda.is_available(), "platform": platform.platform()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child_learn(budget_s: float, flags: dict, out: Path) -> None:
    """Train on the sentiment reward until the wall budget; record per-step metrics and the base policy's score."""
    from ..config import RunConfig
    from ..train import setup, train

    cfg = RunConfig(**flags)
    t0 = time.perf_counter()
    state = setup(cfg)
    setup_s = time.perf_counter() - t0
    res = train(cfg.replace(max_minutes=budget_s / 60), write_run=False, state=state)
    out.write_text(json.dumps({"history": res.history, "setup_s": setup_s, "peak_rss_mb": peak_rss_mb()}))


def _run_child(args: list[str], flags: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.json"
        subprocess.run([sys.executable, "-m", "rlhf_nb.tools.bench", "--child", *args, "--child_out", str(out)],
                       check=True, cwd=ROOT, env={**os.environ, "RLHF_NB_BENCH_FLAGS": json.dumps(flags)})
        return json.loads(out.read_text())


def kl_regularised_optimum(betas=FRONTIER_BETAS, n: int = 4096, max_new_tokens: int = 12, seed: int = 0) -> dict:
    """The best any optimiser can do against r - beta*KL: pi*(y) ∝ rho(y)·exp(r(y)/beta) (Ziegler et al. 2019, eq. 2).

    Estimated by reweighting n base-policy samples: E*[r] = Σ w r / Σ w with w = exp(r/beta), and
    KL(pi*‖rho) = E*[r]/beta − log mean(w). n samples see only part of the support, so both are rough."""
    import math

    import torch

    from ..corpus import get_prompts
    from ..policy import load_policy, sample
    from ..rewards import get_reward
    from ..seeding import seed_everything

    g = seed_everything(seed)
    model, tok = load_policy()
    reward = get_reward("sentiment")
    scores = []
    for i in range(n // 256):
        ro = sample(model, tok, get_prompts(256, seed=i), max_new_tokens, generator=g)
        scores.append(reward(ro.prompts, ro.completions))
    r = torch.cat(scores).double()
    out = {"n": len(r), "base_mean": float(r.mean()), "base_frac_ge_0.8": float((r >= 0.8).double().mean()), "betas": {}}
    for beta in betas:
        w = torch.softmax(r / beta, 0)
        er = float((w * r).sum())
        out["betas"][beta] = {"reward": er, "kl": er / beta - float(torch.logsumexp(r / beta, 0) - math.log(len(r)))}
    return out


def time_command(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return time.perf_counter() - t0


def bench_train_smoke() -> dict:
    with tempfile.TemporaryDirectory() as d:
        wall = time_command(["make", "--no-print-directory", "train_smoke", f"TRAIN_OUT={d}"])
    return {"train_smoke_s": wall}


def bench_smoke_notebook() -> dict:
    with tempfile.TemporaryDirectory() as d:
        wall = time_command([sys.executable, "-m", "rlhf_nb.tools.smoke", "--out", d])
    return {"smoke_s": wall}


def bench_notebooks() -> dict:
    """Execute every notebook once, in a temp copy, and time it (kernel start included)."""
    import shutil

    from .notebooks import execute, notebooks

    times = {}
    with tempfile.TemporaryDirectory() as d:
        for nb in notebooks():
            copy = Path(d) / nb.name
            shutil.copy(nb, copy)
            times[nb.name] = execute(copy)
    return times


def learning_summary(history: list[dict], budget_s: float) -> dict:
    within = [r for r in history if r["time/elapsed_s"] <= budget_s] or history[:1]
    tail = within[-5:]
    return {
        "steps_in_budget": len(within),
        "score_first": history[0]["objective/scores"],
        "score_at_budget": statistics.mean(r["objective/scores"] for r in tail),
        "kl_at_budget": statistics.mean(r["objective/kl"] for r in tail),
        "max_kl_in_budget": max(r["objective/kl"] for r in within),
        "step_s_median": statistics.median(r["time/step_s"] for r in history),
        "rollout_s_median": statistics.median(r["time/rollout_s"] for r in history),
        "score_s_median": statistics.median(r["time/score_s"] for r in history),
        "forward_s_median": statistics.median(r["time/forward_s"] for r in history),
        "update_s_median": statistics.median(r["time/update_s"] for r in history),
        "tokens_per_s_median": statistics.median(r["time/rollout_tokens_per_s"] for r in history),
    }


def plot_learning(histories: dict[str, list[dict]], path: Path, title: str) -> None:
    """Reward and KL against step and against wall seconds, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6))
    for row, x, xl in ((0, "step", "step"), (1, "time/elapsed_s", "wall seconds")):
        for col, k in enumerate(("objective/scores", "objective/kl")):
            ax = axes[row][col]
            for name, h in histories.items():
                ax.plot([r[x] for r in h], [r[k] for r in h], marker=".", markersize=3, label=name)
            if k == "objective/scores":
                ax.axhline(0.8, color="grey", ls="--", lw=1)
            else:
                ax.axhline(5.0, color="grey", ls="--", lw=1)
            ax.set_xlabel(xl)
            ax.set_title(k)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlhf_nb.tools.bench", description=__doc__)
    p.add_argument("--child", choices=["learn"], help=argparse.SUPPRESS)
    p.add_argument("--child_out", help=argparse.SUPPRESS)
    p.add_argument("--budget_s", type=float, default=LEARN_BUDGET_S)
    p.add_argument("--skip", nargs="*", default=[], choices=["smoke", "notebooks", "trl", "learn", "grpo"])
    args = p.parse_args(argv)
    if args.child == "learn":
        child_learn(args.budget_s, json.loads(os.environ["RLHF_NB_BENCH_FLAGS"]), Path(args.child_out))
        return 0

    DOCS.mkdir(exist_ok=True)
    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "budget_s": args.budget_s,
                     "learn_flags": {name: " ".join(f"--{k} {v}" for k, v in flags.items() if k != "progress")
                                     for name, flags in LEARN_RUNS.items()}}
    print("train_smoke …", flush=True)
    results.update(bench_train_smoke())
    if "learn" not in args.skip:
        histories = {}
        for name, flags in LEARN_RUNS.items():
            if name in args.skip:
                continue
            print(f"sentiment learning run, {name} ({args.budget_s:.0f} s budget) …", flush=True)
            learn = _run_child(["learn", "--budget_s", str(args.budget_s)], flags)
            histories[name] = learn["history"]
            results[f"learn_{name}"] = {**learning_summary(learn["history"], args.budget_s),
                                        "setup_s": learn["setup_s"], "peak_rss_mb": learn["peak_rss_mb"]}
        plot_learning(histories, DOCS / "bench_learning_curve.png",
                      f"sentiment reward, {args.budget_s:.0f} s of training, kl_coef 0.05")
        print("KL-regularised optimum …", flush=True)
        results["optimum"] = kl_regularised_optimum()
    if "smoke" not in args.skip:
        print("make smoke (papermill) …", flush=True)
        results.update(bench_smoke_notebook())
    if "notebooks" not in args.skip:
        print("notebooks …", flush=True)
        results["notebooks"] = bench_notebooks()
    if "trl" not in args.skip:
        print("rlhf_nb vs TRL (GRPO) …", flush=True)
        from .bench_trl import BENCH_SETTINGS, compare_grpo

        results["trl"] = compare_grpo(**BENCH_SETTINGS)
    (DOCS / "benchmarks.json").write_text(json.dumps(results, indent=2, default=str))
    from .bench_report import write_report

    write_report(results, DOCS / "benchmarks.md")
    print(f"wrote {DOCS / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
