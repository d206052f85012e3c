"""The "human feedback" of RLHF: simulated preference pairs, and a reward model fit to them with Bradley-Terry.

1. Sample two completions of the same prompt from the base policy.
2. A simulated labeller prefers a over b with P = sigmoid((g_a - g_b) / temperature), g = gold score (VADER),
   so near-ties come out as coin flips, as people's labels do.
3. Fit r(x, y), a scalar head on a GPT-2 trunk, with loss = -log sigmoid(r(x, y_w) - r(x, y_l)).
4. Shift r so its mean on base-policy samples is 0 (Stiennon et al. 2020) and save it in Hugging Face layout.

`python -m rlhf_nb.tools.build_reward_model` (`make reward-model`) builds `rlhf_nb/assets/reward-model/`.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .policy import load_policy  # the one loader: embedded model, left padding, eval mode
from .text import check_inputs, join_text, vader_compound

DEFAULT_DIR = str(Path(__file__).resolve().parent / "assets" / "reward-model")


# ---------------------------------------------------------------- 1-2. simulated preferences

def draw_labels(gold_a: torch.Tensor, gold_b: torch.Tensor, temperature: float, seed: int) -> torch.Tensor:
    """Bradley-Terry labeller: True where a is preferred, with P = sigmoid((g_a - g_b)/T). T = 0: the gold order, ties by coin."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(gold_a.shape, generator=gen, dtype=torch.float64)  # (N,)
    diff = gold_a.double() - gold_b.double()
    if temperature == 0:
        p = torch.where(diff > 0, 1.0, torch.where(diff < 0, 0.0, 0.5)).double()
    else:
        p = torch.sigmoid(diff / temperature)
    return u < p


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence[str], n_per_prompt: int = 2, max_new_tokens: int = 24,
                       batch_size: int = 64, progress: bool = False) -> list[list[str]]:
    """`n_per_prompt` sampled completions (T = 1, no top-k/top-p) of each prompt, cut at the first EOS. Uses torch's global RNG."""
    model.eval()
    out: list[list[str]] = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="sampling", disable=not progress):
        batch = list(prompts[i:i + batch_size])
        enc = tokenizer(batch, return_tensors="pt", padding=True)  # left-padded: (b, T)
        seq = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=max_new_tokens, num_return_sequences=n_per_prompt,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new = seq[:, enc["input_ids"].shape[1]:]  # (b * n, max_new_tokens)
        texts = []
        for row in new.tolist():
            if tokenizer.eos_token_id in row:
                row = row[:row.index(tokenizer.eos_token_id)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
        out.extend(texts[j:j + n_per_prompt] for j in range(0, len(texts), n_per_prompt))
    return out


def simulate_preferences(n_pairs: int, seed: int, temperature: float = 0.15, *,
                         gold: Callable[[list[str]], list[float]] = vader_compound,
                         max_new_tokens: int = 24, prompts: Sequence[str] | None = None, model=None, tokenizer=None,
                         progress: bool = False) -> list[dict]:
    """`n_pairs` records {prompt, chosen, rejected, gold_chosen, gold_rejected}: two base-policy samples, labelled by Bradley-Terry on `gold`.

    Prompts come from `corpus.get_prompts(n_pairs, seed)` unless `prompts` (n_pairs of them) is given.
    """
    if not isinstance(n_pairs, int) or isinstance(n_pairs, bool) or n_pairs < 1:
        raise ValueError(f"n_pairs must be an int >= 1, got {n_pairs!r}")
    draw_labels(torch.zeros(1), torch.zeros(1), temperature, 0)  # validates temperature before any sampling
    if prompts is None:
        from .corpus import get_prompts
        prompts = get_prompts(n_pairs, seed)
    prompts = list(prompts)
    if len(prompts) != n_pairs:
        raise ValueError(f"prompts must hold n_pairs={n_pairs} prompts, got {len(prompts)}")
    if model is None or tokenizer is None:
        model, tokenizer = load_policy()
    with torch.random.fork_rng(devices=[]):  # seeded sampling without moving the caller's RNG
        torch.manual_seed(seed)
        samples = sample_completions(model, tokenizer, prompts, 2, max_new_tokens, progress=progress)
    g = torch.tensor([gold([join_text(p, a), join_text(p, b)]) for p, (a, b) in zip(prompts, samples)], dtype=torch.float64)  # (N, 2)
    a_wins = draw_labels(g[:, 0], g[:, 1], temperature, seed)
    records = []
    for p, (a, b), (ga, gb), w in zip(prompts, samples, g.tolist(), a_wins.tolist()):
        (c, gc), (r, gr) = ((a, ga), (b, gb)) if w else ((b, gb), (a, ga))
        records.append({"prompt": p, "chosen": c, "rejected": r, "gold_chosen": gc, "gold_rejected": gr})
    return records


# ---------------------------------------------------------------- 3. the reward model

def init_reward_model(path: str | None = None):
    """GPT2ForSequenceClassification (num_labels=1) whose trunk starts as the embedded policy's: it already reads reviews."""
    from transformers import AutoTokenizer, GPT2ForSequenceClassification
    from transformers.utils import logging as hf_logging
    if path is None:
        from .policy import resolve_model_path
        path = resolve_model_path("embedded")
    tokenizer = AutoTokenizer.from_pretrained(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new score head is "newly initialized" by design
    try:
        model = GPT2ForSequenceClassification.from_pretrained(path, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.reward_offset = 0.0
    return model, tokenizer


def encode(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_len: int | None = None) -> torch.Tensor:
    """Token ids of prompt + completion + EOS, right-padded with the pad token: (B, T). The head reads the EOS.

    With `max_len` (the model's context), a longer text keeps its first max_len - 1 tokens, then the EOS: the start,
    because the model was trained on texts that begin with a prompt at position 0 and whose completions were cut at
    24 sampled tokens (`simulate_preferences`), i.e. on text starts followed by an EOS. The kit's policy samples
    within the same 64-token context, so only re-tokenisation makes its text longer (random tokens sampled at
    temperature 10 decode to text that re-encodes into more tokens) and the cut drops a few tokens of such a tail.
    A policy with a longer context (`--model gpt2`) can lose much more of a completion: a warning says so, once.
    """
    rows = [tokenizer(join_text(p, c))["input_ids"] for p, c in zip(prompts, completions)]
    if max_len is not None and any(len(r) >= max_len for r in rows):
        warnings.warn(f"the reward model reads at most {max_len} tokens: longer prompt + completion texts are "
                      f"scored on their first {max_len - 1} tokens and the EOS", stacklevel=2)
        rows = [r[:max_len - 1] for r in rows]
    rows = [r + [tokenizer.eos_token_id] for r in rows]
    T = max(len(r) for r in rows)
    return torch.tensor([r + [tokenizer.pad_token_id] * (T - len(r)) for r in rows])


def context_length(model) -> int:
    """The most tokens the model reads: GPT-2's learned position table has this many rows."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(model.config, key, None):
            return int(getattr(model.config, key))
    raise ValueError(f"cannot tell the context length of {type(model).__name__} from its config")


def raw_scores(model, input_ids: torch.Tensor) -> torch.Tensor:
    """r(x, y) before the offset, read at the last non-pad token: (B,)."""
    ids = input_ids.to(model.device)
    return model(input_ids=ids, attention_mask=(ids != model.config.pad_token_id).long()).logits.squeeze(-1)


@torch.no_grad()
def reward_scores(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 64,
                  normalise: bool = True) -> torch.Tensor:
    """r(x, y) - offset for each pair, float32 on CPU: (B,). The offset makes the mean on base-policy samples 0."""
    check_inputs(prompts, completions)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    was_training = model.training
    model.eval()
    n = context_length(model)
    out = torch.cat([raw_scores(model, encode(tokenizer, prompts[i:i + batch_size], completions[i:i + batch_size], n))
                     for i in range(0, len(prompts), batch_size)]).float().cpu()
    model.train(was_training)
    return out - float(getattr(model.config, "reward_offset", 0.0)) if normalise else out


def train_reward_model(pairs: list[dict], eval_pairs: list[dict] | None = None, *, epochs: int = 3,
                       batch_size: int = 32, lr: float = 1e-3, seed: int = 0, model=None, tokenizer=None,
                       progress: bool = True):
    """Fit r with the Bradley-Terry loss -log sigmoid(r(x, y_w) - r(x, y_l)). Returns (model, tokenizer, history).

    history: `loss`, `accuracy` (r_w > r_l on the batch's labels) and `score_std` (the spread of r over the batch's
    2b completions: near 0, every margin is near 0 and the loss sits at log 2) per step; `eval_accuracy` per epoch
    against the gold ordering of `eval_pairs` (see `evaluate`).
    """
    if not pairs:
        raise ValueError("pairs must be a non-empty list of preference records")
    if model is None or tokenizer is None:
        model, tokenizer = init_reward_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    history = {"loss": [], "accuracy": [], "score_std": [], "eval_accuracy": []}
    n_steps = epochs * math.ceil(len(pairs) / batch_size)
    bar = tqdm(total=n_steps, desc="reward model", disable=not progress)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(pairs), generator=gen).tolist()
        for i in range(0, len(pairs), batch_size):
            mb = [pairs[j] for j in order[i:i + batch_size]]
            b = len(mb)
            prompts = [r["prompt"] for r in mb] * 2
            ids = encode(tokenizer, prompts, [r["chosen"] for r in mb] + [r["rejected"] for r in mb],
                         context_length(model))  # (2b, T)
            r = raw_scores(model, ids)  # (2b,)
            margin = r[:b] - r[b:]  # r(x, y_w) - r(x, y_l): (b,)
            loss = -F.logsigmoid(margin).mean()  # Bradley-Terry negative log-likelihood
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            history["loss"].append(loss.item())
            history["accuracy"].append((margin > 0).float().mean().item())
            history["score_std"].append(r.detach().std().item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if eval_pairs:
            history["eval_accuracy"].append(evaluate(model, tokenizer, eval_pairs)["accuracy"])
    bar.close()
    model.eval()
    return model, tokenizer, history


# ---------------------------------------------------------------- 4. evaluation and normalisation

def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two 1-D tensors."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp_min(1e-12))


def evaluate(model, tokenizer, pairs: list[dict], batch_size: int = 64) -> dict:
    """Held-out numbers: `accuracy` = share of pairs with gold_a != gold_b that r orders like the gold (noise-free)
    score; `label_accuracy` = agreement with the noisy labels; `pearson` = corr(r, gold) over every completion."""
    prompts = [r["prompt"] for r in pairs] * 2
    comps = [r["chosen"] for r in pairs] + [r["rejected"] for r in pairs]
    s = reward_scores(model, tokenizer, prompts, comps, batch_size)  # (2N,)
    g = torch.tensor([r["gold_chosen"] for r in pairs] + [r["gold_rejected"] for r in pairs])
    n = len(pairs)
    dg, ds = g[:n] - g[n:], s[:n] - s[n:]
    strict = dg != 0
    return {"accuracy": float(((dg * ds) > 0)[strict].float().mean()) if strict.any() else float("nan"),
            "label_accuracy": float((ds > 0).float().mean()),
            "pearson": pearson(s, g),
            "n_pairs": n, "n_untied": int(strict.sum())}


def set_offset(model, tokenizer, prompts: list[str], completions: list[str]) -> float:
    """Store mean raw r over base-policy samples as config.reward_offset, so normalised scores average 0 there."""
    model.config.reward_offset = float(reward_scores(model, tokenizer, prompts, completions, normalise=False).mean())
    return model.config.reward_offset


def save_reward_model(model, tokenizer, path: str = DEFAULT_DIR, metrics: dict | None = None) -> None:
    """Write model (safetensors) + tokenizer in Hugging Face layout; the offset rides in config.json as `reward_offset`."""
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if metrics is not None:
        Path(path, "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def load_eval_pairs(path: str | None = None) -> list[dict]:
    """The held-out preference pairs saved next to the model by `make reward-model`."""
    with open(Path(DEFAULT_DIR if path is None else path, "eval_pairs.jsonl")) as f:
        return [json.loads(line) for line in f]


def load_reward_model(path: str | None = None):
    """(model, tokenizer) saved by `save_reward_model`, in eval mode on CPU; default: the committed asset."""
    from transformers import AutoTokenizer, GPT2ForSequenceClassification
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would print on every CLI run with --reward learned
    path = DEFAULT_DIR if path is None else str(path)
    if not Path(path, "config.json").exists():
        raise FileNotFoundError(f"no reward model at {path}; build it with `make reward-model`")
    return GPT2ForSequenceClassification.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
