"""`make reward-model`: rebuild the committed reward model (rlhf_nb/assets/reward-model/) from simulated preferences."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..cli import cli_from_dataclass
from ..checkpoints import write_folder_atomically
from ..config import ConfigError, Options, check_output_writable, check_overwrite, option
from ..policy import load_policy, model_context_length
from ..reward_model import (DEFAULT_DIR, evaluate, reward_scores, save_reward_model, set_offset, simulate_preferences,
                            train_reward_model)


@dataclass
class RewardModelConfig(Options):
    """How `python -m rlhf_nb.tools.build_reward_model` builds the committed reward model."""

    n_pairs: int = option(4000, "training preference pairs (Ziegler et al. used about 5,000 human comparisons for "
                          "sentiment)", 1, 1_000_000)
    n_eval_pairs: int = option(500, "held-out pairs, sampled with a different seed; also the base samples that fix "
                               "the mean-0 offset", 1, 100_000)
    temperature: float = option(0.15, "Bradley-Terry label noise: P(a preferred) = sigmoid((g_a - g_b) / "
                                "temperature); 0: noise-free", 0.0, 100.0)
    max_new_tokens: int = option(24, "tokens sampled per completion", 1, 4096)
    epochs: int = option(3, "passes over the training pairs", 1, 1000)
    batch_size: int = option(32, "pairs per optimiser step", 1, 4096)
    lr: float = option(1e-3, "AdamW learning rate", 1e-8, 1.0)
    seed: int = option(0, "seeds sampling, labels and training; the held-out pairs use seed + 1", 0, 2**32 - 2)
    out_dir: str = option(DEFAULT_DIR, "where to save the model (Hugging Face layout); replaced whole once complete")
    overwrite: bool = option(False, "replace a model folder that is a committed asset (the default --out_dir): "
                             "without it, building over rlhf_nb/assets is refused before any work")


def check_options(cfg: RewardModelConfig) -> None:
    """Before any sampling: the completions fit the policy's context, the model folder can be written."""
    context = model_context_length(None)
    if cfg.max_new_tokens >= context:
        raise ConfigError(f"--max_new_tokens must leave room for the prompt in the model's {context}-token context, "
                          f"got {cfg.max_new_tokens}")
    check_overwrite(cfg.out_dir, cfg.overwrite, "--out_dir")
    try:
        check_output_writable(cfg.out_dir)
    except ConfigError as e:
        raise ConfigError(str(e).replace("--out ", "--out_dir ", 1)) from None


def parse_args(argv=None) -> RewardModelConfig:
    """A RewardModelConfig from the command line; flags and defaults come from the dataclass."""
    return cli_from_dataclass(RewardModelConfig, argv, prog="python -m rlhf_nb.tools.build_reward_model",
                              description=__doc__.splitlines()[0], check=check_options)


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
               "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out_dir", "overwrite")}}

    def write(folder: Path) -> None:
        save_reward_model(model, tok, str(folder), metrics)
        with open(folder / "eval_pairs.jsonl", "w") as f:  # the held-out pairs, so tests re-check the accuracy
            f.writelines(json.dumps(r) + "\n" for r in held)

    write_folder_atomically(cfg.out_dir, write)
    print(f"held-out accuracy vs gold ordering: {m['accuracy']:.3f} ({m['n_untied']} untied pairs)")
    print(f"held-out agreement with noisy labels: {m['label_accuracy']:.3f} (labeller itself: {label_gold:.3f} on train)")
    print(f"Pearson r with VADER on {2 * m['n_pairs']} fresh samples: {m['pearson']:.3f}")
    print(f"offset {offset:+.3f}, std on base samples {metrics['reward_std_on_base']:.3f}")
    print(f"sampling {t1 - t0:.1f}s, training {t2 - t1:.1f}s; saved to {cfg.out_dir}")
    return metrics


if __name__ == "__main__":
    main()
