"""rlhf_nb.run's contract, the same for every trainer: the PPO trainer (rlhf_nb.train) and DPO (rlhf_nb.dpo) each go
through each test. Signals write final/ and exit 128 + N; --max_minutes exits 75; a resume continues exactly; a second
Ctrl-C abandons the step and names the last checkpoint; a full disk keeps the last checkpoint and exits 74; a bad
flag is one line and exit 2; two runs never share a folder."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest

from rlhf_nb import checkpoints, dpo
from rlhf_nb import run as run_mod
from rlhf_nb import train as train_mod
from rlhf_nb.config import RunConfig
from rlhf_nb.runlog import read_jsonl, strip_wall_time

PAIRS = [{"prompt": p, "chosen": f" {g}.", "rejected": f" {b} and {b}."}
         for p in ("The acting was", "The plot was", "The ending was") for g, b in (("great", "awful"), ("fine", "dull"))]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return f


@pytest.fixture(params=["ppo", "dpo"])
def kind(request, pairs_file):
    """(module, make_config(out, **changes), its tiny flags): 6 steps either way (PPO 6 × 1; DPO 2 epochs × 3)."""
    if request.param == "ppo":
        tiny = dict(batch_size=4, max_new_tokens=6, steps_per_epoch=6, progress=False, device="cpu")
        return train_mod, lambda out, **kw: RunConfig(**{**tiny, "out": str(out), **kw}), tiny
    tiny = dict(pairs=str(pairs_file), eval_pairs="none", eval_samples=0, batch_size=2, epochs=2, progress=False,
                device="cpu")
    return dpo, lambda out, **kw: dpo.DPOConfig(**{**tiny, "out": str(out), **kw}), tiny


@pytest.fixture
def python_sigint():
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _main(mod, capfd, *args) -> tuple[int, list[str]]:
    try:
        code = mod.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, [line for line in capfd.readouterr().err.splitlines() if line.strip()]


def _flags(tiny: dict) -> list[str]:
    return [f"--{k}={v}" for k, v in tiny.items()]


def test_sigterm_stops_after_the_step_writes_final_and_says_how_to_resume(kind, tmp_path, python_sigint):
    mod, make, _ = kind

    def sigterm_at_2(step, metrics, samples):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    res = mod.train(make(tmp_path), callback=sigterm_at_2)
    assert res.history[-1]["step"] == 2 and res.exit_code == 128 + signal.SIGTERM
    assert res.last_checkpoint == res.run_dir / "final"
    assert checkpoints.read_trainer_state(res.last_checkpoint, type(res.state.cfg),
                                          type(res.state.cfg).CHECKPOINT_OBJECTS)["step"] == 2
    assert f"Resume with: python -m {mod.__name__} --resume {res.run_dir / 'final'}" in \
        (res.run_dir / "logs" / "train.log").read_text()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers given back


def test_max_minutes_exits_75_with_final(kind, tmp_path):
    mod, make, _ = kind
    res = mod.train(make(tmp_path, max_minutes=0.01), callback=lambda *a: time.sleep(0.7))
    assert res.exit_code == run_mod.EXIT_STOPPED == 75 and res.history[-1]["step"] == 1
    assert (res.run_dir / "final").is_dir()


def test_resume_continues_exactly_as_if_never_stopped(kind, tmp_path):
    mod, make, _ = kind
    whole = mod.train(make(tmp_path / "a", save_every=3))
    resumed = mod.train(make(tmp_path / "b", resume=str(whole.run_dir / "checkpoints" / "step_3")))
    assert [r["step"] for r in resumed.history] == [4, 5, 6]
    want = [strip_wall_time(r) for r in read_jsonl(whole.run_dir / "logs" / "train.jsonl")][3:]
    got = [strip_wall_time(r) for r in read_jsonl(resumed.run_dir / "logs" / "train.jsonl")]
    assert got == want


def test_a_second_ctrl_c_abandons_the_step_and_names_the_last_checkpoint(kind, tmp_path, monkeypatch, python_sigint):
    mod, make, _ = kind
    trainer = mod.PPO if mod is train_mod else mod.DPO
    real = trainer.step

    def step_with_two_ctrl_c(s):
        if s.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(s)

    name = "PPO" if mod is train_mod else "DPO"
    monkeypatch.setattr(mod, name, dataclasses.replace(trainer, step=step_with_two_ctrl_c))
    with pytest.raises(run_mod.RunAborted) as e:
        mod.train(make(tmp_path, run_name="r", save_every=1))
    assert "abandoned step 2 half-way" in str(e.value)
    assert f"{trainer.prog} --resume {tmp_path / 'r' / 'checkpoints' / 'step_1'}" in str(e.value)
    assert not (tmp_path / "r" / "final").exists()


def test_a_full_disk_keeps_the_last_checkpoint_and_exits_74(kind, tmp_path, capfd, monkeypatch):
    mod, _, tiny = kind
    real = checkpoints.save_file

    def full_on_the_second_checkpoint(tensors, filename, *a, **k):
        if "step_2" in str(filename):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(checkpoints, "save_file", full_on_the_second_checkpoint)
    code, err = _main(mod, capfd, "--out", tmp_path, "--run_name", "r", "--save_every", "1", *_flags(tiny))
    run = tmp_path / "r"
    assert code == run_mod.EXIT_WRITE_FAILED and len(err) == 1, err
    assert "the disk is full" in err[0] and f"--resume {run / 'checkpoints' / 'step_1'}" in err[0]
    assert [p.name for p in run.glob("checkpoints/*")] == ["step_1"] and not list(run.rglob(".*tmp-*"))


def test_a_bad_value_is_one_line_and_exit_2_before_any_work(kind, tmp_path, capfd):
    mod, _, tiny = kind
    code, err = _main(mod, capfd, "--out", tmp_path, *_flags(tiny), "--batch_size", "0")
    assert code == 2 and len(err) == 1 and "--batch_size" in err[0], err
    code, err = _main(mod, capfd, "--out", tmp_path, "--no_such_flag", "1")
    assert code == 2 and len(err) == 1 and "--no_such_flag" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_two_runs_with_one_name_get_two_folders(kind, tmp_path):
    mod, make, _ = kind
    cfg = make(tmp_path, run_name="same", **({"steps_per_epoch": 1} if mod is train_mod else {"epochs": 1}))
    a, b = mod.train(cfg).run_dir, mod.train(cfg).run_dir
    assert a != b and a.parent == b.parent == tmp_path and (a / "final").is_dir() and (b / "final").is_dir()
