"""The gold judge of reward over-optimisation (lesson 08): positive sentiment *in a well-formed review*.

    gold(x, y) = VADER(x + y)   if the corpus grammar accepts x + y   (`corpus.matches_template`)
               = -1             otherwise

Why this form: a proxy reward model is trained on pairs of base-policy samples, and ~95 % of those are grammatical,
so the proxy's data barely varies the property "well-formed" — it has no reason to learn it. A policy that
optimises the proxy hard drifts into text the grammar rejects ("a masterpiece town masterpiece"), which the proxy
still likes and the gold scores as the worst review there is. That is Gao, Schulman & Hilton's (2022) setting in
miniature: the gold values something the proxy's training data never varied. -1 (not 0) because an ungrammatical
text must rank below every grammatical one, including the most negative (VADER > -1 for any real review).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .config import GOLD_CHOICES
from .corpus import matches_template
from .text import check_inputs, join_text, vader_compound

INVALID_SCORE = -1.0  # the gold of a text the corpus grammar does not accept


def gold_text_scores(texts: Sequence[str]) -> list[float]:
    """Gold of whole texts (prompt + completion already joined): VADER where the grammar accepts them, else -1."""
    vader = vader_compound(texts)
    return [v if matches_template(t.strip()) else INVALID_SCORE for t, v in zip(texts, vader)]


def well_formed(prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
    """(B,) bool: whether the corpus grammar accepts prompt + completion."""
    check_inputs(prompts, completions)
    return torch.tensor([matches_template(join_text(p, c).strip()) for p, c in zip(prompts, completions)])


class GoldReward:
    """gold(x, y) as a reward: `reward(prompts, completions) -> (B,) float32`, in [-1, 1]."""

    name = "gold"

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        check_inputs(prompts, completions)
        texts = [join_text(p, c) for p, c in zip(prompts, completions)]
        return torch.tensor(gold_text_scores(texts), dtype=torch.float32)


def get_gold(choice: str, reward: str) -> GoldReward | None:
    """The gold a run logs as `objective/gold_scores` (RunConfig.gold, RunConfig.reward); None when off.

    auto logs it only for `--reward learned`: there the reward is a proxy and the gold is what it stands for.
    """
    if choice not in GOLD_CHOICES:
        raise ValueError(f"gold must be one of {', '.join(GOLD_CHOICES)}; got {choice!r}")
    if choice == "gold" or (choice == "auto" and reward == "learned"):
        return GoldReward()
    return None
