"""`make setup` installs the pinned set from pip's default indexes; TORCH_INDEX adds PyTorch's CPU index only when set."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _install_line(*args: str) -> str:
    """The pip line `make setup` would run (-n: print, do not run; -B: as in a fresh clone)."""
    out = subprocess.run(["make", "-n", "-B", ".venv/.installed-stamp", *args], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return next(line for line in out.splitlines() if "pip install" in line)


def test_default_setup_passes_no_index_option():
    line = _install_line()
    assert "-c constraints.txt" in line and "-e '.[dev,trl]'" in line
    assert "index-url" not in line  # the default behaviour: pip's own configuration decides


def test_torch_index_adds_an_extra_index():
    line = _install_line("TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in line and "-c constraints.txt" in line
