"""`make capstone`: lesson 06's β sweep and its β = 0.05 variants, run to the end and stored
(rlhf_nb/assets/capstone-sweep.json).

Each run is `rlhf_nb.course.experiments.run_experiment` with CAPSTONE_RUN's settings: the sweep is every β of
SWEEP_BETAS × every seed of SWEEP_SEEDS; the variants change one thing at β = 0.05 (CAPSTONE_VARIANTS). Every run seeds
itself, so the numbers do not depend on --jobs or on the order the runs finish in; lesson 06 re-runs one of them live
and checks that it matches the file to the last stored digit.

    python -m rlhf_nb.tools.capstone_sweep --jobs 2     # make capstone (about 15 CPU minutes, half that in wall time)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..cli import cli_from_dataclass
from ..config import Options, check_output_file, option
from ..course.experiments import (CAPSTONE_PATH, CAPSTONE_RUN, CAPSTONE_VARIANT_BETA, CAPSTONE_VARIANTS, SWEEP_BETAS,
                                  SWEEP_SEEDS, result_to_dict, run_settings)
from ..runlog import write_json_atomically
from . import parallel_map


def jobs_list() -> list[tuple[str, float, int, dict]]:
    """(group, β, seed, settings) of every run: group is "sweep" or a CAPSTONE_VARIANTS label. The settings travel
    with the job, so a worker process runs what this list says (experiments.run_capstone is the same run)."""
    runs = [("sweep", b, s, dict(CAPSTONE_RUN)) for b in SWEEP_BETAS for s in SWEEP_SEEDS]
    runs += [(label, CAPSTONE_VARIANT_BETA, s, {**CAPSTONE_RUN, **change})
             for label, change in CAPSTONE_VARIANTS.items() for s in SWEEP_SEEDS]
    return runs


def one_run(job: tuple[str, float, int, dict]) -> dict:
    """Run one job in this process (one torch thread, as RunConfig's default) and return it as stored."""
    _, beta, seed, settings = job
    return result_to_dict(run_settings(beta, seed, settings))


@dataclass
class CapstoneOptions(Options):
    """`python -m rlhf_nb.tools.capstone_sweep`: how many processes, and where the file goes. What runs is lesson 06's
    (rlhf_nb.course.experiments: CAPSTONE_RUN, SWEEP_BETAS, SWEEP_SEEDS, CAPSTONE_VARIANTS), which the lesson checks
    its live run against."""

    jobs: int = option(1, "processes running the runs side by side (the numbers do not depend on it)", 1, 64)
    out: str = option(str(CAPSTONE_PATH), "the JSON to write (replaced atomically at the end)")
    overwrite: bool = option(False, "replace a JSON that is a committed asset (the default --out): without it, a "
                             "sweep over rlhf_nb/assets is refused before any work")


def check_options(o: CapstoneOptions) -> None:
    """The file can be written: checked now, not after 20 CPU minutes of runs."""
    check_output_file(o.out, o.overwrite)


def parse_args(argv=None) -> CapstoneOptions:
    return cli_from_dataclass(CapstoneOptions, argv, prog="python -m rlhf_nb.tools.capstone_sweep",
                              description=__doc__.split("\n\n")[0], check=check_options)


def main(argv=None) -> dict:
    args = parse_args(argv)
    jobs = jobs_list()
    t0 = time.time()
    out = {"command": "python -m rlhf_nb.tools.capstone_sweep  (make capstone)", "settings": CAPSTONE_RUN,
           "variant_beta": CAPSTONE_VARIANT_BETA, "variants_changed": CAPSTONE_VARIANTS,
           "sweep": {str(b): [] for b in SWEEP_BETAS}, "variants": {k: [] for k in CAPSTONE_VARIANTS}}
    for (group, beta, seed, _), r in zip(jobs, parallel_map(one_run, jobs, args.jobs)):
        (out["sweep"][str(beta)] if group == "sweep" else out["variants"][group]).append(r)
        f = r["final"]
        print(f"{group:22s} beta {beta:<4g} seed {seed}: score {f['objective/scores']:+.3f}  "
              f"KL {f['objective/kl']:6.2f}  warnings {len(r['warnings'])}  {r['cpu_s']:.0f} CPU s  "
              f"({time.time() - t0:.0f} s)", flush=True)
    out["cpu_s"] = round(sum(r["cpu_s"] for g in ("sweep", "variants") for rs in out[g].values() for r in rs))
    write_json_atomically(args.out, out)
    print(f"wrote {args.out} ({len(jobs)} runs, {out['cpu_s']} CPU s)")
    return out


if __name__ == "__main__":
    main()
