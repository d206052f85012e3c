"""The CLI as a careful user (or a script) meets it: signals at any moment, exit statuses, unwritable outputs,
abbreviated or changed flags on --resume, broken --model folders, pipes that close, Ctrl-C during start-up."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from rlhf_nb import run as run_mod
from rlhf_nb import train as train_mod
from rlhf_nb.checkpoints import read_trainer_state
from rlhf_nb.config import RunConfig
from rlhf_nb.policy import resolve_model_path
from rlhf_nb.runlog import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(batch_size=4, max_new_tokens=8, num_minibatches=1, ppo_epochs=1, progress=False)
TINY_FLAGS = [f"--{k}={v}" for k, v in TINY.items()]


def cli(capfd, *args) -> tuple[int, list[str]]:
    """main() in this process: (exit status, non-empty stderr lines)."""
    try:
        code = train_mod.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, [line for line in capfd.readouterr().err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """final/ of a finished 2-step run (gae, batch 4, 1 thread)."""
    out = tmp_path_factory.mktemp("ck")
    return train_mod.train(RunConfig(out=str(out), steps_per_epoch=2, **TINY)).run_dir / "final"


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model."""
    def setup(cfg):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(train_mod, "PPO", dataclasses.replace(train_mod.PPO, setup=setup))


def _signal_at_step(sig_at: dict[int, list[int]]):
    """A callback that sends this process the given signals after the given steps."""
    def cb(step, metrics, samples):
        for sig in sig_at.get(step, []):
            os.kill(os.getpid(), sig)
    return cb


# -------------------------------------------------------------------------------------- signals and exit codes

@pytest.fixture
def python_sigint():
    """Start from Python's own SIGINT handler, whatever an earlier test in this process left (under pytest-xdist a
    worker ran other modules first, and one of them left SIGINT at SIG_IGN), and put the old one back afterwards."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_after_the_step_writes_final_and_exits_128_plus_n(tmp_path, sig, python_sigint):
    res = train_mod.train(RunConfig(out=str(tmp_path), steps_per_epoch=5, **TINY), callback=_signal_at_step({2: [sig]}))
    assert res.history[-1]["step"] == 2 and res.stopped_early == f"{signal.Signals(sig).name} received"
    assert res.exit_code == 128 + sig
    assert res.last_checkpoint == res.run_dir / "final" and read_trainer_state(res.last_checkpoint)["step"] == 2
    assert "Resume with: python -m rlhf_nb.train --resume" in (res.run_dir / "logs" / "train.log").read_text()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back


def test_max_minutes_exits_75_resumable(tmp_path):
    res = train_mod.train(RunConfig(out=str(tmp_path), steps_per_epoch=5, max_minutes=0.01, **TINY),
                          callback=lambda *a: time.sleep(0.7))
    assert res.exit_code == run_mod.EXIT_STOPPED == 75 and res.history[-1]["step"] == 1
    assert read_trainer_state(res.run_dir / "final")["step"] == 1


def test_signals_during_the_final_write_wait_for_it(tmp_path, monkeypatch):
    """SIGTERM, then Ctrl-C twice, all while final/ is being written: final/ still lands, complete."""
    from rlhf_nb import checkpoints

    real = checkpoints.save_file

    def save_file_then_signals(*a, **k):
        real(*a, **k)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGINT):
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(checkpoints, "save_file", save_file_then_signals)
    res = train_mod.train(RunConfig(out=str(tmp_path), steps_per_epoch=2, **TINY))
    assert res.exit_code == 143 and read_trainer_state(res.run_dir / "final")["step"] == 2
    assert not list(res.run_dir.glob(".final.tmp-*"))


def test_a_second_ctrl_c_abandons_the_step_and_names_the_last_checkpoint(tmp_path, monkeypatch, python_sigint):
    real = train_mod.ppo_step

    def step_with_two_ctrl_c(s):
        if s.step == 1:  # the second step: Ctrl-C twice while it runs
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(s)

    monkeypatch.setattr(train_mod, "PPO", dataclasses.replace(train_mod.PPO, step=step_with_two_ctrl_c))
    with pytest.raises(run_mod.RunAborted) as e:
        train_mod.train(RunConfig(out=str(tmp_path), run_name="r", steps_per_epoch=4, save_every=1, **TINY))
    run = tmp_path / "r"
    assert f"abandoned step 2 half-way" in str(e.value) and f"--resume {run / 'checkpoints' / 'step_1'}" in str(e.value)
    assert not (run / "final").exists()  # a half-updated state is never saved as if it were a step
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_while_final_is_written_in_a_real_process(tmp_path):
    """The issue's case: SIGTERM once .final.tmp-*/ exists (the value-head write is slowed to widen the window)."""
    script = ("import sys, time\nfrom rlhf_nb import checkpoints\nreal = checkpoints.save_file\n"
              "def slow(*a, **k):\n    real(*a, **k)\n    time.sleep(1.5)\ncheckpoints.save_file = slow\n"
              "from rlhf_nb.train import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", script, "--out", str(tmp_path), "--run_name", "r",
                             "--steps_per_epoch", "2", *TINY_FLAGS], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("r/.final.tmp-*/value_head.safetensors")):
        time.sleep(0.01)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    proc.send_signal(signal.SIGTERM)
    # Ctrl-C only once SIGTERM has been acknowledged: if both were pending together, Python would run the handlers
    # in signal-number order (SIGINT first), whatever order they were sent in.
    while time.time() < deadline and not any(line.startswith("SIGTERM") for line in lines):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(lines)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert read_trainer_state(tmp_path / "r" / "final")["step"] == 2 and not list((tmp_path / "r").glob(".*"))


