"""rlhf_nb's GRPO against TRL's GRPOTrainer on the same model, reward, prompts, batch, token budget, β and learning rate.

    from rlhf_nb.bench_trl import compare_grpo
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
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from .config import RunConfig


def _cfg(p: dict[str, Any]) -> RunConfig:
    return RunConfig(
        model=p["model"], reward="sentiment", advantage="grpo", epochs=1, steps_per_epoch=p["steps"],
        batch_size=p["batch_size"], num_generations=p["num_generations"], max_new_tokens=p["max_new_tokens"],
        kl_coef=p["kl_coef"], learning_rate=p["learning_rate"], seed=p["seed"], ppo_epochs=p["ppo_epochs"],
        num_minibatches=p["num_minibatches"], threads=p["threads"], progress=False,
        max_minutes=None if p["time_budget_s"] is None else p["time_budget_s"] / 60.0,
    )


def _run_ours(p: dict[str, Any]) -> dict[str, Any]:
    from .train import setup, train

    t0 = time.perf_counter()
    cfg = _cfg(p)
    state = setup(cfg)
    setup_s = time.perf_counter() - t0
    hist = train(cfg, write_run=False, state=state).history
    n = cfg.batch_size * cfg.num_generations
    rows = [{"step": h["step"], "reward": h["objective/scores"], "kl": h["objective/kl"], "kl_seq": h["objective/kl"],
             "step_s": h["time/step_s"], "elapsed_s": h["time/elapsed_s"], "tokens": h["rollout/completion_len"] * n}
            for h in hist]
    return {"history": rows, "setup_s": setup_s}


def _run_trl(p: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .bridges.trl import StepTimer, make_trl_trainer
    from .seeding import seed_everything

    t0 = time.perf_counter()
    cfg = _cfg(p)
    seed_everything(cfg.seed, threads=cfg.threads)
    timer = StepTimer.make(p["time_budget_s"])
    trainer = make_trl_trainer(cfg, algo="grpo", callbacks=[timer])
    setup_s = time.perf_counter() - t0
    trainer.train()
    per = cfg.ppo_epochs * cfg.num_minibatches  # TRL optimizer steps per rollout
    n = cfg.batch_size * cfg.num_generations
    rows = []
    for r in range(len(timer.step_s) // per):
        logs = [log for log in timer.logs if r * per < log["global_step"] <= (r + 1) * per]
        gen = next((log for log in logs if "reward" in log), None)
        if gen is None:
            break
        kl = statistics.fmean(log.get("kl", 0.0) for log in logs)  # token mean of [ratio·]k3, over the update
        length = gen["completions/mean_length"]
        rows.append({"step": r + 1, "reward": gen["reward"], "kl": kl, "kl_seq": kl * length,
                     "step_s": sum(timer.step_s[r * per:(r + 1) * per]), "elapsed_s": logs[-1]["elapsed_s"],
                     "tokens": length * n})
    return {"history": rows, "setup_s": setup_s}


def _child(system: str, params_file: str, out_file: str) -> None:
    p = json.loads(open(params_file).read())
    res = (_run_ours if system == "rlhf_nb" else _run_trl)(p)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    with open(out_file, "w") as f:
        json.dump(res, f)


def _in_child(system: str, p: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rlhf_nb_bench_") as d:
        pf, of = os.path.join(d, "params.json"), os.path.join(d, "out.json")
        with open(pf, "w") as f:
            json.dump(p, f)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([sys.executable, "-m", "rlhf_nb.bench_trl", "_child", system, pf, of],
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
    }


def compare_grpo(steps: int = 20, batch_size: int = 8, num_generations: int = 8, max_new_tokens: int = 8,
                 kl_coef: float = 0.05, learning_rate: float = 3e-4, seed: int = 0, time_budget_s: float | None = None,
                 ppo_epochs: int = 1, num_minibatches: int = 1, model: str = "embedded", threads: int = 1,
                 isolate: bool = True) -> dict[str, Any]:
    """Run rlhf_nb's GRPO, then TRL's, with the same settings; return both histories, summaries and the ratios.

    Returns {"params", "rlhf_nb": {"history", "summary"}, "trl": {...}, "budget_s", "ratios", "rss_note"}.
    history rows: step, reward (mean sentiment score), kl (each system's own definition), kl_seq (per-sequence
    scale), step_s, elapsed_s (wall since training began), tokens (completion tokens sampled in the step).
    time_budget_s stops each run after the step that crosses it; the reward at budget uses it too
    (default: the shorter of the two wall times, so both are compared at the same moment).
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
    return {"params": p, "budget_s": budget, "rss_note": rss_note, "ratios": ratios,
            "rlhf_nb": {"history": ours["history"], "summary": s_ours},
            "trl": {"history": theirs["history"], "summary": s_trl}}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_child":
        _child(*argv[1:4])
        return
    import argparse

    ap = argparse.ArgumentParser(prog="python -m rlhf_nb.bench_trl", description=compare_grpo.__doc__.splitlines()[0])
    for name, default in (("steps", 20), ("batch_size", 8), ("num_generations", 8), ("max_new_tokens", 8),
                          ("kl_coef", 0.05), ("learning_rate", 3e-4), ("seed", 0), ("time_budget_s", None),
                          ("ppo_epochs", 1), ("num_minibatches", 1), ("model", "embedded"), ("threads", 1)):
        ap.add_argument(f"--{name}", type=type(default) if default is not None else float, default=default)
    r = compare_grpo(**vars(ap.parse_args(argv)))
    print(json.dumps({"params": r["params"], "budget_s": r["budget_s"], "rlhf_nb": r["rlhf_nb"]["summary"],
                      "trl": r["trl"]["summary"], "ratios": r["ratios"], "rss_note": r["rss_note"]}, indent=2))


if __name__ == "__main__":
    main()
