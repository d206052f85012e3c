"""Tools that build the kit's assets and measure it — not part of the algorithm or the lessons.

    base_model          `make base-model`: train the embedded tiny GPT-2 and its tokenizer
    build_reward_model  `make reward-model`: train the committed reward model from simulated preferences
    smoke               `make smoke`: run notebooks/00_smoke.ipynb with papermill into runs/run_*/
    notebooks           `make notebooks`: re-execute every lesson and store its outputs
    check_install       `make check`: verify the install
    bench, bench_report, bench_trl   `make bench`: speed, memory, learning curves -> docs/benchmarks.md
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator


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

