"""scripts/train_trl.py refuses a user's mistake in one line with exit status 2, before any model loads, and leaves
no folder behind: --device cuda without a GPU, a knob TRL's RLOO lacks, an --output_dir that is a file, a truncated
or empty --model."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_trl.py"
SMALL = ["--steps_per_epoch", "1", "--epochs", "1", "--batch_size", "2", "--num_generations", "2",
         "--max_new_tokens", "4", "--ppo_epochs", "1", "--num_minibatches", "1", "--no_progress"]

pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")


def _load_script():
    spec = importlib.util.spec_from_file_location("train_trl_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ours(root: Path) -> list[Path]:
    """The bridge's temp folders under `root` (torch may keep a cache of its own there)."""
    return [p for p in root.iterdir() if p.name.startswith("rlhf_nb_trl")]


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    """tempfile's folder, so a test can see every temp folder the bridge makes (and that none is left)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _broken_model(tmp_path: Path, model_dir: str, size: int | None) -> Path:
    """A copy of the embedded model whose model.safetensors keeps only its first `size` bytes."""
    dst = tmp_path / f"model_{size}"
    shutil.copytree(model_dir, dst)
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[:size])
    return dst


def _refused(capsys, argv: list[str]) -> str:
    main = _load_script().main
    with pytest.raises(SystemExit) as e:
        main(argv + SMALL)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    err = [line for line in err if not line.startswith("note:")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_device_cuda_without_a_gpu_is_refused(capsys, monkeypatch, tmp_root):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, even on a GPU box
    assert "--device cuda" in _refused(capsys, ["--device", "cuda"])  # was: exit 0, trained on the CPU
    assert not _ours(tmp_root)


def test_rloo_with_an_entropy_bonus_is_refused(capsys, tmp_root):
    assert "--ent_coef must be 0 with --algo rloo" in _refused(capsys, ["--algo", "rloo", "--ent_coef", "0.1"])
    assert not _ours(tmp_root)  # was: a traceback and an empty /tmp/rlhf_nb_trl_* left behind


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_output_dir_that_is_a_file_is_refused(capsys, tmp_path, tmp_root, where):
    f = tmp_path / "a_file"
    f.write_text("x")
    target = f if where == "file" else f / "sub"
    line = _refused(capsys, ["--output_dir", str(target)])
    assert "--output_dir" in line and "is a file" in line
    assert not _ours(tmp_root)


@pytest.mark.parametrize("size", [1000, 100_000, 0])
def test_truncated_or_empty_model_is_refused(capsys, tmp_path, tmp_root, model_dir, size):
    bad = _broken_model(tmp_path, model_dir, size)
    out = tmp_path / "new" / "out"  # a folder that does not exist yet: it must not be left behind either
    line = _refused(capsys, ["--model", str(bad), "--output_dir", str(out)])
    assert "--model" in line and "model.safetensors" in line and "truncated" in line
    assert not (tmp_path / "new").exists() and not _ours(tmp_root)


def test_refusals_print_no_traceback_end_to_end(tmp_path):
    """The real process: one line on stderr, exit 2 (CUDA hidden so the case holds on a GPU machine too)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)}
    res = subprocess.run([sys.executable, str(SCRIPT), "--algo", "rloo", "--device", "cuda", *SMALL],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and res.stderr.strip().splitlines() == [
        "error: --device cuda was asked for but torch sees no CUDA device; use --device cpu or auto"]
    assert not _ours(tmp_path)


# ------------------------------------------------------------------------ the trainer's contract (issue: every command)

def test_advantage_gae_is_refused_not_run_as_grpo(capsys, tmp_path):
    line = _refused(capsys, ["--advantage", "gae", "--out", str(tmp_path)])
    assert "--advantage gae" in line and "python -m rlhf_nb.train" in line  # was: exit 0 after training GRPO
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_is_refused(capsys, tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert "--out" in _refused(capsys, ["--out", str(f)])  # was: exit 0, results in a temp folder deleted at exit


def test_a_policy_folder_as_reward_model_is_refused(capsys, tmp_path, model_dir):
    line = _refused(capsys, ["--reward", "learned", "--reward_model", model_dir, "--out", str(tmp_path)])
    assert "is not a reward model" in line and list(tmp_path.iterdir()) == []


class _FakeTrainer:
    """Stands in for TRL's trainer: train() does what `during` says."""

    def __init__(self, during):
        self.during = during
        self.state = type("S", (), {"global_step": 3})()

    def train(self):
        self.during()


@pytest.mark.parametrize("how, code, first", [("ctrl_c", 130, "SIGINT"), ("sigterm", 143, "SIGTERM")])
def test_an_interrupted_run_is_one_line_and_128_plus_n(capsys, tmp_path, monkeypatch, how, code, first):
    import signal
    import time

    from rlhf_nb.bridges import trl as bridge

    def during():
        if how == "ctrl_c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(bridge, "make_trl_trainer", lambda *a, **k: _FakeTrainer(during))
    old = signal.getsignal(signal.SIGTERM)
    assert _load_script().main(["--out", str(tmp_path), *SMALL]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{first}: stopped at optimizer step 3"), err
    assert signal.getsignal(signal.SIGTERM) == old  # handlers given back
    run = next(tmp_path.iterdir())
    assert (run / "config.json").is_file() and (run / "logs" / "trl_log.jsonl").is_file()


def test_a_run_writes_its_folder_under_out_like_the_trainer(tmp_path, capsys):
    assert _load_script().main(["--out", str(tmp_path), "--run_name", "r", *SMALL]) == 0
    run = tmp_path / "r"
    assert (run / "config.json").is_file() and (run / "final" / "model.safetensors").is_file()
    assert not (run / "final" / "training_args.bin").exists()  # no pickle in a folder --model may load
    from rlhf_nb.policy import load_policy

    load_policy(str(run / "final"))  # loads with the kit's own from_pretrained
