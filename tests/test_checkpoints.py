"""Checkpoints tell the truth: every corrupted file is refused at load with one line naming it; a failed write
(disk full) keeps the previous checkpoint and says where to resume; checkpoints get the run folder's permissions."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rlhf_nb import checkpoints
from rlhf_nb import run as run_mod
from rlhf_nb import train as train_mod
from rlhf_nb.config import RunConfig
from rlhf_nb.runlog import RunLogger

TINY = dict(batch_size=4, max_new_tokens=8, num_minibatches=1, ppo_epochs=1, progress=False)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """Two steps with a checkpoint after each: checkpoints/step_1, checkpoints/step_2 and final/ (= step 2)."""
    out = tmp_path_factory.mktemp("base")
    old = os.umask(0o022)
    try:
        train_mod.train(RunConfig(out=str(out), run_name="r", steps_per_epoch=2, save_every=1, **TINY))
    finally:
        os.umask(old)
    return out / "r"


def cli(capfd, *args) -> tuple[int, list[str]]:
    """main() in this process (no interpreter start-up per case): (exit status, non-empty stderr lines)."""
    try:
        code = train_mod.main([str(a) for a in args])
    except SystemExit as e:  # argparse and config_from_args exit with one line
        code = e.code
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    return code, err


# ------------------------------------------------------------------------------------------ corrupted checkpoints

def _trunc(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _edit_json(f: Path, fn) -> None:
    d = json.loads(f.read_text())
    fn(d)
    f.write_text(json.dumps(d))


def _header_shape(d: Path) -> None:
    """Swap the two dimensions of one tensor in the safetensors header: same bytes, wrong shape."""
    f = d / "model.safetensors"
    b = bytearray(f.read_bytes())
    n = struct.unpack("<Q", b[:8])[0]
    header = b[8:8 + n].decode()
    new = header.replace('"shape":[128,384]', '"shape":[384,128]', 1)
    assert new != header
    b[8:8 + n] = new.encode()
    f.write_bytes(bytes(b))


def _header_junk(d: Path) -> None:
    f = d / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[8:40] = b"x" * 32
    f.write_bytes(bytes(b))


def _nan(d: Path, name: str = "model.safetensors") -> None:
    sd = load_file(str(d / name))
    k = sorted(sd)[0]
    sd[k].view(-1)[0] = float("nan")
    save_file(sd, str(d / name), metadata={"format": "pt"})


def _nan_optimizer(d: Path) -> None:
    blob = torch.load(d / "training_state.pt", weights_only=True)
    next(iter(blob["optimizer"]["state"].values()))["exp_avg_sq"].view(-1)[0] = float("nan")
    torch.save(blob, d / "training_state.pt")


def _pickle(d: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {d / 'pwned'}",))

    torch.save({"x": Evil()}, d / "training_state.pt")


def _state(fn):
    return lambda d: _edit_json(d / "trainer_state.json", fn)


def _fifo(f: Path) -> None:
    f.unlink()
    os.mkfifo(f)


def _loop(f: Path) -> None:
    f.unlink()
    f.symlink_to(f.name)  # a link to itself


def _protocol_4(d: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {d / 'pwned'}",))

    torch.save({"x": Evil()}, d / "training_state.pt", pickle_protocol=4, _use_new_zipfile_serialization=False)


CORRUPTIONS = {  # name: (how to corrupt final/, the file the line must name, what it must say)
    "model truncated": (lambda d: _trunc(d / "model.safetensors"), "model.safetensors", "not a valid safetensors"),
    "model empty": (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors", "not a valid safetensors"),
    "model header shape edited": (_header_shape, "model.safetensors", "the model needs"),
    "model header junk": (_header_junk, "model.safetensors", "not a valid safetensors"),
    "model NaN weights": (_nan, "model.safetensors", "NaN"),
    "value head missing": (lambda d: (d / "value_head.safetensors").unlink(), "value_head.safetensors", "missing"),
    "value head NaN": (lambda d: _nan(d, "value_head.safetensors"), "value_head.safetensors", "NaN"),
    "training_state truncated": (lambda d: _trunc(d / "training_state.pt"), "training_state.pt", "truncated"),
    "training_state pickle payload": (_pickle, "training_state.pt", "not a plain tensor checkpoint"),
    "optimizer NaN": (_nan_optimizer, "training_state.pt", "NaN"),
    "step a string": (_state(lambda s: s.update(step="2")), "trainer_state.json", "'step' must be a whole number"),
    "step 1.5": (_state(lambda s: s.update(step=1.5)), "trainer_state.json", "'step' must be a whole number"),
    "step negative": (_state(lambda s: s.update(step=-1)), "trainer_state.json", "'step' must be >= 0"),
    "no config entry": (_state(lambda s: s.pop("config")), "trainer_state.json", "no 'config' entry"),
    "config lacks a key": (_state(lambda s: s["config"].pop("batch_size")), "trainer_state.json", "lacks --batch_size"),
    "config out of range": (_state(lambda s: s["config"].update(kl_coef=-1)), "trainer_state.json", "--kl_coef"),
    "kl_ctl malformed": (_state(lambda s: s.update(kl_ctl={"value": "x"})), "trainer_state.json", "kl_ctl"),
    "trainer_state not JSON": (lambda d: (d / "trainer_state.json").write_text("{"), "trainer_state.json", "JSON"),
    "config.json n_layer 3": (lambda d: _edit_json(d / "config.json", lambda c: c.update(n_layer=3)), "config.json",
                              "n_layer is 3"),
    "config.json missing": (lambda d: (d / "config.json").unlink(), "config.json", "missing"),
    "training_state a FIFO": (lambda d: _fifo(d / "training_state.pt"), "training_state.pt", "is a FIFO, not a file"),
    "training_state a symlink loop": (lambda d: _loop(d / "training_state.pt"), "training_state.pt", "symlink loop"),
    "model a folder": (lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors").mkdir()),
                       "model.safetensors", "is a folder, not a file"),
    "trainer_state a FIFO": (lambda d: _fifo(d / "trainer_state.json"), "trainer_state.json", "is a FIFO"),
    "training_state protocol-4 pickle": (_protocol_4, "training_state.pt", "refused"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_a_corrupted_checkpoint_is_refused_in_one_line_naming_the_file(base_run, tmp_path, capfd, case):
    corrupt, file, says = CORRUPTIONS[case]
    ck = tmp_path / "ck"
    shutil.copytree(base_run / "final", ck)
    corrupt(ck)
    code, err = cli(capfd, "--resume", ck, "--epochs", "2", "--out", tmp_path / "out")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and file in err[0] and says in err[0], err[0]
    assert "weights_only=False" not in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()  # refused before any run folder
    assert not (ck / "pwned").exists()


def test_the_intact_checkpoint_loads_and_every_refusal_leaves_the_model_alone(base_run, tmp_path):
    """The loader reads and checks every file before it changes anything: a refused load leaves the policy as it was."""
    s = train_mod.setup(RunConfig(**TINY))
    before = {k: v.clone() for k, v in s.policy.state_dict().items()}
    ck = tmp_path / "ck"
    shutil.copytree(base_run / "final", ck)
    _nan_optimizer(ck)
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.load_checkpoint(ck, s.policy, s.optimizer, s.generators, s.device)
    assert all(torch.equal(before[k], v) for k, v in s.policy.state_dict().items())
    state = checkpoints.load_checkpoint(base_run / "final", s.policy, s.optimizer, s.generators, s.device)
    assert state["step"] == 2 and not all(torch.equal(before[k], v) for k, v in s.policy.state_dict().items())


# --------------------------------------------------------------------------------------------- failed writes

def _enospc_on_call(monkeypatch, n: int) -> None:
    """The n-th value-head write (one per checkpoint) fails as a full disk does."""
    real, calls = checkpoints.save_file, []

    def save_file_or_full(*a, **k):
        calls.append(1)
        if len(calls) >= n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)

    monkeypatch.setattr(checkpoints, "save_file", save_file_or_full)


def test_disk_full_at_a_checkpoint_keeps_the_previous_one_and_says_where_to_resume(tmp_path, capfd, monkeypatch):
    _enospc_on_call(monkeypatch, 2)
    code, err = cli(capfd, "--out", tmp_path, "--run_name", "r", "--steps_per_epoch", "4", "--save_every", "1",
                    *[f"--{k}={v}" for k, v in TINY.items()])
    run = tmp_path / "r"
    assert code == run_mod.EXIT_WRITE_FAILED and len(err) == 1, err
    assert "checkpoints/step_2" in err[0] and "the disk is full" in err[0]
    assert f"--resume {run / 'checkpoints' / 'step_1'}" in err[0]
    assert [p.name for p in run.glob("checkpoints/*")] == ["step_1"] and not list(run.rglob(".*tmp-*"))
    assert checkpoints.read_trainer_state(run / "checkpoints" / "step_1")["step"] == 1
    assert "the disk is full" in (run / "logs" / "train.log").read_text()


def test_torch_s_zip_writer_failing_on_a_full_disk_reads_as_a_full_disk(tmp_path, monkeypatch):
    """torch.save on a full disk says only "[enforce fail at inline_container.cc…] unexpected pos"; no errno."""
    s = train_mod.setup(RunConfig(**TINY))

    def torch_save_full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1857728 vs 1857620")

    monkeypatch.setattr(checkpoints.torch, "save", torch_save_full)
    monkeypatch.setattr(checkpoints, "_free_bytes", lambda folder: 4096)
    with pytest.raises(checkpoints.CheckpointWriteError, match=r"the disk is full \(0\.0 MB free"):
        checkpoints.save_checkpoint(tmp_path / "final", s.policy, s.tokenizer, s.optimizer, s.generators, {"step": 0})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_log_write_stops_the_run_with_one_line(tmp_path, capfd, monkeypatch):
    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(RunLogger, "metrics", full)
    code, err = cli(capfd, "--out", tmp_path, "--steps_per_epoch", "3", *[f"--{k}={v}" for k, v in TINY.items()])
    assert code == run_mod.EXIT_WRITE_FAILED and len(err) == 1, err
    assert "could not write the run's logs" in err[0] and "nothing to resume from" in err[0]


def test_no_room_for_one_checkpoint_is_refused_before_training(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(run_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 20, 10 << 20, 5 << 20))
    code, err = cli(capfd, "--out", tmp_path, "--steps_per_epoch", "3", *[f"--{k}={v}" for k, v in TINY.items()])
    assert code == 2 and len(err) == 1 and "--out" in err[0] and "5.0 MB free" in err[0], err
    assert not any(tmp_path.iterdir())


@pytest.fixture
def tmpfs(tmp_path):
    """A real small file system, when this process may mount one (root on Linux); else the test is skipped."""
    mounted = []

    def mount(size: str) -> Path:
        d = tmp_path / f"tmpfs_{size}"
        d.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True)
        if p.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode().strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


def test_a_real_full_disk(tmpfs, capfd):
    """6 MB cannot hold one checkpoint (refused up front); on 20 MB, step_2 fits and step_4 does not."""
    code, err = cli(capfd, "--out", tmpfs("6m"), "--steps_per_epoch", "20", *[f"--{k}={v}" for k, v in TINY.items()])
    assert code == 2 and len(err) == 1 and "MB free" in err[0], err
    out = tmpfs("20m")
    code, err = cli(capfd, "--out", out, "--run_name", "r", "--steps_per_epoch", "6", "--save_every", "2",
                    *[f"--{k}={v}" for k, v in TINY.items()])
    assert code == run_mod.EXIT_WRITE_FAILED and len(err) == 1 and "the disk is full" in err[0], err
    assert "inline_container" not in err[0] and f"--resume {out / 'r' / 'checkpoints' / 'step_2'}" in err[0]
    assert checkpoints.read_trainer_state(out / "r" / "checkpoints" / "step_2")["step"] == 2


# ------------------------------------------------------------------------------------------------ permissions

def test_checkpoints_get_the_run_folder_s_permissions(base_run):
    dir_mode = stat.S_IMODE(base_run.stat().st_mode)
    file_mode = stat.S_IMODE((base_run / "config.json").stat().st_mode)
    assert (dir_mode, file_mode) == (0o755, 0o644)  # the fixture's umask 022
    for ck in (base_run / "final", base_run / "checkpoints" / "step_1"):
        assert stat.S_IMODE(ck.stat().st_mode) == dir_mode, ck
        for f in ck.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == file_mode, f


@pytest.mark.parametrize("written_by, resumed_by", [("ppo", "dpo"), ("dpo", "ppo")])
def test_a_checkpoint_of_the_other_trainer_is_named_as_such(tmp_path, written_by, resumed_by):
    """Resuming a PPO checkpoint in DPO (or the reverse) used to blame 'another version, or edited' or a missing
    kl_ctl; the message now says which trainer wrote it."""
    import json

    from rlhf_nb.config import RunConfig
    from rlhf_nb.dpo import DPOConfig

    cfg = RunConfig() if written_by == "ppo" else DPOConfig()
    state = {"step": 1, "config": cfg.to_dict(), "rng": {}, **({"kl_ctl": {}} if written_by == "ppo" else {})}
    (tmp_path / checkpoints.STATE_FILE).write_text(json.dumps(state))
    cls, objects = (DPOConfig, ()) if resumed_by == "dpo" else (RunConfig, ("kl_ctl",))
    name = "PPO trainer (rlhf_nb.train)" if written_by == "ppo" else "DPO trainer (rlhf_nb.dpo)"
    with pytest.raises(checkpoints.CheckpointError, match=re.escape(name)):
        checkpoints.read_trainer_state(tmp_path, cls, objects)
    assert checkpoints.read_trainer_state(tmp_path, type(cfg), ("kl_ctl",) if written_by == "ppo" else ())["step"] == 1
