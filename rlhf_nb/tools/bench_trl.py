"""rlhf_nb's GRPO against TRL's GRPOTrainer on the same model, reward, prompts, batch, token budget, β and learning rate.

    from rlhf_nb.tools.bench_trl import compare_grpo
    r = compare_grpo(steps=20, batch_size=8, num_generations=8, max_new_tokens=8, kl_coef=0.05,
                     learning_rate=3e-4, seed=0)
    r["ratios"]  # rlhf_nb / TRL: median s/step, tokens/s, peak RSS

Each system runs in its own child process (sequentially), so each peak RSS (ru_maxrss of that child) is its own;
isolate=False runs both in this process and reports one combined peak RSS.
A step is one rollout of batch_size*num_generations completions plus its ppo_epochs*num_minibatches optimizer
steps; for TRL that is ppo_epochs*num_minibatches of its global steps, summed.
KL columns differ by definition: rlhf_nb logs Σ_t k1 per sequence (objective/kl); TRL logs the token mean of
[ratio·]k3 (kl); `kl_seq` = TRL's kl × mean completion length puts it on rlhf_nb's per-sequence scale.
"""
from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bridges.trl import ours_rows, quiet_trainer, trl_rows
from ..cli import cli_from_dataclass
from ..config import ConfigError, Options, RunConfig, check_file_writable, option
from ..course.plots import LABELS, plot_comparison


def _cfg(p: dict[str, Any], advantage: str = "grpo") -> RunConfig:
    """The RunConfig of one benchmark run; advantage="gae" is rlhf_nb's PPO on the same completions per step."""
    ppo = advantage == "gae"  # PPO: batch_size*num_generations distinct prompts, one completion each
    return RunConfig(
        model=p["model"], reward="sentiment", advantage=advantage, epochs=1, steps_per_epoch=p["steps"],
        batch_size=p["batch_size"] * (p["num_generations"] if ppo else 1),
        num_generations=1 if ppo else p["num_generations"], max_new_tokens=p["max_new_tokens"],
        kl_coef=p["kl_coef"], learning_rate=p["learning_rate"], seed=p["seed"], ppo_epochs=p["ppo_epochs"],
        num_minibatches=p["num_minibatches"], threads=p["threads"], progress=False,
        max_minutes=None if p["time_budget_s"] is None else p["time_budget_s"] / 60.0,
        kl_in_loss=not ppo,  # GRPO: β·k3 in the loss, as TRL's GRPOTrainer (same objective on both sides)
    )


def _run_ours(p: dict[str, Any], advantage: str = "grpo") -> dict[str, Any]:
    from ..train import setup, train

    t0 = time.perf_counter()
    cfg = _cfg(p, advantage)
    state = setup(cfg)
    setup_s = time.perf_counter() - t0
    hist = train(cfg, write_run=False, state=state).history
    return {"history": ours_rows(hist, cfg), "setup_s": setup_s}


