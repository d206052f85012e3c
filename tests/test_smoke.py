"""`make smoke`: papermill runs 00_smoke into a fresh run folder; bad parameters fail fast with one clear line."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _smoke(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "rlhf_nb.tools.smoke", "--out", str(tmp_path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_smoke_writes_the_run_layout_and_the_executed_notebook(tmp_path):
    p = _smoke(tmp_path, "--steps", "2", "--batch_size", "4", "--max_new_tokens", "6", "--seed", "1")
    assert p.returncode == 0, p.stderr[-2000:]
    (run,) = list(tmp_path.iterdir())
    for rel in ("smoke.ipynb", "summary.png", "config.json", "logs/train.jsonl", "samples.jsonl", "final", "tb"):
        assert (run / rel).exists(), rel
    assert str(run) in p.stdout
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["seed"], cfg["batch_size"], cfg["steps_per_epoch"]) == (1, 4, 2)  # parameters reached the notebook
    nb = json.loads((run / "smoke.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])


@pytest.mark.parametrize("args, line", [
    (["--batch_size", "0"], "error: --batch_size must be in [1, 4096], got 0"),
    (["--kl_coef", "-1"], "error: --kl_coef must be in [0, 10], got -1.0"),
    (["--reward", "vibes"], "error: --reward must be one of"),
    (["--steps", "0"], "error: --steps must be in [1, 100000], got 0"),  # RunConfig's --steps_per_epoch range
])
def test_a_bad_parameter_is_one_line_before_any_kernel_starts(tmp_path, args, line):
    """Each parameter takes the range of the RunConfig field it sets: refused with exit 2, nothing written."""
    p = _smoke(tmp_path, *args)
    assert p.returncode == 2 and p.stderr.startswith(line) and p.stderr.count("\n") == 1, p.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_value_only_the_run_refuses_fails_fast_and_writes_only_the_failed_notebook(tmp_path):
    """The notebook's own checks (here the model's context) end the run with the config's one line, exit 1."""
    p = _smoke(tmp_path, "--max_new_tokens", "100")
    assert p.returncode == 1
    assert "ConfigError: --max_new_tokens must be in [1, 48]" in p.stderr, p.stderr
    (run,) = list(tmp_path.iterdir())
    assert [x.name for x in run.iterdir()] == ["smoke.ipynb"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_make_variable_cannot_smuggle_in_a_flag(tmp_path):
    """SEED='1 --out DIR' reaches the tool as one bad --seed value (one line, exit 2), not as an extra --out."""
    target = tmp_path / "elsewhere"
    p = subprocess.run(["make", "--no-print-directory", "smoke", f"SEED=1 --out {target}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "argument --seed: invalid int value" in p.stderr, p.stderr
    assert not target.exists()
    dry = subprocess.run(["make", "-n", "--no-print-directory", "smoke", "SEED=1' --out 'x"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert "--seed '1'\\'' --out '\\''x'" in dry.stdout  # a quote in the value is escaped, not a way out
