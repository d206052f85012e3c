"""`make notebooks`: re-execute every notebook in order, in place, and store its outputs (for a deliberate change)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..cli import cli_from_dataclass
from ..config import ConfigError, Options, option

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
VOLATILE_META = ("papermill", "widgets")  # run timestamps; widget-state snapshots (tens of KB of PNG)


def notebooks(pattern: str = "[0-9][0-9]_*.ipynb") -> list[Path]:
    return sorted(NB_DIR.glob(pattern))


def execute(path: Path, timeout: int = 600) -> float:
    """Run one notebook top to bottom in its own folder (as nbval does) and write it back with outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    from .smoke import QUIET_KERNEL

    NotebookClient(nb, timeout=timeout, kernel_name="python3", extra_arguments=QUIET_KERNEL,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    dt = time.perf_counter() - t0
    for key in VOLATILE_META:  # keep execution counts (nbval needs them); drop run timestamps
        nb.metadata.pop(key, None)
        for c in nb.cells:
            c.metadata.pop(key, None)
            c.metadata.pop("execution", None)
    nb.metadata["kernelspec"] = {"name": "rlhf_nb", "display_name": "Python (rlhf_nb)", "language": "python"}
    nbformat.write(nb, path)
    return dt


@dataclass
class NotebooksOptions(Options):
    """`python -m rlhf_nb.tools.notebooks`: which notebooks, and how long a cell may run."""

    names: tuple[str, ...] = option((), "notebook file names, with or without .ipynb; none: all, in order",
                                    positional=True)
    timeout: int = option(600, "seconds a cell may run before the notebook fails", 1, 86_400)


def check_options(o: NotebooksOptions) -> None:
    """Only the course's own notebooks: never a path outside notebooks/ (they are rewritten)."""
    known = {path.name for path in notebooks()}
    for n in o.names:
        if n not in known and f"{n}.ipynb" not in known:
            raise ConfigError(f"no notebook {n!r} in notebooks/; choose from: {', '.join(sorted(known))}")


def main(argv: list[str] | None = None) -> int:
    o = cli_from_dataclass(NotebooksOptions, argv, prog="python -m rlhf_nb.tools.notebooks", description=__doc__,
                           check=check_options)
    known = {path.name: path for path in notebooks()}
    paths = [known.get(n) or known[f"{n}.ipynb"] for n in o.names] if o.names else list(known.values())
    for path in paths:
        dt = execute(path, o.timeout)
        print(f"{path.name:32s} {dt:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
