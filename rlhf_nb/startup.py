"""The first lines a trainer's `python -m` runs: a Ctrl-C while torch imports (seconds on a cold disk) ends in one
line and exit 130, like a Ctrl-C at any later moment, instead of a traceback from deep inside an import.

Kept free of heavy imports on purpose: it must run before torch loads. rlhf_nb.run.main takes over once the flags
are parsed."""
from __future__ import annotations

import os
import signal


def _interrupted_while_importing(signum, frame):
    os.write(2, b"\ninterrupted during start-up: nothing was trained or written\n")
    os._exit(128 + signal.SIGINT)


def catch_ctrl_c_while_importing() -> None:
    signal.signal(signal.SIGINT, _interrupted_while_importing)
