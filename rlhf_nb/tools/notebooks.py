"""`make notebooks`: re-execute every notebook in order, in place, and store its outputs (for a deliberate change)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat

from ..config import OneLineParser

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


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m rlhf_nb.tools.notebooks", description=__doc__)
    p.add_argument("names", nargs="*", help="notebook file names (default: all, in order)")
    args = p.parse_args(argv)
    known = {path.name: path for path in notebooks()}
    for n in args.names:  # only the course's own notebooks: never a path outside notebooks/ (they are rewritten)
        if n not in known and f"{n}.ipynb" not in known:
            p.error(f"no notebook {n!r} in notebooks/; choose from: {', '.join(known)}")
    paths = [known.get(n) or known[f"{n}.ipynb"] for n in args.names] if args.names else list(known.values())
    for path in paths:
        dt = execute(path)
        print(f"{path.name:32s} {dt:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
