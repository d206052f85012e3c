"""nbval is a real test of the stored outputs: it passes on an unchanged lesson and fails when the code no longer
produces them (here: lesson 01, the quickest lesson that samples, drawing its first samples with seed 1 against
outputs stored from seed 0)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_policy_sampling.ipynb"
SAMPLE_LINE = "ro = sample(model, tok, prompts, max_new_tokens=16, generator=torch.Generator().manual_seed(0))"
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"

pytestmark = pytest.mark.slow  # each case executes the notebook in a fresh kernel (~7 s)


def run_nbval(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", str(path), "--nbval-current-env",
         "--nbval-sanitize-with", str(SANITIZE), "-q", "-p", "no:cacheprovider", "--rootdir", str(path.parent)],
        cwd=path.parent, capture_output=True, text=True, timeout=300)


def with_seed(nb: nbformat.NotebookNode, seed: int) -> nbformat.NotebookNode:
    """The same notebook, stored outputs untouched, with the seed of its first sample() changed."""
    cells = [c for c in nb.cells if SAMPLE_LINE in c.source.splitlines()]
    assert len(cells) == 1, f"{NOTEBOOK.name} must have one cell with {SAMPLE_LINE!r}"
    cells[0].source = cells[0].source.replace("manual_seed(0))", f"manual_seed({seed}))", 1)
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
    assert failed and all(f"{NOTEBOOK.name}::Cell" in line for line in failed)
    # the cells that do not read those samples (the other samplers, the exercise checkers) still pass
    assert "passed" in res.stdout.splitlines()[-1], res.stdout.splitlines()[-1]
