"""`make reward-model`: rebuild the committed reward model (rlhf_nb/assets/reward-model/) from simulated preferences."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, OneLineParser, check_output_writable
from ..policy import load_policy, model_context_length
from ..reward_model import (DEFAULT_DIR, evaluate, reward_scores, save_reward_model, set_offset, simulate_preferences,
                            train_reward_model)


@dataclass
class RewardModelConfig:
    """How `python -m rlhf_nb.tools.build_reward_model` builds the committed reward model."""

    n_pairs: int = 4000
    """training preference pairs (Ziegler et al. used ~5,000 human comparisons for sentiment)"""
    n_eval_pairs: int = 500
    """held-out pairs, sampled with a different seed; also the base samples that fix the mean-0 offset"""
    temperature: float = 0.15
    """Bradley-Terry label noise: P(a preferred) = sigmoid((g_a - g_b) / temperature); 0 = noise-free"""
    max_new_tokens: int = 24
    """tokens sampled per completion"""
    epochs: int = 3
    """passes over the training pairs"""
    batch_size: int = 32
    """pairs per optimiser step"""
    lr: float = 1e-3
    """AdamW learning rate"""
    seed: int = 0
    """seeds sampling, labels and training; the held-out pairs use seed + 1"""
    out_dir: str = DEFAULT_DIR
    """where to save the model (Hugging Face layout)"""


def parse_args(argv=None) -> RewardModelConfig:
    """A RewardModelConfig from the command line; flags and defaults come from the dataclass."""
    p = OneLineParser(prog="python -m rlhf_nb.tools.build_reward_model", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(RewardModelConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    cfg = RewardModelConfig(**vars(p.parse_args(argv)))
    for k in ("n_pairs", "n_eval_pairs", "max_new_tokens", "epochs", "batch_size"):  # one line each, before any work
        if getattr(cfg, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(cfg, k)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        p.error(f"--lr must be a finite number > 0, got {cfg.lr:g}")
    if not (cfg.temperature >= 0 and math.isfinite(cfg.temperature)):
        p.error(f"--temperature must be a finite number >= 0, got {cfg.temperature:g}")
    context = model_context_length(None)
    if cfg.max_new_tokens >= context:
        p.error(f"--max-new-tokens must leave room for the prompt in the model's {context}-token context, "
                f"got {cfg.max_new_tokens}")
    try:
        check_output_writable(cfg.out_dir)
    except ConfigError as e:
        p.error(str(e).replace("--out ", "--out-dir ", 1))
    return cfg


def main(argv=None) -> dict:
    from ..seeding import seed_everything
    cfg = parse_args(argv)
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    policy, tok = load_policy()
    train = simulate_preferences(cfg.n_pairs, cfg.seed, cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                 model=policy, tokenizer=tok, progress=True)
    held = simulate_preferences(cfg.n_eval_pairs, cfg.seed + 1, cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                model=policy, tokenizer=tok, progress=True)
    t1 = time.perf_counter()
    model, tok, hist = train_reward_model(train, None, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                          seed=cfg.seed)
    t2 = time.perf_counter()
    prompts = [r["prompt"] for r in held] * 2
    comps = [r["chosen"] for r in held] + [r["rejected"] for r in held]
    offset = set_offset(model, tok, prompts, comps)
    m = evaluate(model, tok, held)
    normed = reward_scores(model, tok, prompts, comps)
    label_gold = sum((r["gold_chosen"] > r["gold_rejected"]) for r in train) / max(1, sum(r["gold_chosen"] != r["gold_rejected"] for r in train))
    metrics = {**m, "reward_offset": offset, "reward_std_on_base": float(normed.std()),
               "train_label_agreement_with_gold": label_gold, "final_train_loss": sum(hist["loss"][-20:]) / len(hist["loss"][-20:]),
               "sampling_seconds": round(t1 - t0, 1), "training_seconds": round(t2 - t1, 1),
               "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out_dir"}}
    save_reward_model(model, tok, cfg.out_dir, metrics)
    with open(Path(cfg.out_dir, "eval_pairs.jsonl"), "w") as f:  # the held-out pairs, so tests re-check the accuracy
        f.writelines(json.dumps(r) + "\n" for r in held)
    print(f"held-out accuracy vs gold ordering: {m['accuracy']:.3f} ({m['n_untied']} untied pairs)")
    print(f"held-out agreement with noisy labels: {m['label_accuracy']:.3f} (labeller itself: {label_gold:.3f} on train)")
    print(f"Pearson r with VADER on {2 * m['n_pairs']} fresh samples: {m['pearson']:.3f}")
    print(f"offset {offset:+.3f}, std on base samples {metrics['reward_std_on_base']:.3f}")
    print(f"sampling {t1 - t0:.1f}s, training {t2 - t1:.1f}s; saved to {cfg.out_dir}")
    return metrics


if __name__ == "__main__":
    main()
