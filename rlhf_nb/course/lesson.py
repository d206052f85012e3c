"""The first cell of every notebook: `device = start(seed=0)` — seed, threads, quiet libraries, plot defaults, and a
figure text that nbval can compare."""
from __future__ import annotations

import os
import warnings

import torch

from ..seeding import seed_everything


def start(seed: int = 0, device: str = "cpu") -> torch.device:
    """Make a notebook reproducible and quiet: the same printed numbers on every run, on every machine.

    Lessons run on the CPU by default even where a GPU exists, because GPU kernels change float sums and the
    stored outputs (checked by nbval) must reproduce; pass device="auto" to use a GPU for your own experiments."""
    os.environ["TQDM_DISABLE"] = "1"  # progress bars print rates (it/s) that change run to run
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import matplotlib

    matplotlib.rcParams.update({"figure.figsize": (7, 3.2), "figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
    _figure_text_with_data()
    torch.set_printoptions(precision=4, sci_mode=False)
    seed_everything(seed)
    from ..policy import pick_device

    return pick_device(device)


def _figure_text_with_data() -> None:
    """Store each shown figure's text/plain as `<Figure 2 axes · data 3f2a9c1b04de>`, a hash of its data.

    nbval skips image outputs (PNG bytes differ across machines), but it compares text/plain, and the inline
    backend shows a figure with display(fig), so that text is stored beside every plot: a changed plot fails nbval."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:  # plain Python: nothing is displayed
        return
    from matplotlib.figure import Figure

    from .plots import figure_text

    try:  # importing the inline backend sets up IPython's figure formats and drops every printer for Figure, so
        import matplotlib_inline.backend_inline  # noqa: F401  first let it do that, then register ours
    except ImportError:
        pass
    ip.display_formatter.formatters["text/plain"].for_type(Figure, lambda fig, p, cycle: p.text(figure_text(fig)))
