"""Lesson 12's experiment: RL from a verifiable reward (GRPO, GRPO + KL, PPO) and expert iteration on the arithmetic
task, each judged by EXACT pass@k on the held-out prompts (rlhf_nb.passk). `make verifiable` runs every method x seed
once and stores it (rlhf_nb/assets/verifiable-sweep.json); the lesson reads the file and re-runs one run live."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..passk import correct_probs, exact_pass_at_k
from ..tasks import ARITH_MAX_NEW_TOKENS, ARITH_MODEL_DIR, answer_of, arith_split, check_answer

VERIFIABLE_PATH = Path(__file__).resolve().parents[1] / "assets" / "verifiable-sweep.json"
VERIFIABLE_SEEDS = (0, 1, 2)
KS = tuple(2**i for i in range(9))  # 1 ... 256
COMMON = {"task": "arithmetic", "max_new_tokens": ARITH_MAX_NEW_TOKENS, "steps": 300, "learning_rate": 3e-4,
          "lr_warmup_steps": 10}
GROUP = {"batch_size": 16, "num_generations": 8}  # 128 samples a step for every method
METHODS: dict[str, dict[str, Any]] = {
    "GRPO (dapo, beta 0)": {**GROUP, "advantage": "grpo", "loss_type": "dapo", "kl_coef": 0.0},  # TRL's defaults
    "GRPO + KL (beta 0.05)": {**GROUP, "advantage": "grpo", "loss_type": "dapo", "kl_coef": 0.05},  # the kit's
    "PPO (beta 0.05)": {"batch_size": 128, "num_generations": 1, "advantage": "gae", "kl_coef": 0.05},
    # no RL: SFT on the checker's accepted samples; a step costs less than an RL step (no reference, no clipped
    # ratio), so it gets more steps: 410 took the CPU time of 300 RL steps (rlhf_nb/assets/verifiable-sweep.json)
    "expert iteration": {**GROUP, "kl_coef": 0.0, "steps": 410},
}
HISTORY_KEYS = ("objective/scores", "policy/entropy", "rollout/completion_len", "objective/kl")
PRUNE = 1e-9  # correct_probs cuts prefixes below this probability; the stored remainder bounds what it cut


def config_for(method: str, seed: int) -> RunConfig:
    s = {**COMMON, **METHODS[method]}
    steps = s.pop("steps")
    if method == "expert iteration":
        s["advantage"] = "grpo"  # unused by expert iteration; a valid config needs one with 8 generations
    return RunConfig(seed=seed, steps_per_epoch=steps, epochs=1, progress=False, device="cpu", **s)


def heldout() -> tuple[list[str], list[str]]:
    """(held-out prompts, their answers)."""
    _, held = arith_split()
    return held, [answer_of(p) for p in held]


def exact_p(model, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(p, remainder) on the held-out prompts: the exact probability that one sample is correct (rlhf_nb.passk)."""
    prompts, answers = heldout()
    return correct_probs(model, tokenizer, prompts, answers, ARITH_MAX_NEW_TOKENS, prune=PRUNE)


def base_p() -> tuple[np.ndarray, np.ndarray]:
    from ..policy import load_policy

    return exact_p(*load_policy(str(ARITH_MODEL_DIR)))


def run_method(method: str, seed: int) -> dict[str, Any]:
    """One run, as stored: its settings, per-step HISTORY_KEYS, the held-out p after it, its remainder, CPU seconds."""
    from ..expert_iteration import expert_iteration
    from ..train import train

    t0 = time.process_time()
    cfg = config_for(method, seed)
    if method == "expert iteration":
        state, history = expert_iteration(cfg)
    else:
        res = train(cfg, write_run=False)
        state, history = res.state, res.history
    cpu_s = time.process_time() - t0
    p, rest = exact_p(state.policy, state.tokenizer)
    return {"method": method, "seed": seed, "cpu_s": round(cpu_s, 1),
            "history": [{k: round(h[k], 6) for k in HISTORY_KEYS if k in h} for h in history],
            "p": [round(float(x), 6) for x in p], "remainder_max": float(rest.max())}


def load_verifiable(path: str | Path = VERIFIABLE_PATH) -> dict[str, Any]:
    d = json.loads(Path(path).read_text())
    d["base_p"] = np.array(d["base_p"])
    for runs in d["runs"].values():
        for r in runs:
            r["p"] = np.array(r["p"])
    return d


def curves(d: dict[str, Any], ks=KS) -> dict[str, np.ndarray]:
    """Exact pass@k per method: (seeds, len(ks)); 'base model': (1, len(ks))."""
    out = {"base model": exact_pass_at_k(d["base_p"], ks)[None]}
    for m, runs in d["runs"].items():
        out[m] = np.stack([exact_pass_at_k(r["p"], ks) for r in runs])
    return out


