"""Text as a reward sees it: input checks, prompt + completion joined as a reader sees it, and its VADER score.

Shared by the rewards (`rlhf_nb.rewards`) and the reward model's simulated annotator (`rlhf_nb.reward_model`).
"""
from __future__ import annotations

from typing import Sequence


def check_inputs(prompts: Sequence[str], completions: Sequence[str]) -> None:
    """Raise ValueError, naming the argument, unless prompts and completions are equal-length non-empty lists of
    valid (UTF-8 encodable) str."""
    for name, xs in (("prompts", prompts), ("completions", completions)):
        if isinstance(xs, str) or not isinstance(xs, (list, tuple)):
            raise ValueError(f"{name} must be a list of str, got {type(xs).__name__}")
        if len(xs) == 0:
            raise ValueError(f"{name} must be a non-empty list of str, got an empty list")
        bad = [i for i, x in enumerate(xs) if not isinstance(x, str)]
        if bad:
            raise ValueError(f"{name}[{bad[0]}] must be a str, got {type(xs[bad[0]]).__name__}")
        for i, x in enumerate(xs):
            _check_encodable(x, f"{name}[{i}]")
    if len(prompts) != len(completions):
        raise ValueError(f"prompts and completions must have the same length, got {len(prompts)} prompts "
                         f"and {len(completions)} completions")


def _check_encodable(text: str, name: str) -> None:
    """Raise ValueError unless `text` is valid Unicode text (UTF-8 can encode it), which every tokenizer needs."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate such as "\ud800", left by a lossy decode
        raise ValueError(f"{name} is not valid text: {text[e.start:e.end]!r} at index {e.start} cannot be encoded "
                         f"as UTF-8 ({e.reason})") from None


def join_text(prompt: str, completion: str) -> str:
    """The text a reader sees: prompt + completion, with one space added only if neither side has one at the seam."""
    if prompt and completion and not prompt[-1].isspace() and not completion[0].isspace():
        return prompt + " " + completion
    return prompt + completion


_VADER = None


def vader_compound(texts: Sequence[str]) -> list[float]:
    """VADER compound score of each text, in [-1, 1] (Hutto & Gilbert 2014; one shared analyzer)."""
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        _VADER = SentimentIntensityAnalyzer()
    return [_VADER.polarity_scores(t)["compound"] for t in texts]
