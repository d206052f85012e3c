"""Every reward the lessons use, behind one interface: `reward(prompts, completions) -> (B,) float32 tensor`.

A reward scores the whole text a policy wrote, prompt and completion together, with one number per sample.
All rewards are cheap to build; the learned one loads its weights on first call. Each returns a CPU tensor.

    sentiment   VADER compound score of prompt + completion             [-1, 1]
    phrase      `bonus` if the completion ends with a chosen phrase      {0, bonus}
    length      exp(-1/2 ((n - target)/width)^2) - 1, n = words          (-1, 0]
    composite   sum_k w_k * reward_k, w_k >= 0                          depends on the weights
    learned     Bradley-Terry reward model, mean 0 on base samples      unbounded (std ~ 1-3)

Every parameter is checked when the reward is built, within bounds that keep every score finite in float32
(|bonus|, weights, target and width at most MAX_PARAM = 1e6), and every text when it is scored (`check_inputs`).
"""
from __future__ import annotations

import math
import os
import re
from typing import Callable, Sequence

import torch

from .text import check_inputs, join_text, vader_compound  # noqa: F401  (re-exported: the lessons use them from here)

Reward = Callable[[list[str], list[str]], torch.Tensor]

REWARD_NAMES = ("sentiment", "phrase", "length", "composite", "learned")

DEFAULT_PHRASES = ("highly recommended", "a must see", "worth watching", "loved it")

# Bound on every numeric reward parameter: far beyond any useful value, and small enough that a score built from it
# stays finite in float32 (max ~3.4e38; e.g. weight 1e6 x phrase bonus 1e6 = 1e12).
MAX_PARAM = 1e6


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
        self.bonus = _number("bonus", bonus, -MAX_PARAM, MAX_PARAM)

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
        # bounds keep (n - target)/width finite in float32: a width of 1e-300 rounds to 0 there, and 0/0 is nan
        self.target = _number("target", target, 0, MAX_PARAM, low_open=True)
        self.width = _number("width", width, 1e-3, MAX_PARAM)

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        check_inputs(prompts, completions)
        n = torch.tensor([len(c.split()) for c in completions], dtype=torch.float32)  # (B,)
        return torch.expm1(-0.5 * ((n - self.target) / self.width) ** 2)


class LearnedReward:
    """The Bradley-Terry reward model of `rlhf_nb.reward_model` scoring prompt + completion; mean 0 on base samples.

    `path` is a folder written by `save_reward_model` (default: the committed `rlhf_nb/assets/reward-model/`).
    The weights load on the first call, so building this is free. A text longer than the reward model's context
    is scored on its start (see `reward_model.encode`).
    """

    name = "learned"

    def __init__(self, path: str | os.PathLike | None = None, batch_size: int = 64):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a folder path (str) or None, got {type(path).__name__}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= 4096:
            raise ValueError(f"batch_size must be an int in [1, 4096], got {batch_size!r}")
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
        scores = reward_scores(self._model, self._tokenizer, prompts, completions, batch_size=self.batch_size)
        bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
        if bad:  # finite weights cannot produce this; corrupt ones can, and a nan must never reach the advantages
            raise RuntimeError(f"the reward model at {self.path or 'the default asset'} gave a non-finite score "
                               f"({scores[bad[0]].item()}) for completions[{bad[0]}]: its weights are broken; "
                               f"rebuild it with `make reward-model`")
        return scores


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
            _number(f"weights[{k!r}]", w, 0, MAX_PARAM)
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


def reward_for(reward: str, reward_model: str | None = None) -> Reward:
    """The reward a RunConfig names (`cfg.reward`, and for `learned` the folder `cfg.reward_model` if set)."""
    return get_reward(reward, **({"path": reward_model_dir(reward_model)} if reward_model else {}))


def _number(name: str, x, low: float, high: float, low_open: bool = False) -> float:
    """x as a float, or ValueError naming it unless x is a real number in [low, high] (or (low, high])."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and \
        (low < x if low_open else low <= x) and x <= high
    if not ok:
        raise ValueError(f"{name} must be a number in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}], got {x!r}")
    return float(x)


def _fmt(x: float) -> str:
    return f"{x:g}".replace("e+0", "e").replace("e-0", "e-")  # 1e+06 -> 1e6


def _check_reward_model_config(config: "os.PathLike", name: str) -> None:
    """A reward model's config.json names a sequence-classification head with one output; a policy folder (a run's
    final/, the embedded model) names a language-model head. Read from JSON alone, before any model loads."""
    import json

    try:
        cfg = json.loads(open(config, encoding="utf-8").read())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileNotFoundError(f"--reward_model {name!r}: {config} is not readable JSON ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        cfg = {}
    archs = cfg.get("architectures") or []
    labels = cfg.get("num_labels", len(cfg.get("id2label") or {}) or None)
    if not any(str(a).endswith("ForSequenceClassification") for a in archs) or labels not in (None, 1):
        what = ", ".join(map(str, archs)) or "no architecture"
        raise FileNotFoundError(f"--reward_model {name!r} is not a reward model: its config.json names {what} "
                                f"(a reward model is a ...ForSequenceClassification with one output, as "
                                f"rlhf_nb/assets/reward-model); a policy checkpoint goes to --model")


def reward_model_dir(name: str | None) -> str | None:
    """RunConfig.reward_model as a folder: a path, or a name under rlhf_nb/assets (e.g. proxy-rm-1000); None stays None."""
    if name is None:
        return None
    from pathlib import Path
    assets = Path(__file__).resolve().parent / "assets"
    for p in (Path(name), assets / name):
        if (p / "config.json").is_file():
            _check_reward_model_config(p / "config.json", name)
            return str(p)
    names = sorted(d.name for d in assets.iterdir()
                   if (d / "config.json").is_file() and "reward_offset" in (d / "config.json").read_text())
    raise FileNotFoundError(f"--reward_model must be a reward-model folder or one of {', '.join(names)}; got {name!r}")