def crossing(base: np.ndarray, runs: np.ndarray, ks=KS) -> dict[str, Any]:
    """Where a method's band leaves the base curve: the k's where every seed is above the base, and where every seed
    is below it (band separated), and the first k at which the seed mean drops below the base."""
    ks = list(ks)
    above = [k for k, b, col in zip(ks, base, runs.T) if col.min() > b]
    below = [k for k, b, col in zip(ks, base, runs.T) if col.max() < b]
    mean_below = [k for k, b, col in zip(ks, base, runs.T) if col.mean() < b]
    return {"above": above, "below": below, "mean_crosses_at": mean_below[0] if mean_below else None}


def summary_table(d: dict[str, Any], ks=(1, 16, 256)) -> list[dict[str, Any]]:
    """pass@k per method: mean [min, max] over seeds."""
    rows = []
    for name, c in curves(d, ks).items():
        rows.append({"method": name, **{f"pass@{k}": f"{c[:, i].mean():.3f} [{c[:, i].min():.3f}, {c[:, i].max():.3f}]"
                                        for i, k in enumerate(ks)}})
    return rows


def prompt_shift(d: dict[str, Any], method: str) -> dict[str, Any]:
    """Per held-out prompt, the seed-mean change of p after `method`: which prompts lose probability on the correct
    answer (support narrowing) and which gain. Returns counts and the prompts that lose most."""
    prompts, answers = heldout()
    after = np.mean([r["p"] for r in d["runs"][method]], axis=0)
    delta = after - d["base_p"]
    order = np.argsort(delta)
    lost = [(prompts[i], answers[i], float(d["base_p"][i]), float(after[i])) for i in order[:8] if delta[i] < 0]
    return {"gain": int((delta > 0.01).sum()), "lose": int((delta < -0.01).sum()), "delta": delta, "lost": lost,
            "lose_all_seeds": int(np.all([r["p"] < d["base_p"] - 0.01 for r in d["runs"][method]], axis=0).sum())}


def verdict_counts(prompts: list[str], completions: list[str]) -> dict[str, int]:
    v = [check_answer(p, c) for p, c in zip(prompts, completions)]
    return {k: v.count(k) for k in ("correct", "wrong", "malformed")}


def plot_passk(d: dict[str, Any], ks=tuple(range(1, 257)), title: str = ""):
    """Exact pass@k against k (log axis): the base model's curve and each method's seed band (min-max) and mean."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, rel in zip(axes, (False, True)):
        base = curves(d, ks)["base model"][0]
        for i, (name, c) in enumerate(curves(d, ks).items()):
            y = c - base if rel else c
            color = "black" if name == "base model" else f"C{i - 1}"
            ax.plot(ks, y.mean(0), color=color, label=name, lw=2 if name == "base model" else 1.5)
            if len(c) > 1:
                ax.fill_between(ks, y.min(0), y.max(0), color=color, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (samples per prompt)")
        ax.set_ylabel("pass@k minus the base model's" if rel else "exact pass@k (held-out prompts)")
        ax.axhline(0, color="gray", lw=0.5) if rel else None
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "exact pass@k; bands: min-max over 3 seeds")
    fig.tight_layout()
    return fig


def plot_shift(d: dict[str, Any], methods=None):
    """Per held-out prompt: p after RL (seed mean) against p before; below the diagonal: the prompt lost mass."""
    import matplotlib.pyplot as plt

    methods = list(methods or d["runs"])
    fig, axes = plt.subplots(1, len(methods), figsize=(3.3 * len(methods), 3.3), sharey=True)
    for ax, m in zip(np.atleast_1d(axes), methods):
        after = np.mean([r["p"] for r in d["runs"][m]], axis=0)
        ax.scatter(d["base_p"], after, s=6, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="gray", lw=0.8)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("p before (base model)")
    np.atleast_1d(axes)[0].set_ylabel("p after (mean of 3 seeds)")
    fig.tight_layout()
    return fig


def plot_training(d: dict[str, Any], keys=("objective/scores", "policy/entropy", "rollout/completion_len"),
                  smooth: int = 10):
    """Per-step metrics of every method: seed mean (moving average over `smooth` steps) and min-max band."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.3))
    kernel = np.ones(smooth) / smooth
    for ax, key in zip(axes, keys):
        for i, (m, runs) in enumerate(d["runs"].items()):
            ys = np.array([[h[key] for h in r["history"]] for r in runs])
            ys = np.array([np.convolve(y, kernel, mode="valid") for y in ys])
            x = np.arange(ys.shape[1]) + smooth
            ax.plot(x, ys.mean(0), color=f"C{i}", label=m)
            ax.fill_between(x, ys.min(0), ys.max(0), color=f"C{i}", alpha=0.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
