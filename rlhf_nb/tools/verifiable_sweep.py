"""`make verifiable`: lesson 12's runs (rlhf_nb.course.verifiable.METHODS x VERIFIABLE_SEEDS) on the arithmetic task,
each judged by exact pass@k on the held-out prompts, stored in rlhf_nb/assets/verifiable-sweep.json.

Every run seeds itself, so the numbers do not depend on --jobs or on the order the runs finish in.

    python -m rlhf_nb.tools.verifiable_sweep --jobs 2     (about 4 CPU minutes)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..config import option
from ..course.verifiable import COMMON, METHODS, PRUNE, VERIFIABLE_PATH, VERIFIABLE_SEEDS, base_p, run_method
from ..runlog import write_json_atomically
from . import SweepOptions, parallel_map, parse_sweep_args


def jobs_list() -> list[tuple[str, int]]:
    return [(m, s) for m in METHODS for s in VERIFIABLE_SEEDS]


def one_run(job: tuple[str, int]) -> dict:
    import torch

    torch.set_num_threads(1)
    return run_method(*job)


@dataclass
class VerifiableOptions(SweepOptions):
    """`python -m rlhf_nb.tools.verifiable_sweep`: how many processes, and where the file goes."""

    out: str = option(str(VERIFIABLE_PATH), "the JSON to write (replaced atomically at the end)")


def parse_args(argv=None) -> VerifiableOptions:
    return parse_sweep_args(VerifiableOptions, argv, "python -m rlhf_nb.tools.verifiable_sweep", __doc__)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t0, c0 = time.time(), time.process_time()
    p, rest = base_p()
    out = {"command": "python -m rlhf_nb.tools.verifiable_sweep  (make verifiable)", "common": COMMON,
           "methods": METHODS, "seeds": list(VERIFIABLE_SEEDS), "prune": PRUNE,
           "base_p": [round(float(x), 6) for x in p], "base_remainder_max": float(rest.max()),
           "runs": {m: [] for m in METHODS}}
    jobs = jobs_list()
    for (m, s), r in zip(jobs, parallel_map(one_run, jobs, args.jobs)):
        out["runs"][m].append(r)
        print(f"{m:24s} seed {s}: pass@1 {sum(r['p']) / len(r['p']):.3f}  {r['cpu_s']:.0f} CPU s  "
              f"({time.time() - t0:.0f} s)", flush=True)
    out["cpu_s"] = round(sum(r["cpu_s"] for rs in out["runs"].values() for r in rs) + time.process_time() - c0)
    write_json_atomically(args.out, out)
    print(f"wrote {args.out} ({len(jobs)} runs, {out['cpu_s']} CPU s)")
    return out


if __name__ == "__main__":
    main()
