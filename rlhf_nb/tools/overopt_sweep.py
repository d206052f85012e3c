"""`make overopt`: best-of-n and PPO against each proxy, scored by the gold (rlhf_nb/assets/overopt-sweep.json).

Best-of-n: `bon_samples` base completions of every prompt (several sampling seeds), scored by each proxy and the
gold; the unbiased estimator of `overopt.best_of_n` gives n = 1 ... 2048. RL: `rlhf_nb.train`'s PPO on each proxy
at each KL coefficient and seed, the policy scored every `eval_every` steps (`overopt.rl_curve`). Lesson 08 and
docs/overoptimisation.md read the JSON; nothing in it is re-derived by hand.

    python -m rlhf_nb.tools.overopt_sweep                         # both parts (make overopt)
    python -m rlhf_nb.tools.overopt_sweep --parts bon --jobs 2    # best-of-n only; the RL rows stay as written
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..cli import cli_from_dataclass
from ..config import ConfigError, Options, RunConfig, check_output_file, option
from ..corpus import PROMPTS
from ..overopt import (BON_NS, PROXY_SIZES, SWEEP_PATH, best_of_n_curve, load_proxy_metrics, proxy_dir, rl_curve,
                       base_completions, score_samples)
from ..rewards import LearnedReward
from ..runlog import write_json_atomically
from . import parallel_map

RL_KEYS = ("step", "kl", "d", "proxy", "gold", "well_formed", "pref_accuracy", "disagreement")


# the PPO update the sweep was designed and stored with (RunConfig's defaults until 2026-12-05): four passes of two
# minibatches at a constant rate, so that over-optimisation unfolds over the 150 steps instead of being over at once
PPO_UPDATE = dict(ppo_epochs=4, num_minibatches=2, lr_decay="constant", vf_coef=0.1)


@dataclass
class SweepConfig(Options):
    """What `python -m rlhf_nb.tools.overopt_sweep` runs (stored as the JSON's "config", less --parts, --jobs, --out).

    --steps is the sweep's name for the length of each PPO run: one epoch of RunConfig's --steps_per_epoch."""

    proxies: tuple[int, ...] = option(PROXY_SIZES, "proxy reward models to optimise, by their training pairs "
                                      "(rlhf_nb/assets/proxy-rm-K, built by `make proxies`)", 1, 1_000_000)
    bon_samples: int = option(8192, f"base completions per prompt for best-of-n: at least the largest n "
                              f"({max(BON_NS)}); 4x it by default, so that even n = {max(BON_NS)} averages over many "
                              f"subsets (with N = n the estimate is a single argmax per prompt)", max(BON_NS), 10_000_000)
    bon_seeds: tuple[int, ...] = option((0, 1, 2), "sampling seeds for best-of-n (the spread between them is the band)",
                                        0, 2**32 - 1)
    kl_coefs: tuple[float, ...] = option((0.0, 0.02, 0.05), "PPO KL coefficients", 0.0, 10.0)
    seeds: tuple[int, ...] = option((0, 1, 2), "PPO seeds", 0, 2**32 - 1)
    steps: int = option(150, "PPO steps per run (RunConfig's --steps_per_epoch, one epoch)", 1, 100_000)
    learning_rate: float = option(1e-4, "PPO learning rate: at 3e-4 (with PPO_UPDATE) the gold's rise is over within "
                                  "about 5 steps (KL < 0.5), too fast to see", 1e-8, 1.0)
    batch_size: int = option(32, f"prompts per PPO step (a multiple of PPO_UPDATE's "
                             f"{PPO_UPDATE['num_minibatches']} minibatches)", 1, 4096)
    max_new_tokens: int = option(12, "tokens per completion (best-of-n and PPO alike; the proxies' pairs used the "
                                 "same)", 1, 4096)
    eval_every: int = option(5, "score the policy (128 samples, a fixed seed) every this many PPO steps", 1, 100_000)
    out: str = option(str(SWEEP_PATH), "the JSON to write (replaced atomically, after each PPO run and at the end)")
    overwrite: bool = option(False, "replace a JSON that is a committed asset (the default --out): without it, a "
                             "sweep over rlhf_nb/assets is refused before any work")
    parts: tuple[str, ...] = option(("bon", "rl"), "what to (re)compute; a part left out keeps its rows from the JSON "
                                    "already at --out", choices=("bon", "rl"))
    jobs: int = option(1, "processes for best-of-n, one sampling seed each (each seed's samples are the same at any "
                       "--jobs)", 1, 64)

    def validate(self):
        super().validate()
        if self.batch_size % PPO_UPDATE["num_minibatches"]:
            raise ConfigError(f"--batch_size must be a multiple of {PPO_UPDATE['num_minibatches']} (PPO_UPDATE's "
                              f"minibatches), got {self.batch_size}")
        for b in self.kl_coefs:  # RunConfig's own rules on the runs the sweep makes
            self.run_config(b)
        return self

    def run_config(self, kl_coef: float, **changes) -> RunConfig:
        """The RunConfig of one PPO run of the sweep."""
        return RunConfig(steps_per_epoch=self.steps, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                         learning_rate=self.learning_rate, kl_coef=kl_coef, progress=False, **PPO_UPDATE, **changes)


def check_options(cfg: SweepConfig) -> None:
    """Before any work: the proxies exist, a part kept has a file to come from, the JSON can be written."""
    for k in cfg.proxies:
        if not Path(proxy_dir(k), "config.json").is_file():
            raise ConfigError(f"--proxies: no proxy-rm-{k} under rlhf_nb/assets (build it with `make proxies`)")
    if set(cfg.parts) != {"bon", "rl"} and not Path(cfg.out).is_file():
        raise ConfigError(f"--parts {' '.join(cfg.parts)} keeps the other part from --out, but {cfg.out} does not "
                          f"exist")
    check_output_file(cfg.out, cfg.overwrite)


def parse_args(argv=None) -> SweepConfig:
    """A SweepConfig from the command line; a bad value is one line naming the flag, before any work."""
    return cli_from_dataclass(SweepConfig, argv, prog="python -m rlhf_nb.tools.overopt_sweep",
                              description=__doc__.split("\n\n")[0], check=check_options)


def _round(row: dict, keys=None, digits: int = 4) -> dict:
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in row.items() if keys is None or k in keys}


def _bon_seed(cfg: SweepConfig, seed: int) -> dict[str, list[dict]]:
    """Best-of-n curves of one sampling seed, {proxy: rows}: the same base samples for every proxy, so proxies
    differ only in which sample they pick. One thread, whatever process it runs in."""
    import torch

    from ..policy import load_policy
    torch.set_num_threads(1)
    judges = {k: LearnedReward(proxy_dir(k), batch_size=256) for k in cfg.proxies}
    model, tok = load_policy()
    comps = base_completions(PROMPTS, cfg.bon_samples, cfg.max_new_tokens, seed, model, tok)
    scores = score_samples(PROMPTS, comps, judges)
    return {str(k): [_round(r) for r in best_of_n_curve(scores[k], scores["gold"], BON_NS)] for k in cfg.proxies}


def main(argv=None) -> dict:
    from ..seeding import seed_everything
    cfg = parse_args(argv)
    seed_everything(0)
    t0 = time.process_time()
    judges = {k: LearnedReward(proxy_dir(k), batch_size=256) for k in cfg.proxies}
    base_std = {k: load_proxy_metrics(k)["reward_std_on_base"] for k in cfg.proxies}
    old = json.loads(Path(cfg.out).read_text()) if set(cfg.parts) != {"bon", "rl"} else {}
    out = {"config": dataclasses.asdict(cfg), "command": "python -m rlhf_nb.tools.overopt_sweep  (make overopt)",
           "proxies": {str(k): _round({m: load_proxy_metrics(k)[m] for m in
                                       ("accuracy", "grammar_accuracy", "pearson", "reward_std_on_base")})
                       for k in cfg.proxies},
           "bon": {str(k): {} for k in cfg.proxies}, "rl": []}
    for part in ("bon", "rl"):
        if part not in cfg.parts:  # kept as written, with the settings that made it
            out[part] = old[part]
            keys = ("bon_samples", "bon_seeds") if part == "bon" else \
                ("kl_coefs", "seeds", "steps", "learning_rate", "batch_size", "eval_every")
            out["config"].update({k: old["config"][k] for k in keys})
    for k in ("parts", "jobs", "out", "overwrite"):
        out["config"].pop(k)
    # CPU seconds of each part; a part kept from a file that did not record its own is None (unknown)
    cpu = {part: old.get("cpu_seconds_by_part", {}).get(part) for part in ("bon", "rl")}

    if "bon" in cfg.parts:  # child processes' CPU is counted too (children's times once they have ended)
        c0 = time.process_time() + _children_cpu()
        bon = parallel_map(functools.partial(_bon_seed, cfg), cfg.bon_seeds, cfg.jobs)  # one sampling seed each
        for seed, curves in zip(cfg.bon_seeds, bon):
            for k, rows in curves.items():
                out["bon"][k][str(seed)] = rows
                print(f"best-of-n seed {seed} proxy-rm-{k}: gold " + " ".join(f"{r['gold']:+.3f}" for r in rows),
                      flush=True)
        cpu["bon"] = time.process_time() + _children_cpu() - c0
        print(f"  best-of-n: {cpu['bon']:.0f} CPU s", flush=True)

    # PPO on each proxy
    c0 = time.process_time()
    for k in (cfg.proxies if "rl" in cfg.parts else []):
        for beta in cfg.kl_coefs:
            for seed in cfg.seeds:
                rc = cfg.run_config(beta, reward="learned", reward_model=proxy_dir(k), seed=seed)
                rows = rl_curve(rc, cfg.eval_every, judges=judges, base_std=base_std)
                out["rl"].append({"proxy": k, "kl_coef": beta, "seed": seed, "algo": "ppo",
                                  "rows": [_round(r, RL_KEYS) for r in rows]})
                best = max(rows, key=lambda r: r["gold"])
                print(f"ppo proxy-rm-{k} beta {beta:g} seed {seed}: gold {rows[0]['gold']:+.3f} -> peak "
                      f"{best['gold']:+.3f} at step {best['step']} (kl {best['kl']:.1f}) -> {rows[-1]['gold']:+.3f} "
                      f"(kl {rows[-1]['kl']:.1f}, proxy {rows[-1]['proxy']:+.2f}); cpu {time.process_time() - t0:.0f}s",
                      flush=True)
                write_json_atomically(cfg.out, out)  # partial results survive
    if "rl" in cfg.parts:
        cpu["rl"] = time.process_time() - c0
    out["cpu_seconds_by_part"] = {k: None if v is None else round(v) for k, v in cpu.items()}
    if None in cpu.values():  # a part kept from a sweep that recorded only its total
        out["cpu_seconds_by_part_note"] = "None: kept from a sweep that recorded only its total, " + \
            f"{old.get('cpu_seconds')} CPU s for both parts (best-of-n then at {old['config'].get('bon_samples')} samples)"
    out["cpu_seconds"] = sum(v for v in out["cpu_seconds_by_part"].values() if v is not None)
    write_json_atomically(cfg.out, out)
    print(f"wrote {cfg.out} ({out['cpu_seconds']} CPU s)")
    return out


def _children_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    main()
