"""Lesson 00's smoke run at the notebook's default parameters, once per seed, stored
(rlhf_nb/assets/smoke-seeds.json).

Lesson 00 trains one seed live and shows the others from this file, so it can say how much of its curve holds across
seeds without training two more policies (about 20 CPU seconds each). The defaults are read from the `parameters`
cell of notebooks/00_smoke.ipynb, the one place they live; the lesson checks that its live run is the stored run of
the same seed, step for step, so a change of defaults shows up as a changed notebook output (then re-run this).

    python -m rlhf_nb.tools.smoke_seeds --overwrite     # make smoke-seeds: seeds 0 1 2, about a CPU minute
"""
from __future__ import annotations

import ast
import time
from dataclasses import dataclass

from ..cli import cli_from_dataclass
from ..config import Options, check_output_file, option
from ..course.experiments import SMOKE_PARAMS, SMOKE_SEEDS_PATH, result_to_dict, run_smoke
from ..runlog import write_json_atomically


def notebook_defaults() -> dict:
    """{parameter: default} for the parameters that shape the smoke run (SMOKE_PARAMS), from the notebook."""
    from .smoke import notebook_parameters

    spec = notebook_parameters()
    return {k: ast.literal_eval(spec[k][2]) for k in SMOKE_PARAMS}


@dataclass
class SmokeSeedsOptions(Options):
    """`python -m rlhf_nb.tools.smoke_seeds`: which seeds, and where the file goes."""

    seeds: tuple[int, ...] = option((0, 1, 2), "seeds of the stored runs", 0, 2**32 - 1)
    out: str = option(str(SMOKE_SEEDS_PATH), "the JSON to write (replaced atomically at the end)")
    overwrite: bool = option(False, "replace a JSON that is a committed asset (the default --out): without it, runs "
                             "into rlhf_nb/assets are refused before any work")


def check_options(o: SmokeSeedsOptions) -> None:
    check_output_file(o.out, o.overwrite)


def main(argv=None) -> dict:
    args = cli_from_dataclass(SmokeSeedsOptions, argv, prog="python -m rlhf_nb.tools.smoke_seeds",
                              description=__doc__.split("\n\n")[0], check=check_options)
    params = notebook_defaults()
    out = {"command": "python -m rlhf_nb.tools.smoke_seeds  (make smoke-seeds)", "params": params, "runs": []}
    t0 = time.time()
    for seed in args.seeds:
        r = result_to_dict(run_smoke(params, seed))
        out["runs"].append(r)
        f = r["final"]
        print(f"seed {seed}: score {f['objective/scores']:+.3f}  KL {f['objective/kl']:5.2f}  "
              f"warnings {len(r['warnings'])}  {r['cpu_s']:.0f} CPU s  ({time.time() - t0:.0f} s)", flush=True)
    write_json_atomically(args.out, out)
    print(f"wrote {args.out} ({len(args.seeds)} runs at {params})")
    return out


if __name__ == "__main__":
    main()