# ------------------------------------------------------------------------------------------- unwritable output

def _file(tmp_path) -> Path:
    f = tmp_path / "a_file"
    f.write_text("x")
    return f


@pytest.mark.parametrize("case, args, says", [
    ("a file", lambda t: ["--out", _file(t)], "is a file"),
    ("under a file", lambda t: ["--out", _file(t) / "sub"], "which is a file"),
    ("under /proc", lambda t: ["--out", "/proc/rlhf_nb_runs"], "not writable"),
    ("empty", lambda t: ["--out", ""], "must be a folder path"),
    ("run_name a/b", lambda t: ["--out", t, "--run_name", "a/b"], "--run_name must be a plain folder name"),
    ("run_name ../x", lambda t: ["--out", t, "--run_name", "../x"], "--run_name must be a plain folder name"),
    ("run_name absolute", lambda t: ["--out", t, "--run_name", str(t / "abs")], "--run_name must be a plain"),
    ("run_name .", lambda t: ["--out", t, "--run_name", "."], "--run_name must be a plain folder name"),
    ("run_name 300 chars", lambda t: ["--out", t, "--run_name", "n" * 300], "--run_name must be at most 200 bytes"),
])
def test_unwritable_output_fails_before_the_model_loads(tmp_path, capfd, no_model_load, case, args, says):
    argv = args(tmp_path)
    before = sorted(tmp_path.parent.rglob("*"))
    code, err = cli(capfd, *argv, *TINY_FLAGS)
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert ("--run_name" if "run_name" in case else "--out") in err[0]
    assert sorted(tmp_path.parent.rglob("*")) == before  # nothing made, inside --out or beside it


def test_read_only_output_fails_before_the_model_loads(tmp_path, capfd, no_model_load):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    mounted = False
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits, but not a file system mounted read-only
            p = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
            if p.returncode:
                pytest.skip(f"root ignores permission bits and cannot mount a read-only tmpfs here: {p.stderr!r}")
            mounted = True
        code, err = cli(capfd, "--out", ro / "runs", *TINY_FLAGS)
        assert code == 2 and len(err) == 1 and "--out" in err[0] and "not writable" in err[0], err
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
        ro.chmod(0o755)


# ------------------------------------------------------------------------------------------------------ resume

@pytest.mark.parametrize("args, says", [
    (["--resu", "CK", "--advantage", "grpo", "--num_generations", "2", "--batch_size", "8"], "unrecognized arguments: --resu"),
    (["--resume", "CK", "--epoch", "3"], "unrecognized arguments: --epoch"),
    (["--resume", "CK", "--batch", "8"], "unrecognized arguments: --batch"),
    (["--resume=CK", "--batch_size=8"], "--batch_size cannot change on --resume"),
    (["--resume", "CK", "--no_whiten_rewards", "--whiten_rewards"], "--whiten_rewards cannot change on --resume"),
    (["--resume", "CK", "--advantage", "grpo", "--num_generations", "2"], "--advantage cannot change on --resume"),
    (["--resume", "CK"], "nothing is left to train"),
    (["--resume", "CK", "--epochs", "1", "--steps_per_epoch", "1"], "nothing is left to train"),
    (["--resume", "CK/missing"], "--resume must be a checkpoint folder"),
])
def test_resume_refuses_abbreviations_changes_and_finished_runs(ckpt, tmp_path, capfd, no_model_load, args, says):
    code, err = cli(capfd, *[a.replace("CK", str(ckpt)) for a in args], "--out", tmp_path)
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert not any(tmp_path.iterdir())


