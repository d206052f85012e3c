"""The learning-rate schedule: a linear warm-up, then constant, linear or cosine decay to the run's last step.

The rate is a function of the step alone, so resuming a run needs no scheduler state.
"""
from __future__ import annotations

import math

import torch

from .config import RunConfig


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: the learning rate is lr·(step + 1)/N for the first N steps (step counts from 0), then lr."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def lr_factor(step: int, cfg: RunConfig) -> float:
    """This step's learning rate over --learning_rate: the warm-up, then --lr_decay down to 1/(steps left) at the last
    of the run's epochs * steps_per_epoch steps (never 0 inside the run); a function of the step alone."""
    if step < cfg.lr_warmup_steps or cfg.lr_decay == "constant":
        return warmup_factor(step, cfg.lr_warmup_steps)
    frac = min(1.0, (step - cfg.lr_warmup_steps) / max(1, cfg.total_steps - cfg.lr_warmup_steps))
    return 1.0 - frac if cfg.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))


def set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Each group's learning rate = its rate at construction × factor (the rate is a function of the step alone, so
    an exact resume needs no scheduler state)."""
    for g in optimizer.param_groups:
        g["lr"] = g.setdefault("initial_lr", g["lr"]) * factor
