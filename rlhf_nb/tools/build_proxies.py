"""`make proxies`: the proxy reward models of lesson 08 (rlhf_nb/assets/proxy-rm-{250,1000,4000}/), trained on gold-labelled pairs.

One pool of preference pairs, labelled by the noisy Bradley-Terry annotator on the gold of `rlhf_nb.gold`
(VADER on reviews the corpus grammar accepts, -1 otherwise): proxy-rm-k is trained on the first k pairs of the
pool, so the proxies differ only in how much data they saw. Every proxy is evaluated on the same held-out pairs
(a different seed). Each folder holds the model, metrics.json (held-out accuracy against the gold; the seed,
temperature and max_new_tokens the pairs were made with), train_pairs.jsonl and eval_pairs.jsonl — the same
pairs a DPO lesson can reuse.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, OneLineParser, check_output_writable
from ..gold import INVALID_SCORE, gold_text_scores
from ..overopt import PROXY_SIZES, proxy_dir
from ..policy import load_policy
from ..reward_model import (evaluate, reward_scores, save_reward_model, set_offset, simulate_preferences,
                            train_reward_model)


@dataclass
class ProxyConfig:
    """How `python -m rlhf_nb.tools.build_proxies` builds the proxies."""

    sizes: list[int] = field(default_factory=lambda: list(PROXY_SIZES))
    """training pairs of each proxy (nested: each takes the first k pairs of one pool of max(sizes))"""
    n_eval_pairs: int = 500
    """held-out pairs (seed + 1), the same for every proxy; also the base samples that fix each mean-0 offset"""
    temperature: float = 0.15
    """annotator noise: P(a preferred) = sigmoid((gold_a - gold_b) / temperature)"""
    max_new_tokens: int = 12
    """tokens sampled per completion: RunConfig's default, so the pairs look like the RL rollouts at step 0"""
    epochs: int = 3
    """passes over the training pairs (the committed reward model's recipe), or more to reach min_steps"""
    min_steps: int = 150
    """at least this many optimiser steps: 3 epochs of 250 pairs (24 steps) leave a proxy at chance (measured)"""
    batch_size: int = 32
    """pairs per optimiser step"""
    lr: float = 1e-3
    """AdamW learning rate"""
    seed: int = 0
    """seeds the pool's prompts, sampling and labels, and training; the held-out pairs use seed + 1"""
    out_root: str = ""
    """parent folder of the proxy-rm-k folders (default: rlhf_nb/assets)"""


def parse_args(argv=None) -> ProxyConfig:
    """A ProxyConfig from the command line; a bad value is one line naming the flag, before any work."""
    p = OneLineParser(prog="python -m rlhf_nb.tools.build_proxies", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(ProxyConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "sizes":
            p.add_argument(flag, type=int, nargs="+", default=list(PROXY_SIZES))
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    cfg = ProxyConfig(**vars(p.parse_args(argv)))
    for k in ("n_eval_pairs", "max_new_tokens", "epochs", "min_steps", "batch_size"):
        if getattr(cfg, k) < 1:
            p.exit(2, f"error: --{k.replace('_', '-')} must be >= 1, got {getattr(cfg, k)}\n")
    if any(s < 1 for s in cfg.sizes) or len(set(cfg.sizes)) != len(cfg.sizes):
        p.exit(2, f"error: --sizes must be distinct ints >= 1, got {cfg.sizes}\n")
    if not (cfg.lr > 0 and cfg.temperature >= 0) or not math.isfinite(cfg.lr + cfg.temperature):
        p.exit(2, f"error: --lr must be > 0 and --temperature >= 0, got {cfg.lr} and {cfg.temperature}\n")
    try:
        check_output_writable(cfg.out_root)
    except ConfigError as e:
        p.exit(2, f"error: {str(e).replace('--out ', '--out-root ', 1)}\n")
    return cfg


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
        path = Path(cfg.out_root) / f"proxy-rm-{k}" if cfg.out_root else Path(proxy_dir(k))
        save_reward_model(model, tok, str(path), metrics)
        _write_jsonl(path / "train_pairs.jsonl", train)
        _write_jsonl(path / "eval_pairs.jsonl", held)
        print(f"proxy-rm-{k}: held-out accuracy vs gold {m['accuracy']:.3f} ({m['n_untied']} untied pairs), "
              f"grammar accuracy {metrics['grammar_accuracy']:.3f}, pearson {m['pearson']:.3f}, "
              f"trained in {train_s:.0f}s -> {path}")
        out[k] = metrics
    return out


if __name__ == "__main__":
    main()
