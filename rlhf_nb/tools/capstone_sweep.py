"""`make capstone`: lesson 06's β sweep, its β = 0.05 variants and its reference-refresh runs, run to the end and
stored (rlhf_nb/assets/capstone-sweep.json).

Each sweep run is `rlhf_nb.course.experiments.run_experiment` with CAPSTONE_RUN's settings: every β of SWEEP_BETAS ×
every seed of SWEEP_SEEDS; the variants change one thing at β = 0.05 (CAPSTONE_VARIANTS). The refresh runs are
`run_refresh` at REFRESH_RUN, with a fixed reference and with one refreshed every REFRESH_EVERY steps, per seed of
REFRESH_SEEDS. Every run seeds itself, so the numbers do not depend on --jobs or on the order the runs finish in;
lesson 06 re-runs one sweep run and one refresh run live and checks that they match the file to the last stored digit.

    python -m rlhf_nb.tools.capstone_sweep --jobs 2     # make capstone (about 15 CPU minutes, half that in wall time)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..config import option
from ..course.experiments import (CAPSTONE_PATH, CAPSTONE_RUN, CAPSTONE_VARIANT_BETA, CAPSTONE_VARIANTS, REFRESH_EVERY,
                                  REFRESH_RUN, REFRESH_SEEDS, SWEEP_BETAS, SWEEP_SEEDS, refresh_to_dict, result_to_dict,
                                  run_refresh, run_settings)
from ..runlog import write_json_atomically
from . import SweepOptions, parallel_map, parse_sweep_args


REFRESH_GROUPS = {"fixed": None, "refreshed": REFRESH_EVERY}  # steps between reference refreshes (None: never)


def jobs_list() -> list[tuple[str, float, int, dict]]:
    """(group, β, seed, settings) of every run: group is "sweep", a CAPSTONE_VARIANTS label, or "refresh fixed" /
    "refresh refreshed". The settings travel with the job, so a worker process runs what this list says
    (experiments.run_capstone and run_refresh are the same runs)."""
    runs = [("sweep", b, s, dict(CAPSTONE_RUN)) for b in SWEEP_BETAS for s in SWEEP_SEEDS]
    runs += [(label, CAPSTONE_VARIANT_BETA, s, {**CAPSTONE_RUN, **change})
             for label, change in CAPSTONE_VARIANTS.items() for s in SWEEP_SEEDS]
    runs += [(f"refresh {name}", REFRESH_RUN["kl_coef"], s, {**REFRESH_RUN, "every": every})
             for name, every in REFRESH_GROUPS.items() for s in REFRESH_SEEDS]
    return runs


def one_run(job: tuple[str, float, int, dict]) -> dict:
    """Run one job in this process (one torch thread, as RunConfig's default) and return it as stored."""
    group, beta, seed, settings = job
    if group.startswith("refresh "):
        settings = dict(settings)
        every = settings.pop("every")
        # a fixed reference's logged KL is already the KL to π_0: measured once, after the last step (as lesson 06)
        return refresh_to_dict(run_refresh(every, seed, measure_at=None if every else (settings["steps"],),
                                           **settings))
    return result_to_dict(run_settings(beta, seed, settings))


@dataclass
class CapstoneOptions(SweepOptions):
    """`python -m rlhf_nb.tools.capstone_sweep`: how many processes, and where the file goes. What runs is lesson 06's
    (rlhf_nb.course.experiments: CAPSTONE_RUN, SWEEP_BETAS, SWEEP_SEEDS, CAPSTONE_VARIANTS), which the lesson checks
    its live run against."""

    out: str = option(str(CAPSTONE_PATH), "the JSON to write (replaced atomically at the end)")


def parse_args(argv=None) -> CapstoneOptions:
    return parse_sweep_args(CapstoneOptions, argv, "python -m rlhf_nb.tools.capstone_sweep", __doc__)


def main(argv=None) -> dict:
    args = parse_args(argv)
    jobs = jobs_list()
    t0 = time.time()
    out = {"command": "python -m rlhf_nb.tools.capstone_sweep  (make capstone)", "settings": CAPSTONE_RUN,
           "variant_beta": CAPSTONE_VARIANT_BETA, "variants_changed": CAPSTONE_VARIANTS,
           "refresh_settings": {**REFRESH_RUN, "every": REFRESH_EVERY},
           "sweep": {str(b): [] for b in SWEEP_BETAS}, "variants": {k: [] for k in CAPSTONE_VARIANTS},
           "refresh": {k: [] for k in REFRESH_GROUPS}}
    for (group, beta, seed, _), r in zip(jobs, parallel_map(one_run, jobs, args.jobs)):
        if group.startswith("refresh "):
            out["refresh"][group.removeprefix("refresh ")].append(r)
            score = r["history"]["objective/scores"][-1]
            kl = f"KL to pi_0 {r['kl_to_original'][max(r['kl_to_original'], key=int)]:6.2f}"
        else:
            (out["sweep"][str(beta)] if group == "sweep" else out["variants"][group]).append(r)
            score, kl = r["final"]["objective/scores"], f"KL {r['final']['objective/kl']:6.2f}"
        print(f"{group:22s} beta {beta:<4g} seed {seed}: score {score:+.3f}  {kl}  warnings {len(r['warnings'])}  "
              f"{r['cpu_s']:.0f} CPU s  ({time.time() - t0:.0f} s)", flush=True)
    out["cpu_s"] = round(sum(r["cpu_s"] for g in ("sweep", "variants", "refresh") for rs in out[g].values() for r in rs))
    write_json_atomically(args.out, out)
    print(f"wrote {args.out} ({len(jobs)} runs, {out['cpu_s']} CPU s)")
    return out


if __name__ == "__main__":
    main()
