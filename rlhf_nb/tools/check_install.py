"""`make check`: verify the install — imports, the embedded model loads and samples, every reward scores."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from ..cli import cli_from_dataclass
from ..config import Options


@dataclass
class CheckInstallOptions(Options):
    """`python -m rlhf_nb.tools.check_install` takes no flags: it checks the install as it is."""


def main(argv: list[str] | None = None) -> int:
    cli_from_dataclass(CheckInstallOptions, argv, prog="python -m rlhf_nb.tools.check_install", description=__doc__)
    t0 = time.perf_counter()
    import torch
    import transformers

    from .. import __version__
    from ..policy import load_policy, sample
    from ..rewards import REWARD_NAMES, get_reward
    from ..seeding import seed_everything

    print(f"rlhf_nb {__version__}  torch {torch.__version__}  transformers {transformers.__version__}  "
          f"cuda {'yes' if torch.cuda.is_available() else 'no'}")
    g = seed_everything(0)
    model, tok = load_policy()
    n = sum(p.numel() for p in model.parameters())
    print(f"embedded model: {n / 1e6:.2f} M parameters, loaded in {time.perf_counter() - t0:.1f} s since start")
    ro = sample(model, tok, ["The acting was", "I thought the plot"], max_new_tokens=12, generator=g)
    for name in REWARD_NAMES:
        scores = get_reward(name)(ro.prompts, ro.completions)
        print(f"  reward {name:10s} {[round(float(x), 3) for x in scores]}")
    for p, c in zip(ro.prompts, ro.completions):
        print(f"  sample: {p}{c}")
    print("check ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
