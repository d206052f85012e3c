"""rlhf_nb: RLHF with PPO, built step by step in notebooks, on a laptop CPU."""
from __future__ import annotations

import os as _os

_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .seeding import seed_everything  # noqa: E402

__version__ = "0.1.0"
__all__ = ["seed_everything", "__version__"]
