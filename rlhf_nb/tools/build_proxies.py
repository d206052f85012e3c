"""`make proxies`: the proxy reward models of lesson 08 (rlhf_nb/assets/proxy-rm-{250,1000,4000}/), trained on gold-labelled pairs.

One pool of preference pairs, labelled by the noisy Bradley-Terry annotator on the gold of `rlhf_nb.gold`
(VADER on reviews the corpus grammar accepts, -1 otherwise): proxy-rm-k is trained on the first k pairs of the
pool, so the proxies differ only in how much data they saw. Every proxy is evaluated on the same held-out pairs
(a different seed). Each folder holds the model, metrics.json (held-out accuracy against the gold; the seed,
temperature and max_new_tokens the pairs were made with), train_pairs.jsonl and eval_pairs.jsonl — the same
pairs a DPO lesson can reuse.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..cli import cli_from_dataclass
from ..checkpoints import write_folder_atomically
from ..config import ConfigError, Options, check_output_writable, check_overwrite, option
from ..gold import INVALID_SCORE, gold_text_scores
from ..overopt import PROXY_SIZES, proxy_dir
from ..policy import load_policy, model_context_length
from ..reward_model import (evaluate, reward_scores, save_reward_model, set_offset, simulate_preferences,
                            train_reward_model)


@dataclass
class ProxyConfig(Options):
    """How `python -m rlhf_nb.tools.build_proxies` builds the proxies."""

    sizes: tuple[int, ...] = option(PROXY_SIZES, "training pairs of each proxy, distinct (nested: each takes the first "
                                    "k pairs of one pool of max(sizes))", 1, 1_000_000)
    n_eval_pairs: int = option(500, "held-out pairs (seed + 1), the same for every proxy; also the base samples that "
                               "fix each mean-0 offset", 1, 100_000)
    temperature: float = option(0.15, "annotator noise: P(a preferred) = sigmoid((gold_a - gold_b) / temperature); "
                                "0: noise-free", 0.0, 100.0)
    max_new_tokens: int = option(12, "tokens sampled per completion: RunConfig's default, so the pairs look like the "
                                 "RL rollouts at step 0", 1, 4096)
    epochs: int = option(3, "passes over the training pairs (the committed reward model's recipe), or more to reach "
                         "--min_steps", 1, 1000)
    min_steps: int = option(150, "at least this many optimiser steps: 3 epochs of 250 pairs (24 steps) leave a proxy "
                            "at chance (measured)", 1, 1_000_000)
    batch_size: int = option(32, "pairs per optimiser step", 1, 4096)
    lr: float = option(1e-3, "AdamW learning rate", 1e-8, 1.0)
    seed: int = option(0, "seeds the pool's prompts, sampling and labels, and training; the held-out pairs use "
                       "seed + 1", 0, 2**32 - 2)
    out_root: str = option("", "parent folder of the proxy-rm-k folders (empty: rlhf_nb/assets); each is replaced "
                           "whole once complete")
    overwrite: bool = option(False, "replace proxy folders that are committed assets (the default --out_root): "
                             "without it, building over rlhf_nb/assets is refused before any work")

    def validate(self):
        super().validate()
        if len(set(self.sizes)) != len(self.sizes):
            raise ConfigError(f"--sizes must be distinct, got {' '.join(map(str, self.sizes))}")
        return self

    def folder(self, k: int) -> Path:
        """Where proxy-rm-k goes."""
        return Path(self.out_root) / f"proxy-rm-{k}" if self.out_root else Path(proxy_dir(k))


def check_options(cfg: ProxyConfig) -> None:
    """Before any sampling: the pairs fit the policy's context, the proxies' parent folder takes new folders."""
    context = model_context_length(None)
    if cfg.max_new_tokens >= context:
        raise ConfigError(f"--max_new_tokens must leave room for the prompt in the model's {context}-token context, "
                          f"got {cfg.max_new_tokens}")
    for k in cfg.sizes:
        check_overwrite(cfg.folder(k), cfg.overwrite, "--out_root")
    try:
        check_output_writable(cfg.folder(min(cfg.sizes)).parent)
    except ConfigError as e:
        raise ConfigError(str(e).replace("--out ", "--out_root ", 1)) from None


def parse_args(argv=None) -> ProxyConfig:
    """A ProxyConfig from the command line; a bad value is one line naming the flag, before any work."""
    return cli_from_dataclass(ProxyConfig, argv, prog="python -m rlhf_nb.tools.build_proxies",
                              description=__doc__.split("\n\n")[0], check=check_options)


def grammar_accuracy(model, tok, pairs: list[dict]) -> float:
    """Share of held-out pairs with exactly one ill-formed side where the proxy prefers the well-formed one."""
    mixed = [r for r in pairs if (r["gold_chosen"] == INVALID_SCORE) != (r["gold_rejected"] == INVALID_SCORE)]
    if not mixed:
        return float("nan")
    good = [r["chosen"] if r["gold_rejected"] == INVALID_SCORE else r["rejected"] for r in mixed]
    bad = [r["rejected"] if r["gold_rejected"] == INVALID_SCORE else r["chosen"] for r in mixed]
    prompts = [r["prompt"] for r in mixed]
    return float((reward_scores(model, tok, prompts, good) > reward_scores(model, tok, prompts, bad)).float().mean())


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def main(argv=None) -> dict:
    from ..seeding import seed_everything
    cfg = parse_args(argv)
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    policy, ptok = load_policy()
    pairs = dict(temperature=cfg.temperature, gold=gold_text_scores, max_new_tokens=cfg.max_new_tokens,
                 model=policy, tokenizer=ptok, progress=True)
    pool = simulate_preferences(max(cfg.sizes), cfg.seed, **pairs)
    held = simulate_preferences(cfg.n_eval_pairs, cfg.seed + 1, **pairs)
    sampling_s = time.perf_counter() - t0
    prompts = [r["prompt"] for r in held] * 2
    comps = [r["chosen"] for r in held] + [r["rejected"] for r in held]
    made_with = {"seed": cfg.seed, "eval_seed": cfg.seed + 1, "temperature": cfg.temperature,
                 "max_new_tokens": cfg.max_new_tokens, "gold": "rlhf_nb.gold.gold_text_scores",
                 "sampler": "reward_model.simulate_preferences (base policy, T = 1, no top-k/top-p)"}
    out = {}
    for k in sorted(cfg.sizes):
        train = pool[:k]
        epochs = max(cfg.epochs, math.ceil(cfg.min_steps / math.ceil(k / cfg.batch_size)))
        seed_everything(cfg.seed)  # the same head initialisation for every proxy
        t1 = time.perf_counter()
        model, tok, hist = train_reward_model(train, None, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                              seed=cfg.seed)
        train_s = time.perf_counter() - t1
        offset = set_offset(model, tok, prompts, comps)
        m = evaluate(model, tok, held)
        untied = [r for r in train if r["gold_chosen"] != r["gold_rejected"]]
        metrics = {
            "n_train_pairs": k, **m, "grammar_accuracy": grammar_accuracy(model, tok, held),
            "reward_offset": offset, "reward_std_on_base": float(reward_scores(model, tok, prompts, comps).std()),
            "train_label_agreement_with_gold": sum(r["gold_chosen"] > r["gold_rejected"] for r in untied) / max(1, len(untied)),
            "train_ill_formed_share": sum((r["gold_chosen"] == INVALID_SCORE) + (r["gold_rejected"] == INVALID_SCORE)
                                          for r in train) / (2 * k),
            "final_train_loss": sum(hist["loss"][-10:]) / len(hist["loss"][-10:]),
            "pairs": {**made_with, "train": f"first {k} of {max(cfg.sizes)} pairs (seed {cfg.seed})",
                      "eval": f"{cfg.n_eval_pairs} pairs (seed {cfg.seed + 1})"},
            "training": {"epochs": epochs, "steps": len(hist["loss"]), "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed},
            "training_seconds": round(train_s, 1), "sampling_seconds": round(sampling_s, 1),
            "command": "python -m rlhf_nb.tools.build_proxies  (make proxies)",
        }
        path = cfg.folder(k)

        def write(folder: Path) -> None:
            save_reward_model(model, tok, str(folder), metrics)
            _write_jsonl(folder / "train_pairs.jsonl", train)
            _write_jsonl(folder / "eval_pairs.jsonl", held)

        write_folder_atomically(path, write)
        print(f"proxy-rm-{k}: held-out accuracy vs gold {m['accuracy']:.3f} ({m['n_untied']} untied pairs), "
              f"grammar accuracy {metrics['grammar_accuracy']:.3f}, pearson {m['pearson']:.3f}, "
              f"trained in {train_s:.0f}s -> {path}")
        out[k] = metrics
    return out


if __name__ == "__main__":
    main()
