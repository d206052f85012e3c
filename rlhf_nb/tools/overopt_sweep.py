"""`make overopt`: best-of-n and PPO against each proxy, scored by the gold (rlhf_nb/assets/overopt-sweep.json).

Best-of-n: `bon_samples` base completions of every prompt (several sampling seeds), scored by each proxy and the
gold; the unbiased estimator of `overopt.best_of_n` gives n = 1 ... 256. RL: `rlhf_nb.train`'s PPO on each proxy
at each KL coefficient and seed, the policy scored every `eval_every` steps (`overopt.rl_curve`). Lesson 08 and
docs/overoptimisation.md read the JSON; nothing in it is re-derived by hand.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..corpus import PROMPTS
from ..overopt import (BON_NS, PROXY_SIZES, SWEEP_PATH, best_of_n_curve, load_proxy_metrics, proxy_dir, rl_curve,
                       sample_base, score_samples)
from ..rewards import LearnedReward

RL_KEYS = ("step", "kl", "d", "proxy", "gold", "well_formed", "pref_accuracy", "disagreement")


@dataclass
class SweepConfig:
    """What `python -m rlhf_nb.tools.overopt_sweep` runs."""

    proxies: list[int] = field(default_factory=lambda: list(PROXY_SIZES))
    """proxy reward models (training pairs) to optimise"""
    bon_samples: int = 512
    """base completions per prompt for best-of-n (>= the largest n, 256)"""
    bon_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """sampling seeds for best-of-n (the spread between them is the band)"""
    kl_coefs: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.05])
    """PPO KL coefficients"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """PPO seeds"""
    steps: int = 150
    """PPO steps per run"""
    learning_rate: float = 1e-4
    """PPO learning rate: at RunConfig's 3e-4 the gold's rise is over within ~5 steps (KL < 0.5), too fast to see"""
    batch_size: int = 32
    """prompts per PPO step"""
    max_new_tokens: int = 12
    """tokens per completion (best-of-n and PPO alike; the proxies' pairs used the same)"""
    eval_every: int = 5
    """score the policy (128 samples, a fixed seed) every this many steps"""
    out: str = str(SWEEP_PATH)
    """the JSON to write"""


def parse_args(argv=None) -> SweepConfig:
    """A SweepConfig from the command line; a bad value is one line naming the flag, before any work."""
    p = argparse.ArgumentParser(prog="python -m rlhf_nb.tools.overopt_sweep", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(SweepConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, (int, float, str)):
            p.add_argument(flag, type=type(f.default), default=f.default)
        else:
            item = float if f.name == "kl_coefs" else int
            p.add_argument(flag, type=item, nargs="+", default=f.default_factory())
    cfg = SweepConfig(**vars(p.parse_args(argv)))
    if cfg.bon_samples < max(BON_NS):
        p.exit(2, f"error: --bon-samples must be >= {max(BON_NS)} (the largest n), got {cfg.bon_samples}\n")
    for k in cfg.proxies:
        if not Path(proxy_dir(k), "config.json").is_file():
            p.exit(2, f"error: --proxies: no proxy-rm-{k} under rlhf_nb/assets (build it with `make proxies`)\n")
    try:  # RunConfig's own ranges and messages (they name RunConfig's flags, e.g. --steps_per_epoch)
        for b in cfg.kl_coefs:
            RunConfig(steps_per_epoch=cfg.steps, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                      learning_rate=cfg.learning_rate, kl_coef=b)
    except ConfigError as e:
        p.exit(2, f"error: {e}\n")
    if cfg.eval_every < 1:
        p.exit(2, f"error: --eval-every must be >= 1, got {cfg.eval_every}\n")
    return cfg


def _round(row: dict, keys=None, digits: int = 4) -> dict:
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in row.items() if keys is None or k in keys}


def main(argv=None) -> dict:
    from ..policy import load_policy
    from ..seeding import seed_everything
    cfg = parse_args(argv)
    seed_everything(0)
    t0 = time.process_time()
    judges = {k: LearnedReward(proxy_dir(k), batch_size=256) for k in cfg.proxies}
    base_std = {k: load_proxy_metrics(k)["reward_std_on_base"] for k in cfg.proxies}
    out = {"config": dataclasses.asdict(cfg), "command": "python -m rlhf_nb.tools.overopt_sweep  (make overopt)",
           "proxies": {str(k): _round({m: load_proxy_metrics(k)[m] for m in
                                       ("accuracy", "grammar_accuracy", "pearson", "reward_std_on_base")})
                       for k in cfg.proxies},
           "bon": {str(k): {} for k in cfg.proxies}, "rl": []}

    # best-of-n: the same base samples for every proxy, so proxies differ only in which sample they pick
    model, tok = load_policy()
    for seed in cfg.bon_seeds:
        comps = sample_base(PROMPTS, cfg.bon_samples, cfg.max_new_tokens, seed, model, tok)
        scores = score_samples(PROMPTS, comps, judges)
        for k in cfg.proxies:
            rows = best_of_n_curve(scores[k], scores["gold"], BON_NS)
            out["bon"][str(k)][str(seed)] = [_round(r) for r in rows]
            print(f"best-of-n seed {seed} proxy-rm-{k}: gold " + " ".join(f"{r['gold']:+.3f}" for r in rows), flush=True)
        print(f"  cpu {time.process_time() - t0:.0f}s", flush=True)

    # PPO on each proxy
    for k in cfg.proxies:
        for beta in cfg.kl_coefs:
            for seed in cfg.seeds:
                rc = RunConfig(reward="learned", reward_model=proxy_dir(k), kl_coef=beta, seed=seed,
                               steps_per_epoch=cfg.steps, batch_size=cfg.batch_size,
                               max_new_tokens=cfg.max_new_tokens, learning_rate=cfg.learning_rate, progress=False)
                rows = rl_curve(rc, cfg.eval_every, judges=judges, base_std=base_std)
                out["rl"].append({"proxy": k, "kl_coef": beta, "seed": seed, "algo": "ppo",
                                  "rows": [_round(r, RL_KEYS) for r in rows]})
                best = max(rows, key=lambda r: r["gold"])
                print(f"ppo proxy-rm-{k} beta {beta:g} seed {seed}: gold {rows[0]['gold']:+.3f} -> peak "
                      f"{best['gold']:+.3f} at step {best['step']} (kl {best['kl']:.1f}) -> {rows[-1]['gold']:+.3f} "
                      f"(kl {rows[-1]['kl']:.1f}, proxy {rows[-1]['proxy']:+.2f}); cpu {time.process_time() - t0:.0f}s",
                      flush=True)
                Path(cfg.out).write_text(json.dumps(out, separators=(",", ":")) + "\n")  # partial results survive
    out["cpu_seconds"] = round(time.process_time() - t0)
    Path(cfg.out).write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {cfg.out} ({out['cpu_seconds']} CPU s)")
    return out


if __name__ == "__main__":
    main()