def test_resume_with_other_threads_warns_in_one_line_and_continues(ckpt, tmp_path, capfd):
    try:
        code, err = cli(capfd, "--resume", ckpt, "--epochs", "2", "--threads", "2", "--out", tmp_path)
    finally:
        torch.set_num_threads(1)  # the run set 2 for this whole process
    assert code == 0 and err == ["warning: --threads 2 differs from the checkpoint's 1: the run continues, but not "
                                 "bit-for-bit as it would have without the stop"], err
    run = next(tmp_path.iterdir())
    assert [r["step"] for r in read_jsonl(run / "logs" / "train.jsonl")] == [3, 4]
    assert "warning: --threads 2" in (run / "logs" / "train.log").read_text()
    assert json.loads((run / "config.json").read_text())["threads"] == 2


# -------------------------------------------------------------------------------------------------- --model

def _model(tmp_path, edit) -> Path:
    d = tmp_path / "model"
    shutil.copytree(resolve_model_path("embedded"), d)
    edit(d)
    return d


def _config(d: Path, **changes) -> None:
    c = json.loads((d / "config.json").read_text())
    c.update(changes)
    (d / "config.json").write_text(json.dumps(c))


def _nan_weights(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(d / "model.safetensors"))
    sd["transformer.wte.weight"][0, 0] = float("nan")
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("edit, says", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100_000]),
     "model.safetensors is not a valid safetensors file"),
    (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors is not a valid safetensors file"),
    (lambda d: _config(d, n_embd=64), "config.json describes"),
    (lambda d: _config(d, n_positions=10), "--model"),
    (_nan_weights, "transformer.wte.weight holds 1 NaN/inf value"),
])
def test_a_broken_model_folder_is_refused_in_one_line(tmp_path, capfd, edit, says):
    code, err = cli(capfd, "--model", _model(tmp_path, edit), "--out", tmp_path / "out", *TINY_FLAGS)
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert "must be in [1, -" not in err[0] and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ pipes and start-up Ctrl-C

def test_help_into_a_closed_pipe_has_no_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_nb.train", "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -1` after its line: every later write gets EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err


def test_a_run_whose_stdout_and_stderr_close_still_finishes(tmp_path):
    """`… 2>&1 | head -1`: the progress bar and the last lines go nowhere; the run and final/ do not suffer."""
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_nb.train", "--out", str(tmp_path), "--steps_per_epoch", "2",
                             "--batch_size", "4", "--max_new_tokens", "8", "--num_minibatches", "1", "--ppo_epochs", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=300) == 0
    assert read_trainer_state(next(tmp_path.iterdir()) / "final")["step"] == 2


@pytest.mark.parametrize("module", ["rlhf_nb.train", "rlhf_nb.dpo"])
def test_ctrl_c_while_importing_is_one_line_and_130(tmp_path, module):
    proc = subprocess.Popen([sys.executable, "-m", module, "--epochs", "1000", "--out", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.time() + 60
    if not maps.parent.is_dir():
        pytest.skip("needs /proc to see when torch is being imported")
    while time.time() < deadline and "libtorch" not in maps.read_text():  # torch's import takes seconds
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    # 130; now and then (3 of ~40 tries, cause not pinned down: CPython re-raises SIGINT at exit when it thinks a
    # KeyboardInterrupt went unhandled) the process ends killed by SIGINT after the same line: a shell shows 130 too
    assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted during start-up: nothing was trained or written"


def test_ctrl_c_while_the_model_loads_is_one_line_and_130(tmp_path, capfd, monkeypatch):
    def loading(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "PPO", dataclasses.replace(train_mod.PPO, setup=loading))
    code, err = cli(capfd, "--out", tmp_path, *TINY_FLAGS)
    assert code == 130 and err == ["interrupted during start-up: nothing was trained or written"]
    assert not any(tmp_path.iterdir())


def test_ctrl_c_during_make_smoke_is_one_line_and_130(tmp_path, capsys, monkeypatch):
    from rlhf_nb.tools import smoke

    def interrupted(argv, run):
        run["dir"] = tmp_path
        raise KeyboardInterrupt

    monkeypatch.setattr(smoke, "_smoke", interrupted)
    assert smoke.main([]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"smoke interrupted (Ctrl-C); what was written is in {tmp_path}"]


def test_make_smoke_passes_the_first_ctrl_c_to_the_kernel_and_stops_at_the_second():
    """The kernel runs in its own session: the first Ctrl-C is forwarded to it (its train() then stops after the step
    and writes final/) and smoke waits; a second one interrupts smoke itself."""
    from rlhf_nb.tools import smoke

    kernel = subprocess.Popen(["sleep", "60"])

    class Provisioner:
        pid = kernel.pid

    run = {"dir": Path("."), "ctrl_c": False, "km": type("KM", (), {"provisioner": Provisioner})()}
    old = smoke._wait_on_first_ctrl_c(run)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes
        assert run["ctrl_c"] and kernel.wait(timeout=10) == -signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, old)
        kernel.kill()
