"""`make smoke`: run notebooks/00_smoke.ipynb headlessly with papermill into a fresh runs/run_*/ folder."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import fields, make_dataclass
from pathlib import Path

from ..cli import cli_from_dataclass
from ..config import Options, RunConfig, check_output_writable, option
from ..runlog import new_run_dir

ROOT = Path(__file__).resolve().parents[2]
SMOKE_NB = ROOT / "notebooks" / "00_smoke.ipynb"
# the kernel's own start-up notice ("running over TCP without encryption") is about a local, loopback-only
# connection; it would be the loudest line of `make smoke`, so the kernel logs errors only
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


def notebook_parameters(path: Path = SMOKE_NB) -> dict[str, tuple[str, str, str]]:
    """{name: (type name, help, default as written)} of the notebook's `parameters` cell — the one place the smoke
    defaults live."""
    import papermill as pm

    return {name: (spec["inferred_type_name"], spec["help"], spec["default"])
            for name, spec in pm.inspect_notebook(str(path)).items() if name != "out_dir"}


def main(argv: list[str] | None = None) -> int:
    """Flags mirror the notebook's parameters; only the flags given are passed, so the notebook's defaults rule.

    Exit status 0, 1 when the notebook fails, 130 after Ctrl-C (the run folder keeps what the run wrote)."""
    run = {"dir": None, "ctrl_c": False}
    old = _wait_on_first_ctrl_c(run)
    try:
        return _smoke(argv, run)
    except KeyboardInterrupt:
        return _interrupted(run)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def _wait_on_first_ctrl_c(run: dict):
    """The kernel runs in its own session, so a terminal's Ctrl-C reaches only this process. Once the notebook runs,
    the first Ctrl-C is passed on to the kernel, where train() stops after its step and writes final/, and papermill
    waits for the notebook to end (dying mid-cell would cut the kernel off). A second one, or one during start-up,
    interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        pid = getattr(getattr(run.get("km"), "provisioner", None), "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGINT)
            except OSError:  # the kernel has already gone
                pass
        if run["ctrl_c"] or run["dir"] is None:
            raise KeyboardInterrupt
        run["ctrl_c"] = True
        os.write(2, b"\nCtrl-C: the notebook's run stops after this step and writes final/ (Ctrl-C again abandons it)\n")

    return signal.signal(signal.SIGINT, handler)


def _kernel_manager_that_registers(run: dict):
    """nbclient's kernel manager, remembering itself so that the Ctrl-C handler can find the kernel's process."""
    from jupyter_client.manager import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            run["km"] = self

    return KernelManager


def _after_ctrl_c(run_dir: Path) -> str:
    """What the Ctrl-C did: the kernel ignores it between cells, so the run may have finished all the same."""
    import json

    try:
        step = json.loads((run_dir / "final" / "trainer_state.json").read_text())["step"]
        cfg = json.loads((run_dir / "config.json").read_text())
        total = cfg["epochs"] * cfg["steps_per_epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"smoke interrupted (Ctrl-C); what was written is in {run_dir}"
    if step < total:
        return (f"smoke stopped by Ctrl-C at step {step} of {total}; resume the run with: "
                f"python -m rlhf_nb.train --resume {run_dir / 'final'}")
    return f"Ctrl-C arrived between the notebook's cells; its run had finished all {total} steps"


def _interrupted(run: dict) -> int:
    where = f"; what was written is in {run['dir']}" if run["dir"] else ""
    print(f"smoke interrupted (Ctrl-C){where}", file=sys.stderr)
    return 130


# a notebook parameter takes the range of the RunConfig field it sets (the same name, or this one)
PARAMETER_FIELDS = {"steps": "steps_per_epoch"}


def smoke_options(path: Path = SMOKE_NB) -> type[Options]:
    """The tool's config, made from the notebook's `parameters` cell: one flag per parameter (None: the notebook's
    default), with the range or choices of the RunConfig field it sets, and --out. A bad value is refused before a
    kernel starts; the notebook's own RunConfig checks the rest."""
    run_fields = {f.name: f.metadata for f in fields(RunConfig)}
    specs = []
    for name, (typ, help_, default) in notebook_parameters(path).items():
        m = run_fields.get(PARAMETER_FIELDS.get(name, name), {})
        typ = typ if typ in ("int", "float", "str", "bool") else "str"
        specs.append((name, f"{typ} | None", option(None, f"{help_} (unset: the notebook's {default})", m.get("lo"),
                                                     m.get("hi"), m.get("choices"), nullable=True)))
    specs.append(("out", "str", option(str(ROOT / "runs"), "parent folder of the run folder")))
    return make_dataclass("SmokeOptions", specs, bases=(Options,))


def _check(o) -> None:
    check_output_writable(o.out)  # the run folder's parent, before papermill starts a kernel


def _smoke(argv: list[str] | None, run: dict) -> int:
    args = cli_from_dataclass(smoke_options(), argv, prog="python -m rlhf_nb.tools.smoke", description=__doc__,
                              epilog="defaults: see the parameters cell of notebooks/00_smoke.ipynb", check=_check)

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    run_dir = run["dir"] = new_run_dir(args.out)
    out_nb = run_dir / "smoke.ipynb"
    params = {k: v for k, v in args.to_dict().items() if k != "out" and v is not None}
    params["out_dir"] = str(run_dir)
    print(f"running {SMOKE_NB.relative_to(ROOT)} with {params}")
    try:
        pm.execute_notebook(str(SMOKE_NB), str(out_nb), parameters=params, kernel_name="python3",
                            progress_bar=False, cwd=str(ROOT / "notebooks"), extra_arguments=QUIET_KERNEL,
                            kernel_manager_class=_kernel_manager_that_registers(run))
    except Exception as e:
        if run["ctrl_c"] or getattr(e, "ename", None) == "KeyboardInterrupt":  # a cell or the kernel stopped by it
            return _interrupted(run)
        if not isinstance(e, PapermillExecutionError):
            raise
        # the config validation's one line, e.g. "ConfigError: --batch_size must be in [1, 4096], got 0"
        print(f"smoke failed: {e.ename}: {e.evalue}\nthe failed notebook is at {out_nb}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    print(f"smoke run finished in {dt:.1f} s; everything is in {run_dir}/:")
    for rel in ("smoke.ipynb", "summary.png", "config.json", "logs/train.jsonl", "logs/train.log", "samples.jsonl",
                "tb", "checkpoints", "final"):
        path = run_dir / rel
        print(f"  {'ok ' if path.exists() else 'MISSING'} {path}")
    if run["ctrl_c"]:
        print(_after_ctrl_c(run_dir), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
