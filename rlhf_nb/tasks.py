"""Tasks a run can train on (`--task`): the model, the prompts and the reward, chosen together.

reviews     the kit's default: the embedded review model, the movie-review prompts, `--reward` (lessons 00-11)
arithmetic  RL from a verifiable reward (lesson 12): prompts "37+48=", a program checks the answer ("85")
arithmetic_format  the same, plus a small format reward for a well-formed wrong number

Why addition of two numbers below 100: the answer is checkable by a one-line program, it is short (at most 3 digits
and an end token), so the probability that one sample is correct can be computed EXACTLY from the policy's
next-token probabilities (rlhf_nb.passk), and a tiny model learns it partly in a CPU minute, which leaves RL room.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .config import TASK_CHOICES  # the names --task takes (config.py holds them: it imports no torch)
ARITH_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "tiny-gpt2-arith"
ARITH_MAX = 99  # operands 0..ARITH_MAX
HELDOUT_SIZE = 256  # held-out prompts: never in the base model's training data, never in RL's prompts
SPLIT_SEED = 12345  # fixes the split, whatever a run's --seed
FORMAT_BONUS = 0.1  # arithmetic_format: the reward of a well-formed wrong answer
ARITH_MAX_NEW_TOKENS = 6  # an answer is at most 3 digits + EOS; 2 tokens of room for a malformed one

_NUMBER = re.compile(r"0|[1-9][0-9]*")
_PROMPT = re.compile(r"(\d+)\+(\d+)=")


def arith_prompt(a: int, b: int) -> str:
    return f"{a}+{b}="


def answer_of(prompt: str) -> str:
    """The one accepted completion of a prompt "a+b=": str(a + b) ("37+48=" -> "85")."""
    m = _PROMPT.fullmatch(prompt)
    if not m:
        raise ValueError(f"not an arithmetic prompt 'a+b=': {prompt!r}")
    return str(int(m.group(1)) + int(m.group(2)))


def arith_split() -> tuple[list[str], list[str]]:
    """(train, held_out) prompts: every pair a, b in 0..ARITH_MAX, HELDOUT_SIZE of them held out, fixed by SPLIT_SEED."""
    pairs = [(a, b) for a in range(ARITH_MAX + 1) for b in range(ARITH_MAX + 1)]
    random.Random(SPLIT_SEED).shuffle(pairs)
    held = [arith_prompt(a, b) for a, b in pairs[:HELDOUT_SIZE]]
    return [arith_prompt(a, b) for a, b in pairs[HELDOUT_SIZE:]], held


def check_answer(prompt: str, completion: str) -> str:
    """'correct', 'wrong' or 'malformed': the completion must be exactly one number in canonical form (no sign, no
    leading zeros, no spaces, nothing before or after it); well-formed, it is correct iff it equals a + b."""
    if not _NUMBER.fullmatch(completion):
        return "malformed"
    return "correct" if completion == answer_of(prompt) else "wrong"


def arith_score(prompt: str, completion: str, format_bonus: float = 0.0) -> float:
    """The verifiable reward: 1 correct, `format_bonus` a well-formed wrong number, 0 malformed."""
    verdict = check_answer(prompt, completion)
    return 1.0 if verdict == "correct" else format_bonus if verdict == "wrong" else 0.0


class ArithmeticReward:
    """A reward with the kit's signature: (prompts, completions) -> (B,) tensor of arith_score."""

    def __init__(self, format_bonus: float = 0.0):
        self.format_bonus = format_bonus

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([arith_score(p, c, self.format_bonus) for p, c in zip(prompts, completions)])


@dataclass
class Task:
    model: str | None  # None: the run's --model
    prompts: list[str] | None  # None: the review prompts (rlhf_nb.corpus.PROMPTS)
    reward: Callable | None  # None: the run's --reward


def get_task(name: str) -> Task:
    if name == "reviews":
        return Task(None, None, None)
    if name in ("arithmetic", "arithmetic_format"):
        return Task(str(ARITH_MODEL_DIR), arith_split()[0],
                    ArithmeticReward(FORMAT_BONUS if name == "arithmetic_format" else 0.0))
    raise ValueError(f"--task must be one of {', '.join(TASK_CHOICES)}; got {name!r}")


def task_parts(cfg) -> tuple[str, list[str], Callable]:
    """(model, prompts, reward) of a RunConfig: its --task's, where the task fixes them, else --model, the review
    prompts and --reward. --model other than 'embedded' always wins (a checkpoint of the task's model)."""
    from .corpus import PROMPTS
    from .policy import EMBEDDED
    from .rewards import reward_for

    t = get_task(cfg.task)
    model = t.model if t.model and cfg.model == EMBEDDED else cfg.model
    return model, list(t.prompts or PROMPTS), t.reward or reward_for(cfg.reward, cfg.reward_model)
