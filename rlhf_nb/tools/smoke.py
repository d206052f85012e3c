"""`make smoke`: run notebooks/00_smoke.ipynb headlessly with papermill into a fresh runs/run_*/ folder."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..runlog import new_run_dir

ROOT = Path(__file__).resolve().parents[2]
SMOKE_NB = ROOT / "notebooks" / "00_smoke.ipynb"
# the kernel's own start-up notice ("running over TCP without encryption") is about a local, loopback-only
# connection; it would be the loudest line of `make smoke`, so the kernel logs errors only
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


def notebook_parameters(path: Path = SMOKE_NB) -> dict[str, tuple[str, str]]:
    """{name: (type name, help)} of the notebook's `parameters` cell — the one place the smoke defaults live."""
    import papermill as pm

    return {name: (spec["inferred_type_name"], spec["help"])
            for name, spec in pm.inspect_notebook(str(path)).items() if name != "out_dir"}


def main(argv: list[str] | None = None) -> int:
    """Flags mirror the notebook's parameters; only the flags given are passed, so the notebook's defaults rule."""
    p = argparse.ArgumentParser(prog="python -m rlhf_nb.tools.smoke", description=__doc__,
                                epilog="defaults: see the parameters cell of notebooks/00_smoke.ipynb")
    types = {"int": int, "float": float, "str": str}
    for name, (typ, help_) in notebook_parameters().items():
        p.add_argument(f"--{name}", type=types.get(typ, str), default=None, help=help_)
    p.add_argument("--out", default=str(ROOT / "runs"), help="parent folder of the run folder")
    args = p.parse_args(argv)

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    run_dir = new_run_dir(args.out)
    out_nb = run_dir / "smoke.ipynb"
    params = {k: v for k, v in vars(args).items() if k != "out" and v is not None}
    params["out_dir"] = str(run_dir)
    print(f"running {SMOKE_NB.relative_to(ROOT)} with {params}")
    try:
        pm.execute_notebook(str(SMOKE_NB), str(out_nb), parameters=params, kernel_name="python3",
                            progress_bar=False, cwd=str(ROOT / "notebooks"), extra_arguments=QUIET_KERNEL)
    except PapermillExecutionError as e:
        # the config validation's one line, e.g. "ConfigError: --batch_size must be in [1, 4096], got 0"
        print(f"smoke failed: {e.ename}: {e.evalue}\nthe failed notebook is at {out_nb}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    print(f"smoke run finished in {dt:.1f} s; everything is in {run_dir}/:")
    for rel in ("smoke.ipynb", "summary.png", "config.json", "logs/train.jsonl", "logs/train.log", "samples.jsonl",
                "tb", "checkpoints", "final"):
        path = run_dir / rel
        print(f"  {'ok ' if path.exists() else 'MISSING'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
