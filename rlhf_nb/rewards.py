"""Every reward the lessons use, behind one interface: `reward(prompts, completions) -> (B,) float32 tensor`.

A reward scores the whole text a policy wrote, prompt and completion together, with one number per sample.
All rewards are cheap to build; the learned one loads its weights on first call. Each returns a CPU tensor.

    sentiment   VADER compound score of prompt + completion             [-1, 1]
    phrase      `bonus` if the completion ends with a chosen phrase      {0, bonus}
    length      exp(-1/2 ((n - target)/width)^2) - 1, n = words          (-1, 0]
    composite   sum_k w_k * reward_k, w_k >= 0                          depends on the weights
    learned     Bradley-Terry reward model, mean 0 on base samples      unbounded (std ~ 1-3)
"""
from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import torch

from .text import check_inputs, join_text, vader_compound  # noqa: F401  (re-exported: the lessons use them from here)

Reward = Callable[[list[str], list[str]], torch.Tensor]

REWARD_NAMES = ("sentiment", "phrase", "length", "composite", "learned")

DEFAULT_PHRASES = ("highly recommended", "a must see", "worth watching", "loved it")


class SentimentReward:
    """VADER compound score of prompt + completion, in [-1, 1]: > 0.05 reads positive, < -0.05 negative."""

    name = "sentiment"

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        check_inputs(prompts, completions)
        texts = [join_text(p, c) for p, c in zip(prompts, completions)]
        return torch.tensor(vader_compound(texts), dtype=torch.float32)


_SPECIAL = re.compile(r"(<\|endoftext\|>|<\|pad\|>)")
_TRAILING = re.compile(r"[\W_]+$")  # any run of non-word characters (punctuation, spaces, emoji) at the end
_SPACES = re.compile(r"\s+")


def normalise_ending(text: str) -> str:
    """Lower-case, drop special tokens, collapse whitespace runs to one space, strip trailing non-word characters."""
    text = _SPECIAL.sub(" ", text).lower()
    text = _SPACES.sub(" ", text).strip()
    return _TRAILING.sub("", text)


class PhraseReward:
    """`bonus` if the completion ends with one of `phrases`, else 0.

    Both the completion and each phrase pass through `normalise_ending`: lower-cased, `<|endoftext|>`/`<|pad|>`
    removed, whitespace runs collapsed to one space, and trailing non-word characters (".", "!!", " :)", spaces)
    stripped. The phrase must then end the completion on a word boundary: "worth watching!" and
    "Worth   WATCHING." match "worth watching", "unworth watching" does not. Only the completion is read.
    """

    name = "phrase"

    def __init__(self, phrases: Sequence[str] = DEFAULT_PHRASES, bonus: float = 1.0):
        if isinstance(phrases, str) or not phrases or not all(isinstance(p, str) for p in phrases):
            raise ValueError(f"phrases must be a non-empty sequence of str, got {phrases!r}")
        self.phrases = tuple(normalise_ending(p) for p in phrases)
        if not all(self.phrases):
            raise ValueError(f"phrases must each contain a word character, got {phrases!r}")
        if not _is_number(bonus):
            raise ValueError(f"bonus must be a finite number, got {bonus!r}")
        self.bonus = float(bonus)

    def matches(self, completion: str) -> bool:
        end = normalise_ending(completion)
        for p in self.phrases:
            if end.endswith(p) and (len(end) == len(p) or not (end[-len(p) - 1].isalnum() or end[-len(p) - 1] == "_")):
                return True
        return False

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        check_inputs(prompts, completions)
        return torch.tensor([self.bonus if self.matches(c) else 0.0 for c in completions], dtype=torch.float32)


class LengthReward:
    """A penalty favouring moderate length: exp(-1/2 ((n - target)/width)^2) - 1, in (-1, 0], 0 at n = target.

    n is the number of whitespace-separated words of the completion (`len(completion.split())`). A Gaussian
    bump rather than -((n - target)/width)^2: it is bounded, so a runaway length cannot swamp a composite.
    """

    name = "length"

    def __init__(self, target: float = 12, width: float = 6):
        if not _is_number(target) or target <= 0:
            raise ValueError(f"target must be a number > 0, got {target!r}")
        if not _is_number(width) or width <= 0:
            raise ValueError(f"width must be a number > 0, got {width!r}")
        self.target, self.width = float(target), float(width)

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        check_inputs(prompts, completions)
        n = torch.tensor([len(c.split()) for c in completions], dtype=torch.float32)  # (B,)
        return torch.expm1(-0.5 * ((n - self.target) / self.width) ** 2)


class LearnedReward:
    """The Bradley-Terry reward model of `rlhf_nb.reward_model` scoring prompt + completion; mean 0 on base samples.

    `path` is a folder written by `save_reward_model` (default: the committed `rlhf_nb/assets/reward-model/`).
    The weights load on the first call, so building this is free.
    """

    name = "learned"

    def __init__(self, path: str | None = None, batch_size: int = 64):
        self.path, self.batch_size = path, batch_size
        self._model = self._tokenizer = None

    def load(self) -> "LearnedReward":
        if self._model is None:
            from .reward_model import load_reward_model
            self._model, self._tokenizer = load_reward_model(self.path)
        return self

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        check_inputs(prompts, completions)
        from .reward_model import reward_scores
        self.load()
        return reward_scores(self._model, self._tokenizer, prompts, completions, batch_size=self.batch_size)


DEFAULT_WEIGHTS = {"sentiment": 1.0, "phrase": 0.5, "length": 0.5}


class CompositeReward:
    """Weighted sum sum_k w_k * reward_k(prompts, completions) of the named rewards, weights >= 0, not all zero.

    Keyword arguments named after a component hold that component's kwargs, e.g.
    `CompositeReward({"sentiment": 1.0, "length": 0.5}, length={"target": 8})`. Zero-weight parts are not built.
    """

    name = "composite"

    def __init__(self, weights: dict[str, float] | None = None, **kwargs: dict):
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        parts = tuple(n for n in REWARD_NAMES if n != "composite")
        if not weights:
            raise ValueError("weights must name at least one reward, got an empty dict")
        for k, w in weights.items():
            if k not in parts:
                raise ValueError(f"weights has unknown reward {k!r}; allowed: {', '.join(parts)}")
            if not _is_number(w) or w < 0:
                raise ValueError(f"weights[{k!r}] must be a number >= 0, got {w!r}")
        if all(w == 0 for w in weights.values()):
            raise ValueError(f"weights must not all be zero, got {weights!r}")
        for k, v in kwargs.items():
            if k not in weights:
                raise ValueError(f"got kwargs for {k!r}, which is not in weights {sorted(weights)}")
            if not isinstance(v, dict):
                raise ValueError(f"{k} must be a dict of keyword arguments for that reward, got {type(v).__name__}")
        self.weights = {k: float(w) for k, w in weights.items() if w > 0}
        self.parts = {k: get_reward(k, **kwargs.get(k, {})) for k in self.weights}

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        check_inputs(prompts, completions)
        total = torch.zeros(len(prompts), dtype=torch.float32)
        for k, w in self.weights.items():
            total += w * self.parts[k](prompts, completions)
        return total


_CLASSES = {"sentiment": SentimentReward, "phrase": PhraseReward, "length": LengthReward,
            "composite": CompositeReward, "learned": LearnedReward}


def get_reward(name: str, **kwargs) -> Reward:
    """The reward called `name` (one of REWARD_NAMES), built with `kwargs`."""
    if name not in _CLASSES:
        raise ValueError(f"reward must be one of {', '.join(REWARD_NAMES)}; got {name!r}")
    return _CLASSES[name](**kwargs)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
