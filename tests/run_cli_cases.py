"""Run one command of the kit once per case, in this one Python process, as `python -m MODULE ARGS…` (or
`python SCRIPT.py ARGS…`) would, and print each case's exit status, stdout and stderr as JSON.

tests/test_cli_contract.py starts one process per command with this instead of one per case: the cases are the same
command lines, executed as `__main__` by runpy, and a command's start-up (torch, transformers) is paid once.

    python tests/run_cli_cases.py rlhf_nb.train '[["--help"], ["--batch_size", "0"]]'
"""
from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
import traceback


def run_case(target: str, args: list[str]) -> dict:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [target, *args]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if target.endswith(".py"):
                runpy.run_path(target, run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
        except SystemExit as e:  # what the interpreter does with it: None is 0, a message is printed and exits 1
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 (an uncaught exception: the traceback and status 1, as Python prints it)
            traceback.print_exc()
            code = 1
    return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    target, cases = sys.argv[1], json.loads(sys.argv[2])
    results = [run_case(target, args) for args in cases]
    sys.stdout.write(json.dumps(results))
