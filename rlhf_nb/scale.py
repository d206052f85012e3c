"""Lesson 07 (scale with TRL): exercise checkers `check_…(answer) -> bool` that print a verdict and, when wrong, why.

The answers are checked against the package itself: `group_advantages` for the group baseline, and the bridge's
`KNOB_MAP` / `UNMAPPED` for where an rlhf_nb knob goes in TRL.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .advantages import group_advantages
from .bridges.trl import KNOB_MAP, UNMAPPED
from .checks import TODO, _verdict

NO_COUNTERPART = "none"  # the answer for a knob TRL's GRPO/RLOO have no field for


def check_group_advantage(answer: Any, scores: Sequence[float], num_generations: int, method: str = "grpo") -> bool:
    """Exercise 1: the group-relative advantage of every completion (a list of B numbers, 3 decimals suffice)."""
    name = f"{method} advantages"
    s = torch.tensor([float(x) for x in scores])
    want = group_advantages(s, num_generations, method=method).tolist()
    if answer is None:
        print(f"{TODO} — {name}: set `answer` to a list of {len(want)} numbers, one per completion")
        return False
    try:
        got = [float(x) for x in answer]
    except (TypeError, ValueError):
        return _verdict(False, name, f"answer with a list of {len(want)} numbers; got {answer!r}")
    if len(got) != len(want) or not all(math.isfinite(x) for x in got):
        return _verdict(False, name, f"answer with {len(want)} finite numbers, one per completion; got {len(got)}")
    if method == "grpo":
        how = ("A_i = (r_i − mean of its group) / (std of its group + 1e-4), std unbiased (divide by k − 1), "
               f"groups of {num_generations} consecutive completions")
    else:
        how = ("A_i = r_i − mean of the other k − 1 in its group, then whitened over the batch: "
               "(A − mean)/(std + 1e-4)")
    ok = all(abs(g - w) < 1e-3 for g, w in zip(got, want))
    return _verdict(ok, name, f"{how} gives {[round(w, 3) for w in want]}")


def check_knob(name: str, answer: Any) -> bool:
    """Exercise 2: the TRL config field that rlhf_nb's RunConfig knob `name` maps to (or "none" if TRL has none)."""
    title = f"where `{name}` goes in TRL"
    key = next((k for k in KNOB_MAP if name in [x.strip() for x in k.split(",")]), None)
    if key is None and name not in UNMAPPED:
        raise ValueError(f"{name!r} is neither in KNOB_MAP nor in UNMAPPED (rlhf_nb/bridges/trl.py)")
    if answer is None:
        print(f"{TODO} — {title}: set `answer` to a TRL field name as a string, or {NO_COUNTERPART!r}")
        return False
    if not isinstance(answer, str):
        return _verdict(False, title, f"answer with a string (a GRPOConfig field name); got {answer!r}")
    got = answer.strip().lower()
    if key is None:
        return _verdict(got == NO_COUNTERPART, title, f"TRL's GRPO/RLOO have no counterpart: {UNMAPPED[name]}")
    fields, how = KNOB_MAP[key]
    want = [f.strip().lower() for f in fields.split(",")]
    return _verdict(got in want, title, f"`{fields}`: {how}")
