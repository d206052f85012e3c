"""`make grpo_sweep`: lesson 11's GRPO variants, every one over every seed, run to the end and stored
(rlhf_nb/assets/grpo-sweep.json), with the KL-regularised optimum J* at the sweep's β.

Each run is `rlhf_nb.course.grpo_lesson.run_variant` (GRPO_RUN with one of GRPO_VARIANTS' changes). Every run seeds
itself, so the numbers do not depend on --jobs; lesson 11 re-runs one of them live and checks that it matches the file.

    python -m rlhf_nb.tools.grpo_sweep --jobs 2     # make grpo_sweep (about 11 CPU minutes, half that in wall time)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..config import option
from ..course.grpo_lesson import (GRPO_BETA, GRPO_RUN, GRPO_SEEDS, GRPO_SWEEP_PATH, GRPO_VARIANTS, OPTIMUM_SAMPLES,
                                  grpo_result_to_dict, run_settings_beta)
from ..runlog import write_json_atomically
from . import SweepOptions, parallel_map, parse_sweep_args


def jobs_list() -> list[tuple[str, int, dict]]:
    """(label, seed, settings) of every run; the settings travel with the job (grpo_lesson.run_variant runs the same)."""
    return [(label, s, {**GRPO_RUN, **change}) for label, change in GRPO_VARIANTS.items() for s in GRPO_SEEDS]


def one_run(job: tuple[str, int, dict]) -> dict:
    """Run one job in this process (one torch thread, RunConfig's default) and return it as stored."""
    _, seed, settings = job
    return grpo_result_to_dict(run_settings_beta(seed, settings))


def optimum() -> dict:
    """J* at GRPO_BETA from OPTIMUM_SAMPLES base samples a prompt at the runs' max_new_tokens (rlhf_nb.optimum)."""
    from ..optimum import optimum_by_prompt, score_base_samples

    scores, prompts = score_base_samples(OPTIMUM_SAMPLES, max_new_tokens=GRPO_RUN["max_new_tokens"], seed=0)
    return optimum_by_prompt(scores, prompts, GRPO_BETA)


@dataclass
class GrpoSweepOptions(SweepOptions):
    """`python -m rlhf_nb.tools.grpo_sweep`: how many processes, and where the file goes. What runs is lesson 11's
    (rlhf_nb.course.grpo_lesson: GRPO_RUN, GRPO_BETA, GRPO_SEEDS, GRPO_VARIANTS)."""

    out: str = option(str(GRPO_SWEEP_PATH), "the JSON to write (replaced atomically at the end)")


def parse_args(argv=None) -> GrpoSweepOptions:
    return parse_sweep_args(GrpoSweepOptions, argv, "python -m rlhf_nb.tools.grpo_sweep", __doc__)


def main(argv=None) -> dict:
    args = parse_args(argv)
    jobs = jobs_list()
    t0 = time.time()
    out = {"command": "python -m rlhf_nb.tools.grpo_sweep  (make grpo_sweep)", "settings": GRPO_RUN,
           "beta": GRPO_BETA, "seeds": list(GRPO_SEEDS), "variants": GRPO_VARIANTS, "runs": {k: [] for k in GRPO_VARIANTS}}
    for (label, seed, _), r in zip(jobs, parallel_map(one_run, jobs, args.jobs)):
        out["runs"][label].append(r)
        f = r["final"]
        print(f"{label:34s} seed {seed}: score {f['objective/scores']:+.3f}  KL {f['objective/kl']:6.2f}  "
              f"entropy {f['policy/entropy']:.3f}  warnings {len(r['warnings'])}  {r['cpu_s']:.0f} CPU s  "
              f"({time.time() - t0:.0f} s)", flush=True)
    out["optimum"] = optimum()
    out["cpu_s"] = round(sum(r["cpu_s"] for rs in out["runs"].values() for r in rs))
    write_json_atomically(args.out, out)
    print(f"wrote {args.out} ({len(jobs)} runs, {out['cpu_s']} CPU s; J* {out['optimum']['J_star']:.4f})")
    return out


if __name__ == "__main__":
    main()
