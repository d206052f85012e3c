"""Tools that build the kit's assets and measure it — not part of the algorithm or the lessons. Each is a command,
`python -m rlhf_nb.tools.<name>`, behind a Makefile target; the README's package map lists them by what they are for
(committed models, the lessons' stored runs, measurements, running). This module holds what several share: running a
sweep's jobs side by side (parallel_map) and a sweep's command line (SweepOptions, parse_sweep_args).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..cli import cli_from_dataclass
from ..config import Options, check_output_file, option


def parallel_map(fn: Callable[[Any], Any], items: Iterable[Any], processes: int) -> Iterator[Any]:
    """fn over items, results in order as they come: in `processes` fresh interpreters (spawn, so no torch state is
    forked from this one), or in this process when processes <= 1. The sweeps' results do not depend on it."""
    items = list(items)
    if processes <= 1:
        yield from map(fn, items)
        return
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(processes, multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, items)


@dataclass
class SweepOptions(Options):
    """The command line every sweep tool shares (capstone_sweep, grpo_sweep, verifiable_sweep): where its JSON goes and
    how many processes run its runs. A subclass gives `out` its default, the committed asset its lesson reads."""

    out: str = option("", "the JSON to write (replaced atomically at the end)")
    jobs: int = option(1, "processes running the runs side by side (the numbers do not depend on it)", 1, 64)
    overwrite: bool = option(False, "replace a JSON that is a committed asset (the default --out): without it, a "
                             "sweep over rlhf_nb/assets is refused before any work")


def parse_sweep_args(cls: type[SweepOptions], argv: Sequence[str] | None, prog: str, doc: str) -> SweepOptions:
    """A sweep tool's flags; the output file is checked now (writable, a committed asset only with --overwrite), not
    after minutes of CPU spent on runs."""
    return cli_from_dataclass(cls, argv, prog=prog, description=doc.split("\n\n")[0],
                              check=lambda o: check_output_file(o.out, o.overwrite))
