"""rlhf_nb: RLHF with PPO, built step by step in notebooks, on a laptop CPU.

    import rlhf_nb
    model, tok = rlhf_nb.load_policy()                      # the embedded tiny GPT-2
    ro = rlhf_nb.sample(model, tok, ["The acting was"], max_new_tokens=12)
    rlhf_nb.get_reward("sentiment")(ro.prompts, ro.completions)
    from rlhf_nb.train import train; train(rlhf_nb.RunConfig(steps_per_epoch=10))
"""
from __future__ import annotations

import importlib
import os as _os

_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"

# heavy modules load on first use, so `import rlhf_nb` stays fast
_LAZY = {"seed_everything": "seeding", "load_policy": "policy", "sample": "policy", "get_reward": "rewards",
         "REWARD_NAMES": "rewards", "RunConfig": "config", "PROMPTS": "corpus", "pass_at_k": "passk"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'rlhf_nb' has no attribute {name!r}")