def _run_trl(p: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ..bridges.trl import StepTimer, make_trl_trainer
    from ..seeding import seed_everything

    t0 = time.perf_counter()
    cfg = _cfg(p)
    seed_everything(cfg.seed, threads=cfg.threads)
    timer = StepTimer.make(p["time_budget_s"])
    trainer = quiet_trainer(make_trl_trainer(cfg, algo="grpo", callbacks=[timer]))
    setup_s = time.perf_counter() - t0
    trainer.train()
    return {"history": trl_rows(timer, cfg), "setup_s": setup_s}


def _child(system: str, params_file: str, out_file: str) -> None:
    p = json.loads(open(params_file).read())
    res = {"rlhf_nb": _run_ours, "trl": _run_trl, "rlhf_nb_ppo": lambda q: _run_ours(q, "gae")}[system](p)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    with open(out_file, "w") as f:
        json.dump(res, f)


def _in_child(system: str, p: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rlhf_nb_bench_") as d:
        pf, of = os.path.join(d, "params.json"), os.path.join(d, "out.json")
        with open(pf, "w") as f:
            json.dump(p, f)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([sys.executable, "-m", "rlhf_nb.tools.bench_trl", "--child", system, "--child_params", pf,
                               "--child_out", of],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{system} benchmark child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(open(of).read())


def _summary(res: dict[str, Any], budget_s: float) -> dict[str, Any]:
    h = res["history"]
    within = [row["reward"] for row in h if row["elapsed_s"] <= budget_s]
    total_s = sum(row["step_s"] for row in h)
    return {
        "steps": len(h),
        "setup_s": res["setup_s"],
        "median_step_s": statistics.median(row["step_s"] for row in h),
        "tokens_per_s": sum(row["tokens"] for row in h) / total_s,
        "wall_s": h[-1]["elapsed_s"],
        "reward_first": h[0]["reward"],
        "reward_last": h[-1]["reward"],
        # mean of the last (up to) 3 steps finished within the budget: one step's reward is noisy
        "reward_at_budget": statistics.fmean(within[-3:]) if within else float("nan"),
        "peak_rss_mb": res.get("peak_rss_mb"),
        "kl_seq_max": max(row["kl_seq"] for row in h),
    }


def compare_grpo(steps: int = 20, batch_size: int = 8, num_generations: int = 8, max_new_tokens: int = 8,
                 kl_coef: float = 0.05, learning_rate: float = 3e-4, seed: int = 0, time_budget_s: float | None = None,
                 ppo_epochs: int = 1, num_minibatches: int = 1, model: str = "embedded", threads: int = 1,
                 isolate: bool = True, include_ppo: bool = False) -> dict[str, Any]:
    """Run rlhf_nb's GRPO, then TRL's, with the same settings; return both histories, summaries and the ratios.

    Returns {"params", "rlhf_nb": {"history", "summary"}, "trl": {...}, "budget_s", "ratios", "rss_note"}.
    history rows: step, reward (mean sentiment score), kl (each system's own definition), kl_seq (per-sequence
    scale), step_s, elapsed_s (wall since training began), tokens (completion tokens sampled in the step).
    time_budget_s stops each run after the step that crosses it; the reward at budget uses it too
    (default: the shorter of the two wall times, so both are compared at the same moment).
    include_ppo: also run rlhf_nb's PPO (advantage="gae", batch_size*num_generations prompts, one completion each,
    so the same completions per step) and add {"rlhf_nb_ppo": {"history", "summary"}} to the result.
    """
    p = dict(steps=steps, batch_size=batch_size, num_generations=num_generations, max_new_tokens=max_new_tokens,
             kl_coef=kl_coef, learning_rate=learning_rate, seed=seed, time_budget_s=time_budget_s,
             ppo_epochs=ppo_epochs, num_minibatches=num_minibatches, model=model, threads=threads)
    _cfg(p)  # validate up front, before any child starts
    if isolate:
        ours, theirs = _in_child("rlhf_nb", p), _in_child("trl", p)
        rss_note = "peak RSS of each system's own child process (ru_maxrss), imports included"
    else:
        ours, theirs = _run_ours(p), _run_trl(p)
        ours["peak_rss_mb"] = theirs["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rss_note = "one combined figure: peak RSS of this process, which ran both systems"
    budget = time_budget_s if time_budget_s is not None else min(ours["history"][-1]["elapsed_s"],
                                                                theirs["history"][-1]["elapsed_s"])
    s_ours, s_trl = _summary(ours, budget), _summary(theirs, budget)
    ratios = {k: s_ours[k] / s_trl[k] for k in ("median_step_s", "tokens_per_s", "peak_rss_mb", "setup_s")
              if s_ours[k] and s_trl[k]}
    out = {"params": p, "budget_s": budget, "rss_note": rss_note, "ratios": ratios,
           "rlhf_nb": {"history": ours["history"], "summary": s_ours},
           "trl": {"history": theirs["history"], "summary": s_trl}}
    if include_ppo:
        ppo = _in_child("rlhf_nb_ppo", p) if isolate else _run_ours(p, "gae")
        ppo.setdefault("peak_rss_mb", None)
        out["rlhf_nb_ppo"] = {"history": ppo["history"], "summary": _summary(ppo, budget)}
    return out


# what `make bench` passes to compare_grpo: 64 completions of 8 tokens per step, plain on-policy GRPO
# (one PPO epoch, one minibatch); measured 36 s for all three children (rlhf_nb, TRL, PPO) on an idle 2-core CPU,
# 69 s on a busy one
BENCH_SETTINGS: dict[str, Any] = dict(steps=40, batch_size=8, num_generations=8, max_new_tokens=8, kl_coef=0.05,
                                      learning_rate=1e-3, seed=0, time_budget_s=None, ppo_epochs=1,
                                      num_minibatches=1, model="embedded", threads=1, include_ppo=True)

CURVES_PNG = Path(__file__).resolve().parents[2] / "docs" / "bench_trl_curves.png"


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _why(result: dict[str, Any]) -> str:
    """A few sentences read off the measured numbers: which system is faster, leaner, and whether the reward gap is noise."""
    o, t, r = result["rlhf_nb"]["summary"], result["trl"]["summary"], result["ratios"]
    parts = []
    step = r.get("median_step_s")
    if step is not None and abs(step - 1) < 0.1:
        parts.append(f"Per step the two are within 10 % of each other (median {o['median_step_s']:.3f} s for rlhf_nb, "
                     f"{t['median_step_s']:.3f} s for TRL): on a tiny model both spend their time in the same GPT-2 "
                     f"forward and backward passes, and a gap this small is within run-to-run noise on a shared CPU.")
    elif step is not None:
        faster, slower, k = ("TRL", "rlhf_nb", step) if step > 1 else ("rlhf_nb", "TRL", 1 / step)
        parts.append(f"Per step, {faster} is {k:.2f}× faster than {slower} here (median {o['median_step_s']:.3f} s "
                     f"vs {t['median_step_s']:.3f} s for rlhf_nb vs TRL).")
        if step > 1:
            parts.append("Part of the gap is by construction: TRL skips the old-log-prob forward pass when the update is "
                         "on-policy (difference 8 in docs/trl_bridge.md), and rlhf_nb's GRPO also samples with its own "
                         "Python KV-cache loop rather than `model.generate`.")
        else:
            parts.append("TRL's step carries more framework work per optimizer step (the Trainer loop, accelerate, "
                         "callbacks, `model.generate`), which a tiny model cannot amortise.")
    setup = r.get("setup_s")
    if setup is not None:
        parts.append(f"Setup takes {o['setup_s']:.1f} s for rlhf_nb and {t['setup_s']:.1f} s for TRL "
                     f"(TRL loads the reference model from disk, difference 11).")
    rss = r.get("peak_rss_mb")
    if rss is not None and result.get("rss_note", "").startswith("peak RSS of each"):
        parts.append(f"Peak memory is {rss:.2f}× TRL's ({o['peak_rss_mb']:.0f} vs {t['peak_rss_mb']:.0f} MB, imports included).")
    rewards = [row["reward"] for row in result["rlhf_nb"]["history"] + result["trl"]["history"]]
    if len(rewards) > 2:
        noise = statistics.stdev(rewards)
        gap = o["reward_at_budget"] - t["reward_at_budget"]
        if not math.isnan(gap):
            verdict = ("within" if abs(gap) <= noise else "beyond")
            parts.append(f"At the same wall budget ({result['budget_s']:.1f} s) the reward differs by {gap:+.3f}, "
                         f"{verdict} the step-to-step spread of the per-step reward ({noise:.3f}); the two runs draw "
                         f"different prompts (difference 9) and sample with different code (difference 10), so compare "
                         f"curves, not single steps; both optimise the same loss (rlhf_nb with `kl_in_loss=True`).")
    ko, kt = o.get("kl_seq_max"), t.get("kl_seq_max")
    if ko is not None and kt is not None and kt > 10 * max(ko, 1e-9):
        parts.append(f"TRL's logged KL peaks at {kt:.3g} per sequence against rlhf_nb's {ko:.3g} "
                     f"(rlhf_nb logs Σk1 of the rollout, TRL the k3 term of its loss, so the scales differ): its k3 = e^Δ − Δ − 1 "
                     f"(Δ = log ρ − log π_θ) grows exponentially when one sampled token is far less likely under the "
                     f"policy's training forward than under the reference, so a single token can dominate the mean.")
    return " ".join(parts)


def render_markdown(result: dict[str, Any], curves_png: str | Path | None = CURVES_PNG) -> list[str]:
    """The lines of the docs/benchmarks.md section "rlhf_nb vs TRL (GRPO), same machine, same run".

    Writes the learning-curve PNG to `curves_png` (None: no figure, no image line) and links it by file name,
    so it must sit next to the markdown file."""
    p, o, t, r = result["params"], result["rlhf_nb"]["summary"], result["trl"]["summary"], result["ratios"]
    lines = ["## rlhf_nb vs TRL (GRPO), same machine, same run", ""]
    lines.append(f"`rlhf_nb.tools.bench_trl.compare_grpo(**BENCH_SETTINGS)`: model `{p['model']}`, sentiment reward, "
                 f"{p['batch_size']} prompts × {p['num_generations']} generations = "
                 f"{p['batch_size'] * p['num_generations']} completions of ≤ {p['max_new_tokens']} tokens per step, "
                 f"β = {p['kl_coef']:g}, learning rate {p['learning_rate']:g}, {p['ppo_epochs']} PPO epoch(s) × "
                 f"{p['num_minibatches']} minibatch(es), {p['steps']} steps, seed {p['seed']}, {p['threads']} thread(s). "
                 f"Both run one after the other on this machine, each in its own process. Peak RSS: {result['rss_note']}.")
    lines += ["", "| | rlhf_nb | TRL | rlhf_nb / TRL |", "|---|---|---|---|"]
    rows = [("median seconds per step", "median_step_s", ".3f"), ("sampled tokens / s", "tokens_per_s", ".0f"),
            ("peak RSS (MB)", "peak_rss_mb", ".0f"), ("setup seconds", "setup_s", ".2f"), ("steps run", "steps", "d"),
            ("wall seconds, training", "wall_s", ".1f"), ("reward, first step", "reward_first", "+.3f"),
            ("reward, last step", "reward_last", "+.3f"),
            (f"reward at {result['budget_s']:.1f} s (mean of the last 3 steps within)", "reward_at_budget", "+.3f"),
            ("largest KL per sequence (each its own estimator)", "kl_seq_max", ".3g")]
    for name, key, spec in rows:
        ratio = r.get(key)
        lines.append(f"| {name} | {_fmt(o.get(key), spec)} | {_fmt(t.get(key), spec)} | "
                     f"{_fmt(ratio, '.2f') + '×' if ratio is not None else ''} |")
    if "rlhf_nb_ppo" in result:
        q = result["rlhf_nb_ppo"]["summary"]
        lines += ["", f"rlhf_nb's PPO (`advantage='gae'`, a value head, {p['batch_size'] * p['num_generations']} "
                      f"prompts × 1 completion, the same tokens, β and learning rate): median "
                      f"{q['median_step_s']:.3f} s per step, {q['median_step_s'] / o['median_step_s']:.2f}× rlhf_nb's "
                      f"GRPO step; reward first {q['reward_first']:+.3f}, last {q['reward_last']:+.3f}."]
    if curves_png is not None:
        runs = {LABELS[k]: result[k]["history"] for k in ("rlhf_nb", "trl", "rlhf_nb_ppo") if k in result}
        plot_comparison(runs, curves_png)
        lines += ["", f"![reward and KL of both runs, by step and by wall seconds]({Path(curves_png).name})"]
    lines += ["", "**Why.** " + _why(result), ""]
    return lines


@dataclass
class BenchTRLOptions(Options):
    """`python -m rlhf_nb.tools.bench_trl`: compare_grpo's arguments, and what to print or write."""

    steps: int = option(20, "GRPO steps of each system (RunConfig's --steps_per_epoch, one epoch)", 1, 100_000)
    batch_size: int = option(8, "prompts per step", 1, 4096)
    num_generations: int = option(8, "completions per prompt (a group; >= 2)", 2, 256)
    max_new_tokens: int = option(8, "tokens sampled per completion", 1, 4096)
    kl_coef: float = option(0.05, "beta: weight of the k3 KL term in the loss (both systems)", 0.0, 10.0)
    learning_rate: float = option(3e-4, "Adam learning rate (both systems)", 1e-8, 1.0)
    seed: int = option(0, "seed of both runs", 0, 2**32 - 1)
    time_budget_s: float | None = option(None, "stop each run after the step that crosses this many wall seconds "
                                         "(default: run all --steps; the reward is compared at the shorter run's end)",
                                         1.0, 86_400.0, nullable=True)
    ppo_epochs: int = option(1, "passes over each rollout batch", 1, 100)
    num_minibatches: int = option(1, "minibatches per pass (must divide batch_size*num_generations)", 1, 4096)
    model: str = option("embedded", "policy: 'embedded', a local HF folder, or a hub id")
    threads: int = option(1, "CPU threads of each system", 1, 256)
    include_ppo: bool = option(False, "also time rlhf_nb's PPO (advantage=gae) on the same completions per step")
    isolate: bool = option(True, "each system in its own child process, so each peak RSS is its own (false: both in "
                           "this process, one combined peak RSS)")
    markdown: bool = option(False, "print the docs/benchmarks.md section (writes docs/bench_trl_curves.png)")
    json_out: str | None = option(None, "write the full result (histories included) to this file", nullable=True)
    child: str | None = option(None, "internal: run one system in this process", choices=("rlhf_nb", "trl", "rlhf_nb_ppo"),
                               nullable=True, hidden=True)
    child_params: str | None = option(None, "internal: the JSON of compare_grpo's settings for --child", nullable=True,
                                      hidden=True)
    child_out: str | None = option(None, "internal: where --child writes its JSON", nullable=True, hidden=True)

    def validate(self):
        super().validate()
        if self.child is not None and (self.child_params is None or self.child_out is None):
            raise ConfigError("--child needs --child_params and --child_out")
        if self.child is None:
            _cfg(self.params())  # the very RunConfig the benchmark runs: its cross-field rules, named by its flags
        return self

    def params(self) -> dict[str, Any]:
        """compare_grpo's keyword arguments."""
        skip = ("markdown", "json_out", "child", "child_params", "child_out")
        return {k: v for k, v in self.to_dict().items() if k not in skip}


def check_options(o: BenchTRLOptions) -> None:
    """Before either system loads a model: the output can be written, the model loads."""
    if o.child is not None:
        return
    if o.json_out:
        check_file_writable(o.json_out, "--json_out")
    from ..policy import model_context_length

    try:
        model_context_length(o.model)  # a model that does not load fails here, in one line
    except OSError as e:
        raise ConfigError(str(e)) from None


def main(argv: list[str] | None = None) -> None:
    o = cli_from_dataclass(BenchTRLOptions, argv, prog="python -m rlhf_nb.tools.bench_trl",
                           description=__doc__.splitlines()[0], check=check_options)
    if o.child is not None:
        _child(o.child, o.child_params, o.child_out)
        return
    r = compare_grpo(**o.params())
    if o.json_out:
        Path(o.json_out).write_text(json.dumps(r, indent=1))
    print(json.dumps({"params": r["params"], "budget_s": r["budget_s"], "rlhf_nb": r["rlhf_nb"]["summary"],
                      "trl": r["trl"]["summary"], "ratios": r["ratios"], "rss_note": r["rss_note"],
                      **({"rlhf_nb_ppo": r["rlhf_nb_ppo"]["summary"]} if "rlhf_nb_ppo" in r else {})}, indent=2))
    if o.markdown:
        print("\n".join(render_markdown(r)))


if __name__ == "__main__":
    main()
