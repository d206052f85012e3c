"""One seed fixes everything: Python, NumPy, torch, and the CPU thread count."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

DEFAULT_THREADS = 1  # float sums change in the ~7th digit with the thread count; fix it so printed numbers reproduce


def seed_everything(seed: int, threads: int | None = DEFAULT_THREADS) -> torch.Generator:
    """Seed python, numpy and torch (all devices); fix the CPU thread count (0: every core this process may use).
    Returns a torch.Generator seeded with `seed`."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not (0 <= seed < 2**32):
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if threads is not None:
        torch.set_num_threads(threads or all_cores())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def all_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1
