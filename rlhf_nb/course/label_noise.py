"""Lesson 02: what the simulated labeller's noise does to a reward model's numbers.

The labeller prefers a with P = σ((g_a − g_b)/T) (rlhf_nb.reward_model.draw_labels). Against its noisy labels no
scorer can be right more often, in expectation, than the gold score itself, which agrees with a label with probability
max(P, 1 − P) = σ(|g_a − g_b|/T); against the gold order the best scorer is right on every pair. The Bradley–Terry loss
has a floor too: a model that predicts P exactly still pays its entropy h(P) per pair.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def _gaps(pairs: Sequence[dict]) -> torch.Tensor:
    """g(chosen) − g(rejected) per pair, (N,) float64."""
    return torch.tensor([p["gold_chosen"] - p["gold_rejected"] for p in pairs], dtype=torch.float64)


def pair_accuracies(pairs: Sequence[dict], chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, float]:
    """How often a scorer (its scores of each pair's chosen and rejected completion) orders the pairs like the gold
    and like the labels, both over the pairs with distinct gold scores (a gold tie's label is a coin flip that no
    scorer can call); a tie of the scorer counts as half right."""
    dg = _gaps(pairs)
    ds = torch.tensor(chosen, dtype=torch.float64) - torch.tensor(rejected, dtype=torch.float64)
    right = lambda d: torch.where(d > 0, 1.0, torch.where(d < 0, 0.0, 0.5))  # noqa: E731
    untied = dg != 0
    return {"vs gold": float(right(dg * ds)[untied].mean()), "vs labels": float(right(ds)[untied].mean()),
            "pairs": int(untied.sum())}


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    q = p.clamp(1e-12, 1 - 1e-12)
    return -(q * q.log() + (1 - q) * (1 - q).log())


def noise_ceilings(pairs: Sequence[dict], temperatures: Sequence[float]) -> list[dict[str, float]]:
    """What the labeller's noise allows, for the gold gaps of `pairs` labelled at each temperature T: the best accuracy
    any scorer can expect against the labels (the gold's own, E[σ(|Δg|/T)] over pairs with distinct gold scores), the
    best accuracy against the gold order (1: the gold itself, at any T), and the Bradley–Terry loss floor
    E[h(σ(Δg/T))] over all pairs (a gold tie pays log 2), the least any model can pay per pair."""
    dg = _gaps(pairs)
    untied = dg != 0
    rows = []
    for T in temperatures:
        p = torch.sigmoid(dg.abs() / T) if T > 0 else torch.where(untied, 1.0, 0.5).double()  # P(label = gold order)
        rows.append({"T": T, "best vs labels": float(p[untied].mean()), "best vs gold": 1.0,
                     "loss floor": float(_binary_entropy(p).mean()), "loss at chance": math.log(2)})
    return rows
