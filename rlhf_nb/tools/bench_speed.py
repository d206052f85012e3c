"""`make bench`'s speed section: how close one training step comes to this CPU's arithmetic limit, where the rest of
its time goes, what a second thread buys (and whether runs still reproduce), and how cost grows.

    from rlhf_nb.tools.bench_speed import speed_section
    result, lines = speed_section(trl=results.get("trl"))   # a dict for benchmarks.json, the markdown lines

Step times are CPU seconds of one torch thread (time.thread_time / process_time): equal to wall seconds on a quiet
machine, and not inflated when other jobs share the CPU. Only the thread comparison uses wall seconds (the one clock
in which a second thread can win). FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (matmuls: what the
limit is made of); the limit is FLOPs / this CPU's best one-thread fp32 matmul rate on the loop's own shapes,
measured in the same run.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ..cli import cli_from_dataclass
from ..config import ConfigError, Options, check_file_writable, option


SEED = 31
STAGES = ("rollout", "score", "forward", "update")  # ppo_step's stages 1, 2, 3 and 6; the rest is "other"
STAGE_NAMES = {"rollout": "1. rollout (sampling, KV cache)", "score": "2. score (reward)",
               "forward": "3. old + reference log-probs", "update": "6. PPO epochs (forward, backward, Adam)",
               "other": "4, 5, 7 and metrics"}
# the two workloads of the issue's targets: RunConfig's defaults (PPO) and bench_trl.BENCH_SETTINGS' GRPO
WORKLOADS = {
    "ppo": {},
    "grpo": dict(batch_size=8, num_generations=8, max_new_tokens=8, advantage="grpo", kl_in_loss=True,
                 learning_rate=1e-3, ppo_epochs=1, num_minibatches=1, seed=0),
}
# step / limit at one thread; rlhf_nb GRPO step / TRL's (issue 17's targets; docs/speed_notes.md explains the
# earlier 1.5 and 0.5)
PPO_TARGET, GRPO_TARGET = 2.0, 0.6
GROWTH_BATCH = (8, 32, 64, 128, 256)
GROWTH_TOKENS = (8, 12, 24, 48)
# randomly initialised GPT-2s with the embedded vocabulary, up to GPT-2 small's shape (no hub needed for timing)
GROWTH_MODELS = {"embedded": None,
                 "6 layers × 384": dict(n_layer=6, n_embd=384, n_head=6),
                 "12 layers × 768 (GPT-2 small's shape)": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024)}
MATMUL_OPS = ("mm", "addmm", "bmm")
GPT2 = dict(n_layer=12, n_embd=768, vocab=50257, params=124.4e6)  # the hub's gpt2


# --------------------------------------------------------------------------------------------- stage observation
@contextlib.contextmanager
def observe_stages(state, around: Callable[[str], contextlib.AbstractContextManager]):
    """Run each of ppo_step's stages inside `around(stage)`: wraps the state's sampler, forward pass, reward function
    and PPO update (the parts ppo_step calls through the state) for the duration of the block. A wrapped call made
    inside another stage counts in that one (the policy forwards of stage 6 stay inside "update")."""
    active: list[str] = []

    def wrap(stage, fn):
        def run(*a, **k):
            if active:
                return fn(*a, **k)
            active.append(stage)
            try:
                with around(stage):
                    return fn(*a, **k)
            finally:
                active.pop()
        return run

    stages = {"sampler": "rollout", "forward": "forward", "reward_fn": "score", "ppo_update": "update"}
    saved = {name: getattr(state, name) for name in stages}
    try:
        for name, stage in stages.items():
            setattr(state, name, wrap(stage, saved[name]))
        yield
    finally:
        for name, fn in saved.items():
            setattr(state, name, fn)


class _Shapes(TorchDispatchMode):
    """Records the FLOPs of each matmul shape (M, K, N) run inside it."""

    def __init__(self):
        super().__init__()
        self.flops: dict[tuple[int, int, int], float] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm"):
            a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
            key = (a.shape[0], a.shape[1], b.shape[1])
            self.flops[key] = self.flops.get(key, 0.0) + 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
        return func(*args, **(kwargs or {}))


def measure_step(flags: dict | None = None, steps: int = 8, warmup: int = 2) -> dict[str, Any]:
    """CPU seconds and FLOPs per stage of `steps` ppo_steps at one thread.

    Two states with the same seed run in lockstep (they compute the same numbers): one is timed, the other counted
    with FlopCounterMode, so time and FLOPs come from the very same steps."""
    from ..config import RunConfig
    from ..train import ppo_step, setup

    cfg = RunConfig(**{"seed": SEED, "progress": False, "threads": 1, **(flags or {})})
    timed, counted = setup(cfg), setup(cfg)
    for _ in range(warmup):
        ppo_step(timed), ppo_step(counted)
    secs = {k: [] for k in (*STAGES, "step")}
    flops = {k: 0.0 for k in (*STAGES, "step")}
    shapes = _Shapes()
    for _ in range(steps):
        acc = dict.fromkeys(STAGES, 0.0)

        @contextlib.contextmanager
        def clock(stage):
            t = time.thread_time()
            yield
            acc[stage] += time.thread_time() - t

        with observe_stages(timed, clock):
            t0 = time.thread_time()
            metrics, _ = ppo_step(timed)
            secs["step"].append(time.thread_time() - t0)
        for k in STAGES:
            secs[k].append(acc[k])

        @contextlib.contextmanager
        def count(stage):
            with FlopCounterMode(display=False) as fc:
                yield
            flops[stage] += fc.get_total_flops()

        with observe_stages(counted, count), shapes, FlopCounterMode(display=False) as total:
            ppo_step(counted)
        flops["step"] += total.get_total_flops()
    med = {k: statistics.median(v) for k, v in secs.items()}
    med["other"] = max(med["step"] - sum(med[k] for k in STAGES), 0.0)
    per_step = {k: v / steps for k, v in flops.items()}
    per_step["other"] = max(per_step["step"] - sum(per_step[k] for k in STAGES), 0.0)
    top = sorted(shapes.flops.items(), key=lambda kv: -kv[1])
    return {"flags": flags or {}, "steps": steps, "seconds": med, "gflop": {k: v / 1e9 for k, v in per_step.items()},
            "matmul_shapes": [[*s, f / steps / 1e9] for s, f in top[:8]],
            "tokens_per_step": metrics["rollout/completion_len"] * cfg.batch_size * cfg.num_generations}


def matmul_peak(shapes: list[tuple[int, int, int]], min_s: float = 0.05) -> dict[str, Any]:
    """One-thread fp32 GFLOP/s of `a @ b` for each (M, K, N); the best of 5 timings of ≥ min_s CPU seconds each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rates = {}
    try:
        for m, k, n in shapes:
            a, b = torch.randn(m, k), torch.randn(k, n)
            reps = max(1, int(min_s / max(2 * m * k * n / 100e9, 1e-6)))
            best = float("inf")
            for _ in range(6):  # the first round warms caches and MKL's kernel choice
                t = time.thread_time()
                for _ in range(reps):
                    a @ b
                best = min(best, (time.thread_time() - t) / reps)
            rates[f"{m}x{k} @ {k}x{n}"] = 2 * m * k * n / max(best, 1e-9) / 1e9
    finally:
        torch.set_num_threads(threads)
    return {"gflops": rates, "peak": max(rates.values())}


