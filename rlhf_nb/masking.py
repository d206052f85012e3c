"""Masked reductions over (B, T) completion tokens: padding never enters a mean, a variance or a whitening.

`mask` is a bool or 0/1 float tensor shaped like `x`: 1 on real tokens, 0 on padding (either side).
Padding entries of `x` are ignored even when they hold nan or -inf (we select with `torch.where`, never multiply).
"""
from __future__ import annotations

import torch

WHITEN_EPS = 1e-8  # TRL's epsilon inside sqrt(var + eps)


def _as_bool(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if mask.shape != x.shape:
        raise ValueError(f"mask must have the same shape as x, got mask {tuple(mask.shape)} and x {tuple(x.shape)}")
    return mask.bool()


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ x over masked entries (all of them, or along `dim`)."""
    m = _as_bool(mask, x)
    xm = torch.where(m, x, torch.zeros_like(x))
    return xm.sum() if dim is None else xm.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ mask·x / Σ mask (all entries, or along `dim`); nan where the mask is empty."""
    m = _as_bool(mask, x)
    count = m.sum() if dim is None else m.sum(dim)
    return masked_sum(x, m, dim) / count.to(x.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over all masked entries; Bessel-corrected (n / (n-1)) when `unbiased`, as TRL does."""
    m = _as_bool(mask, x)
    n = int(m.sum())
    if n == 0:
        raise ValueError("mask is empty: masked_var needs at least one real token")
    if unbiased and n == 1:
        raise ValueError("mask has a single real token: the unbiased variance divides by n - 1 = 0")
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)  # biased: Σ (x - μ)² / n
    return var * n / (n - 1) if unbiased else var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - μ) / sqrt(σ² + 1e-8) over masked entries (μ added back if not `shift_mean`); padding set to 0."""
    m = _as_bool(mask, x)
    mean, var = masked_mean(x, m), masked_var(x, m)
    w = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        w = w + mean
    return torch.where(m, w, torch.zeros_like(w))  # TRL leaves padding as garbage; we zero it
