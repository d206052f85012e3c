"""nbval is a real test of the stored outputs: it passes on an unchanged lesson and fails when the code no longer
produces them (here: lesson 05 with SEED = 1 against outputs stored from SEED = 0)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_ppo_update.ipynb"
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"

pytestmark = pytest.mark.slow  # each case executes the notebook in a fresh kernel (~10 s)


def run_nbval(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", str(path), "--nbval-current-env",
         "--nbval-sanitize-with", str(SANITIZE), "-q", "-p", "no:cacheprovider", "--rootdir", str(path.parent)],
        cwd=path.parent, capture_output=True, text=True, timeout=300)


def with_seed(nb: nbformat.NotebookNode, seed: int) -> nbformat.NotebookNode:
    """The same notebook, stored outputs untouched, with the first cell's `SEED = 0` line changed."""
    first = nb.cells[0]
    assert first.cell_type == "code" and "SEED = 0" in first.source.splitlines(), "lesson 05 must open with SEED = 0"
    first.source = first.source.replace("SEED = 0", f"SEED = {seed}", 1)
    return nb


def test_unchanged_notebook_passes(tmp_path):
    path = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, path)
    res = run_nbval(path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_changed_seed_fails_against_stored_outputs(tmp_path):
    path = tmp_path / NOTEBOOK.name
    nbformat.write(with_seed(nbformat.read(NOTEBOOK, as_version=4), seed=1), path)
    res = run_nbval(path)
    assert res.returncode != 0, "nbval passed although the seed changed: the stored outputs are not being checked"
    assert "Cell outputs differ" in res.stdout, res.stdout[-3000:]
    # the failures are mismatched numbers, not a crash: no cell raised
    assert "Error" not in "".join(line for line in res.stdout.splitlines() if line.startswith("E ")), res.stdout[-3000:]
    failed = [line for line in res.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and all("05_ppo_update.ipynb::Cell" in line for line in failed)
    # the seed-independent cells (the clipped-objective plot and gradient table, the exercise checkers) still pass
    assert "passed" in res.stdout.splitlines()[-1], res.stdout.splitlines()[-1]