def efficiency(step: dict[str, Any], peak_gflops: float) -> dict[str, dict[str, float]]:
    """Per stage: GFLOP, seconds, achieved GFLOP/s, share of the peak, and time as a multiple of its FLOP limit."""
    rows = {}
    for k in (*STAGES, "other", "step"):
        g, s = step["gflop"][k], step["seconds"][k]
        limit = g / peak_gflops
        rate = g / s if s else 0.0
        rows[k] = {"gflop": g, "seconds": s, "gflops": rate, "of_peak": rate / peak_gflops,
                   "x_limit": s / limit if limit else float("inf")}
    return rows


# ------------------------------------------------------------------------------------------------ op profile
class OpClock(TorchDispatchMode):
    """CPU time of every aten op run inside it (thread_time around the kernel alone, so the mode's own Python is
    not counted): a profile that, unlike torch.profiler's wall clock, is not inflated by other jobs on the CPU."""

    def __init__(self):
        super().__init__()
        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t = time.thread_time_ns()
        out = func(*args, **(kwargs or {}))
        dt = time.thread_time_ns() - t
        name = func.overloadpacket.__name__
        self.ns[name] = self.ns.get(name, 0) + dt
        self.calls[name] = self.calls.get(name, 0) + 1
        return out


def op_profile(flags: dict | None = None, steps: int = 3, top: int = 10) -> dict[str, Any]:
    """The step's CPU time by aten op (self time, per step) and what is left for Python and the framework."""
    from ..config import RunConfig
    from ..train import ppo_step, setup

    s = setup(RunConfig(**{"seed": SEED, "progress": False, "threads": 1, **(flags or {})}))
    ppo_step(s)
    t = time.thread_time()
    for _ in range(steps):
        ppo_step(s)
    plain = (time.thread_time() - t) / steps
    clock = OpClock()
    with clock:
        for _ in range(steps):
            ppo_step(s)
    ops = sorted(((k, v / steps / 1e9, clock.calls[k] // steps) for k, v in clock.ns.items()), key=lambda r: -r[1])
    in_ops = sum(r[1] for r in ops)
    matmul = sum(r[1] for r in ops if r[0] in MATMUL_OPS)
    return {"step_s": plain, "in_ops_s": in_ops, "outside_ops_s": max(plain - in_ops, 0.0), "matmul_s": matmul,
            "top": [{"op": k, "seconds": v, "calls": n} for k, v, n in ops[:top]]}


# ------------------------------------------------------------------------------------------- child processes
def _child(kind: str, spec: dict, out: Path) -> None:
    """One measured run in a fresh process, so its peak RSS and thread count are its own."""
    from ..config import RunConfig
    from ..runlog import read_jsonl, strip_wall_time
    from ..train import ppo_step, setup, train

    cfg = RunConfig(**{"seed": SEED, "progress": False, **spec["flags"]})
    if kind == "threads":
        marks = []
        with tempfile.TemporaryDirectory() as d:
            res = train(cfg.replace(out=d),
                        callback=lambda *a: marks.append((time.perf_counter(), time.process_time())))
            rows = [strip_wall_time(r) for r in read_jsonl(res.run_dir / "logs" / "train.jsonl")]
        wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])]  # step i+1 alone: between two callbacks
        cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
        result = {"rows": rows, "wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}
    else:  # growth: one warm-up step counted with FlopCounterMode, then timed steps
        s = setup(cfg)
        with FlopCounterMode(display=False) as fc:
            ppo_step(s)
        cpu, wall, lengths = [], [], []
        for _ in range(spec["steps"]):
            t, w = time.process_time(), time.perf_counter()
            m, _ = ppo_step(s)
            cpu.append(time.process_time() - t)
            wall.append(time.perf_counter() - w)
            lengths.append(m["rollout/completion_len"])
        result = {"gflop": fc.get_total_flops() / 1e9, "cpu_s": statistics.median(cpu),
                  "wall_s": statistics.median(wall), "completion_len": statistics.mean(lengths),
                  "tokens": statistics.mean(lengths) * cfg.batch_size * cfg.num_generations,
                  "params": sum(p.numel() for p in s.policy.lm.parameters())}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    out.write_text(json.dumps(result))


def _in_child(kind: str, spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="rlhf_nb_speed_") as d:
        out = Path(d) / "out.json"
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "RLHF_NB_SPEED_SPEC": json.dumps(spec)}
        proc = subprocess.run([sys.executable, "-m", "rlhf_nb.tools.bench_speed", "--child", kind, "--child_out",
                               str(out)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"bench_speed child {kind} {spec} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def threads_check(steps: int = 6, counts: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """The default step at each thread count, run twice: wall and CPU seconds per step, and whether the JSONL
    (wall-time fields dropped) is identical for the same seed and thread count, and across thread counts."""
    runs = {n: [_in_child("threads", {"flags": {"threads": n, "steps_per_epoch": steps}}) for _ in range(2)]
            for n in counts}
    out = {"steps": steps, "by_threads": {}}
    for n, (a, b) in runs.items():
        out["by_threads"][n] = {"wall_s": statistics.fmean([a["wall_s"], b["wall_s"]]),
                                "cpu_s": statistics.fmean([a["cpu_s"], b["cpu_s"]]),
                                "reproduces": json.dumps(a["rows"]) == json.dumps(b["rows"])}
    first = [json.dumps(runs[n][0]["rows"]) for n in counts]
    out["same_across_counts"] = len(set(first)) == 1
    return out


def _random_gpt2(root: Path, name: str, shape: dict) -> str:
    """A randomly initialised GPT-2 of the embedded vocabulary and tokenizer, saved where from_pretrained finds it."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from ..policy import resolve_model_path

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar
    base = GPT2Config.from_pretrained(resolve_model_path("embedded"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**{**base.to_dict(), **shape}))
    path = root / name.split(" ")[0]
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model_path("embedded")).save_pretrained(path)
    return str(path)


def growth(steps: int = 2, batches=GROWTH_BATCH, tokens=GROWTH_TOKENS, models=GROWTH_MODELS) -> dict[str, Any]:
    """Step CPU seconds, sampled tokens/s, GFLOP and peak RSS as batch size, new tokens and model size grow, one axis
    at a time from the defaults (batch 32, 12 new tokens, the embedded model)."""
    out: dict[str, Any] = {"steps": steps, "batch_size": {}, "max_new_tokens": {}, "model": {}}
    for b in batches:
        out["batch_size"][b] = _in_child("growth", {"flags": {"batch_size": b}, "steps": steps})
    with tempfile.TemporaryDirectory(prefix="rlhf_nb_models_") as d:
        # the trained model ends most completions after ~10 tokens; its random-weight twin (same shape) writes all
        # max_new_tokens of them, so this axis measures what longer completions cost
        twin = _random_gpt2(Path(d), "twin", {})
        for n in tokens:
            spec = {"flags": {"max_new_tokens": n, "model": twin}, "steps": steps}
            out["max_new_tokens"][n] = _in_child("growth", spec)
        for name, shape in models.items():
            flags = {} if shape is None else {"model": _random_gpt2(Path(d), name, shape)}
            out["model"][name] = _in_child("growth", {"flags": flags, "steps": steps})
    out["fits"] = growth_fits(out)
    return out


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares y = a + b·x with R² and the largest relative residual."""
    n, mx, my = len(xs), statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"a": a, "b": b, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0, "n": n,
            "max_rel_residual": max(abs(y - a - b * x) / abs(y) for x, y in zip(xs, ys) if y)}


def growth_fits(g: dict[str, Any]) -> dict[str, Any]:
    """Step time linear in batch and in new tokens (fixed cost + per-unit cost), the rate FLOPs run at per model, and
    what that predicts for the hub's gpt2 (124M parameters, a 50,257-token vocabulary) at the default settings."""
    fits = {}
    for axis in ("batch_size", "max_new_tokens"):
        rows = g[axis]
        fits[axis] = linear_fit([float(k) for k in rows], [r["cpu_s"] for r in rows.values()])
    models = list(g["model"].values())
    fits["model_gflops"] = {name: r["gflop"] / r["cpu_s"] for name, r in g["model"].items()}
    fits["rss_vs_params"] = linear_fit([r["params"] / 1e6 for r in models], [r["peak_rss_mb"] for r in models])
    # gpt2 = GPT-2 small's shape with a 29x wider vocabulary: scale FLOPs by the per-token forward cost
    # 2·(non-embedding params + V·H), run them at the rate the same shape reached here
    small = models[-1]
    h, v_kit = GPT2["n_embd"], _kit_vocab()
    n_emb_small = small["params"] - (v_kit + 1024) * h  # minus token and position embeddings (the head is tied)
    scale = (n_emb_small + GPT2["vocab"] * h) / (n_emb_small + v_kit * h)
    gflop = small["gflop"] * scale
    rate = small["gflop"] / small["cpu_s"]
    rss = fits["rss_vs_params"]["a"] + fits["rss_vs_params"]["b"] * GPT2["params"] / 1e6
    fits["gpt2"] = {"gflop_per_step": gflop, "step_s_one_thread": gflop / rate, "peak_rss_mb": rss,
                    "tokens_per_s": small["tokens"] / (gflop / rate)}
    return fits


def _kit_vocab() -> int:
    from transformers import GPT2Config

    from ..policy import resolve_model_path

    return GPT2Config.from_pretrained(resolve_model_path("embedded")).vocab_size


# ----------------------------------------------------------------------------------------------- the section
def speed_section(trl: dict | None = None, quick: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Measure everything above; return (result for benchmarks.json, the markdown lines for benchmarks.md).

    trl: compare_grpo's result from the same `make bench` run, for the GRPO-to-TRL ratio. quick: fewer steps and a
    shorter growth table (for a smoke check of the tool, not for the record)."""
    steps = 3 if quick else 8
    result: dict[str, Any] = {"machine_threads_available": _cores()}
    for name, flags in WORKLOADS.items():
        print(f"speed: {name} step, FLOPs and CPU time per stage …", flush=True)
        result[name] = measure_step(flags, steps=steps)
    shapes = {tuple(s[:3]) for w in WORKLOADS for s in result[w]["matmul_shapes"][:4]}
    print("speed: one-thread matmul peak on the loop's shapes …", flush=True)
    result["peak"] = matmul_peak(sorted(shapes))
    for name in WORKLOADS:
        result[name]["efficiency"] = efficiency(result[name], result["peak"]["peak"])
    print("speed: op profile …", flush=True)
    result["profile"] = op_profile(steps=2 if quick else 3)
    print("speed: 1 vs 2 threads …", flush=True)
    result["threads"] = threads_check(steps=3 if quick else 6)
    print("speed: growth …", flush=True)
    result["growth"] = (growth(steps=1, batches=(8, 32), tokens=(8, 12), models=dict(list(GROWTH_MODELS.items())[:2]))
                        if quick else growth())
    if trl is not None:
        result["trl_ratio"] = trl["ratios"].get("median_step_s")
    return result, render_speed(result)


def _cores() -> int:
    from ..seeding import all_cores

    return all_cores()


def render_speed(r: dict[str, Any], notes: list[str] = ()) -> list[str]:
    """The markdown of the speed section, from speed_section's result (e.g. re-read from benchmarks.json); `notes`:
    the hand-written reading that bench_report appends (docs/speed_notes.md, as report lines)."""
    peak = r["peak"]
    lines = ["## Speed: the step against this CPU's arithmetic limit", "",
             f"CPU seconds of one torch thread (≈ wall seconds on a quiet machine), medians over "
             f"{r['ppo']['steps']} steps after 2 warm-up steps, seed {SEED}. FLOPs counted by `FlopCounterMode` on the "
             f"same steps. The limit is FLOPs ÷ this CPU's best one-thread fp32 matmul rate on the loop's own shapes, "
             f"measured in the same run: **{peak['peak']:.0f} GFLOP/s** "
             f"({', '.join(f'{k}: {v:.0f}' for k, v in peak['gflops'].items())})."]
    from ..config import RunConfig

    d = RunConfig()
    passes = "one pass over one minibatch" if d.ppo_epochs * d.num_minibatches == 1 else \
        f"{d.ppo_epochs} epochs × {d.num_minibatches} minibatches"
    for name, title in (("ppo", f"PPO with RunConfig's defaults (batch {d.batch_size}, {d.max_new_tokens} new tokens, {passes})"),
                        ("grpo", "GRPO on `BENCH_SETTINGS` (8 prompts × 8 generations, 8 new tokens, one pass)")):
        e = r[name]["efficiency"]
        lines += ["", f"**{title}**", "", "| stage | GFLOP | CPU s | GFLOP/s | of peak | × its limit |",
                  "|---|---|---|---|---|---|"]
        for k in (*STAGES, "other", "step"):
            row = e[k]
            label = "**whole step**" if k == "step" else STAGE_NAMES[k]
            lines.append(f"| {label} | {row['gflop']:.2f} | {row['seconds']:.3f} | {row['gflops']:.0f} | "
                         f"{100 * row['of_peak']:.0f}% | {row['x_limit']:.1f}× |" if row["gflop"] >= 0.01 else
                         f"| {label} | {row['gflop']:.2f} | {row['seconds']:.3f} | – | – | – |")
    x = r["ppo"]["efficiency"]["step"]["x_limit"]
    lines += ["", f"The default PPO step takes **{x:.2f}× its FLOP limit** at one thread (target ≤ {PPO_TARGET}×: "
                  f"{'met' if x <= PPO_TARGET else '**missed**'})."]
    if r.get("trl_ratio") is not None:
        q = r["trl_ratio"]
        lines.append(f"rlhf_nb's GRPO step is **{q:.2f}× TRL's** on `BENCH_SETTINGS`, measured in this run (section "
                     f"below; target ≤ {GRPO_TARGET}×: {'met' if q <= GRPO_TARGET else '**missed**'}).")
    p = r["profile"]
    mm_x = p["matmul_s"] / (r["ppo"]["gflop"]["step"] / peak["peak"])
    lines += ["", f"The step's matmuls alone take {p['matmul_s']:.3f} CPU s ({mm_x:.2f}× the limit: in the loop "
                  f"they run slower than alone, on cache-cold weights and small shapes); everything else — GELU, "
                  f"attention, softmax over the vocabulary, layer norms, sampling's random numbers, Adam — adds "
                  f"{p['step_s'] - p['matmul_s']:.3f} s."]
    lines += ["", f"Where one default step's {p['step_s']:.3f} CPU s go, by aten op (self time per step, measured "
                  f"around each kernel with `thread_time`, so other jobs on the CPU do not inflate it); "
                  f"{p['outside_ops_s']:.3f} s ({100 * p['outside_ops_s'] / p['step_s']:.0f}%) are outside any op: "
                  f"Python, module calls, autograd and allocator bookkeeping.", "",
              "| op | CPU s per step | share of the step | calls per step |", "|---|---|---|---|"]
    for row in p["top"]:
        share = 100 * row["seconds"] / p["step_s"]
        lines.append(f"| `{row['op']}` | {row['seconds']:.3f} | {share:.0f}% | {row['calls']} |")
    t = r["threads"]
    cores = r["machine_threads_available"]
    lines += ["", "### Threads", "", f"The default step at each `--threads` (`0` = all {cores} cores here), each "
              f"run twice in a fresh process, {t['steps']} steps; wall seconds per step (the "
              "clock a second thread can improve) and the process's CPU seconds (all threads).", "",
              "| threads | wall s / step | speed-up | CPU s / step | same seed twice → identical JSONL |",
              "|---|---|---|---|---|"]
    one = next(iter(t["by_threads"].values()))["wall_s"]
    for n, row in t["by_threads"].items():
        lines.append(f"| {n} | {row['wall_s']:.3f} | {one / row['wall_s']:.2f}× | {row['cpu_s']:.3f} | "
                     f"{'yes' if row['reproduces'] else '**no**'} |")
    lines.append(f"\nAcross thread counts the JSONL is {'identical' if t['same_across_counts'] else 'not identical'} "
                 "(float sums split over threads round differently), which is why the notebooks stay at one thread.")
    lines += _growth_lines(r["growth"])
    lines += ["", "On CUDA: unmeasured (no GPU on this machine); `--device cuda` runs the same loop.", ""]
    lines += [*list(notes)[1:], ""]  # the reading of the profile and the levers tried, by hand (bench_report)
    return lines


def _growth_lines(g: dict[str, Any]) -> list[str]:
    f = g["fits"]
    lines = ["", "### How cost grows", "",
             f"One axis at a time from the defaults, each row a fresh process: one warm-up step (FLOPs counted), then "
             f"{g['steps']} timed; step in CPU seconds at one thread; tokens/s = completion tokens sampled per step ÷ "
             "step time; peak RSS of the process.", ""]
    for axis, title in (("batch_size", "batch size"), ("max_new_tokens", "new tokens (random-weight twin)"),
                        ("model", "model")):
        lines += [f"| {title} | tokens per completion | step s | tokens/s | GFLOP | GFLOP/s | peak RSS MB |",
                  "|---|---|---|---|---|---|---|"]
        for k, row in g[axis].items():
            lines.append(f"| {k} | {row['completion_len']:.1f} | {row['cpu_s']:.2f} | "
                         f"{row['tokens'] / row['cpu_s']:.0f} | {row['gflop']:.1f} | "
                         f"{row['gflop'] / row['cpu_s']:.0f} | {row['peak_rss_mb']:.0f} |")
        lines.append("")
    b, n = f["batch_size"], f["max_new_tokens"]
    gp = f["gpt2"]
    attn = 100 * (16 + max(map(int, g["max_new_tokens"]))) / (6 * 128)  # ≤ 16 prompt tokens, width 128
    lines += [f"Fits: step ≈ {b['a']:.3f} s + {1e3 * b['b']:.1f} ms × batch size (R² {b['r2']:.3f}, largest miss "
              f"{100 * b['max_rel_residual']:.0f}%); step ≈ {n['a']:.3f} s + {1e3 * n['b']:.1f} ms × new tokens "
              f"(R² {n['r2']:.3f}, largest miss {100 * n['max_rel_residual']:.0f}%). Peak RSS ≈ "
              f"{f['rss_vs_params']['a']:.0f} MB + {f['rss_vs_params']['b']:.1f} MB per million parameters (policy, "
              f"reference, gradient and Adam's two moments are 20 MB of it; the rest is activations). Cost stays "
              f"linear in tokens because attention's share of a layer's FLOPs is L/(6·width) for L positions: "
              f"at most {attn:.0f}% for the embedded model at its longest completions here, under 1% for GPT-2 "
              f"small's width at the default length; memory, not attention, is what grows fastest with model size.",
              "",
              f"`--model gpt2` (124M parameters, a 50,257-token vocabulary): GPT-2 small's shape ran at "
              f"{list(f['model_gflops'].values())[-1]:.0f} GFLOP/s here; its vocabulary makes the same step "
              f"≈ {gp['gflop_per_step']:.0f} GFLOP, so expect ≈ {gp['step_s_one_thread']:.0f} s per default step "
              f"at one thread (≈ {gp['tokens_per_s']:.0f} sampled tokens/s) and ≈ {gp['peak_rss_mb'] / 1024:.1f} GB "
              f"peak RSS plus the (batch, tokens, 50,257) logits. A laptop with more cores divides the time by about "
              f"the thread speed-up above (`--threads 0`); a smaller batch or fewer new tokens shrink it along the fits."]
    return lines


@dataclass
class BenchSpeedOptions(Options):
    """`python -m rlhf_nb.tools.bench_speed`: the speed section alone, or one of its parts."""

    quick: bool = option(False, "fewer steps, a short growth table (checks the tool only)")
    json_out: str | None = option(None, "write the result here (JSON)", nullable=True)
    only: str | None = option(None, "measure one part and print its JSON", choices=("growth", "threads"),
                              nullable=True)
    child: str | None = option(None, "internal: run one measured workload in this process",
                               choices=("threads", "growth"), nullable=True, hidden=True)
    child_out: str | None = option(None, "internal: where --child writes its JSON", nullable=True, hidden=True)

    def validate(self):
        super().validate()
        if self.child is not None and self.child_out is None:
            raise ConfigError("--child needs --child_out")
        return self


def check_options(o: BenchSpeedOptions) -> None:
    if o.json_out:  # before minutes of measuring
        check_file_writable(o.json_out, "--json_out")


def main(argv: list[str] | None = None) -> int:
    a = cli_from_dataclass(BenchSpeedOptions, argv, prog="python -m rlhf_nb.tools.bench_speed",
                           description=__doc__.split("\n\n")[0], check=check_options)
    if a.child:
        _child(a.child, json.loads(os.environ["RLHF_NB_SPEED_SPEC"]), Path(a.child_out))
        return 0
    if a.only:
        part = growth() if a.only == "growth" else threads_check()
        text = json.dumps(part, indent=1, default=str)
        Path(a.json_out).write_text(text) if a.json_out else print(text)
        return 0
    result, lines = speed_section(quick=a.quick)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(result, indent=1, default=str))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
