"""The decoding loop's model calls: the logits of each row's next token, with a KV cache.

`policy.sample` asks `next_token_logits(lm, batch, length)` for a function `step(ids, mask) -> (B, V) logits` and
calls it once for the prompt and once per new token. Two implementations, the same numbers:

- `HFStep`: the model's own forward with its cache (any causal LM);
- `GPT2Step`: GPT-2's blocks called one by one on key/value buffers allocated once. It skips what the generic forward
  does per call (mask and cache objects, output containers), about a fifth of a rollout at this kit's sizes; each
  block's own layers (layer norms, the attention and MLP projections) are the model's modules, so trained or loaded
  weights are used as they are. tests/test_decoding.py checks it against `HFStep` and the full forward.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@functools.lru_cache(maxsize=None)
def forward_params(cls: type) -> frozenset[str]:
    """The keyword arguments a model class's forward takes (transformers renames some between releases)."""
    return frozenset(inspect.signature(cls.forward).parameters)


def cache_kwarg(lm: nn.Module) -> str:
    """transformers >= 5.2x names the KV cache `cache`; older releases call it `past_key_values`."""
    return "cache" if "cache" in forward_params(type(lm)) else "past_key_values"


def keep_kwarg(lm: nn.Module, logits_to_keep: int) -> dict:
    """{'logits_to_keep': n}: the LM head runs on the last n columns only (n = 0: all, or a model without the option).

    Each logit row is its own dot products, so the kept rows are the same numbers to the bit; only use it without
    grad, since the head's weight gradient sums over rows and fewer rows would change that sum's rounding."""
    takes = "logits_to_keep" in forward_params(type(lm))
    return {"logits_to_keep": logits_to_keep} if logits_to_keep and takes else {}


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Positions count real tokens only, so a left-padded prompt starts at position 0: the formula of
    policy.position_ids_from_mask, which scores tokens. Sampling keeps its own name for it, so that lesson 10's
    `no_position_ids` fault (it patches the scoring one) breaks scoring only, as the bug it shows did."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class HFStep:
    """The model's own forward with its KV cache; the LM head runs on the last column only."""

    def __init__(self, lm: nn.Module):
        self.lm, self.past = lm, None
        self.cache_arg, self.keep = cache_kwarg(lm), keep_kwarg(lm, 1)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids: (B, q) new columns; mask: (B, n + q) the attention mask of every column so far -> (B, V)."""
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask)[:, -ids.size(1):], use_cache=True,
                      **{self.cache_arg: self.past}, **self.keep)
        self.past = getattr(out, self.cache_arg, None)
        return out.logits[:, -1, :]


class GPT2Step:
    """GPT-2 (Radford et al. 2019) with a preallocated KV cache: per block, x += attn(ln_1(x)); x += mlp(ln_2(x))."""

    def __init__(self, lm: nn.Module, batch: int, length: int):
        t = lm.transformer
        self.t, self.head = t, lm.get_output_embeddings()
        c = t.config
        self.heads, self.width = c.n_head, c.n_embd
        p = next(lm.parameters())
        shape = (batch, self.heads, length, self.width // self.heads)
        self.keys = [p.new_empty(shape) for _ in t.h]
        self.values = [p.new_empty(shape) for _ in t.h]
        self.n = 0  # columns cached so far

    @staticmethod
    def fits(lm: nn.Module) -> bool:
        """GPT-2 without the options this class does not implement (cross-attention, upcast and reordered attention)."""
        c = getattr(lm, "config", None)
        return (getattr(c, "model_type", None) == "gpt2" and hasattr(lm, "transformer")
                and not getattr(c, "add_cross_attention", False) and not getattr(c, "reorder_and_upcast_attn", False))

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, q = ids.shape
        n0, n1 = self.n, self.n + q
        # query i (column n0 + i) sees the real keys up to its own column; every query also sees itself, so a padding
        # row attends to something (an all-masked row would turn into NaN and spread through the cached values)
        cols = torch.arange(n1, device=ids.device)
        rows = cols[n0:, None]
        allowed = (mask[:, None, None, :n1].bool() & (cols <= rows)) | (cols == rows)  # (B, 1, q, n1)
        x = self.t.wte(ids) + self.t.wpe(positions(mask)[:, -q:])
        for block, keys, values in zip(self.t.h, self.keys, self.values):
            attn = block.attn
            qry, key, val = attn.c_attn(block.ln_1(x)).split(self.width, dim=2)
            qry, key, val = (z.view(B, q, self.heads, -1).transpose(1, 2) for z in (qry, key, val))
            keys[:, :, n0:n1], values[:, :, n0:n1] = key, val
            a = F.scaled_dot_product_attention(qry, keys[:, :, :n1], values[:, :, :n1], attn_mask=allowed,
                                               scale=attn.scaling)
            x = x + attn.c_proj(a.transpose(1, 2).reshape(B, q, self.width))
            x = x + block.mlp(block.ln_2(x))
        self.n = n1
        return self.head(self.t.ln_f(x[:, -1]))


def next_token_logits(lm: nn.Module, batch: int, length: int) -> Step:
    """A fresh `step` for one decoding of `batch` rows up to `length` columns (prompt + new tokens)."""
    return GPT2Step(lm, batch, length) if GPT2Step.fits(lm) else HFStep(lm)
