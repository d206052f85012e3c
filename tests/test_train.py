"""The loop end to end: run layout, same seed -> same JSONL, exact resume, signals, bad config, improvement."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlhf_nb.checkpoints import CheckpointError, load_checkpoint
from rlhf_nb.config import ConfigError, RunConfig
from rlhf_nb.policy import forward_tokens
from rlhf_nb.runlog import new_run_dir, read_jsonl, strip_wall_time
from rlhf_nb.schedule import lr_factor, warmup_factor
from rlhf_nb.train import ppo_step, setup, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(batch_size=8, max_new_tokens=8, steps_per_epoch=4, progress=False, num_minibatches=2, ppo_epochs=2)
METRICS = ("objective/scores", "objective/kl", "objective/rlhf_reward", "objective/non_score_reward", "policy/entropy",
           "policy/clipfrac", "policy/approx_kl", "loss/policy", "loss/value", "value/clipfrac",
           "value/explained_variance", "time/step_s")


def _run(tmp_path, **kw) -> Path:
    res = train(RunConfig(out=str(tmp_path), **{**TINY, **kw}))
    return res.run_dir


def test_run_layout_and_metric_names(tmp_path):
    run = _run(tmp_path, save_every=2)
    assert run.parent == tmp_path and run.name.startswith("run_")
    for rel in ("config.json", "logs/train.jsonl", "logs/train.log", "samples.jsonl", "checkpoints/step_2",
                "checkpoints/step_4", "final/model.safetensors", "final/value_head.safetensors"):
        assert (run / rel).exists(), rel
    assert list((run / "tb").glob("events.out.tfevents.*"))
    rows = read_jsonl(run / "logs" / "train.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for name in METRICS:
        assert name in rows[0], name
    assert RunConfig.from_dict(json.loads((run / "config.json").read_text())).batch_size == 8
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]  # no half-written checkpoint left behind


def test_same_seed_same_jsonl_other_seed_differs(tmp_path):
    a, b, c = (_run(tmp_path / n, seed=s) for n, s in (("a", 7), ("b", 7), ("c", 8)))
    rows = {k: [strip_wall_time(r) for r in read_jsonl(d / "logs" / "train.jsonl")] for k, d in zip("abc", (a, b, c))}
    assert json.dumps(rows["a"]) == json.dumps(rows["b"])
    assert rows["a"] != rows["c"]
    assert (a / "samples.jsonl").read_text() == (b / "samples.jsonl").read_text()


@pytest.mark.parametrize("advantage, extra", [("gae", {}), ("gae", {"lr_warmup_steps": 4, "lr_decay": "linear"}),
                                              ("grpo", {"num_generations": 2, "batch_size": 4}),
                                              ("rloo", {"num_generations": 2, "batch_size": 4}),
                                              ("grpo", {"num_generations": 2, "batch_size": 4, "ppo_epochs": 1,
                                                        "num_minibatches": 1})])
def test_resume_continues_exactly(tmp_path, advantage, extra):
    kw = dict(seed=3, save_every=2, advantage=advantage, adaptive_kl=True, kl_coef=0.1, target_kl=0.5, **extra)
    full = _run(tmp_path / "full", **kw)
    resumed = train(RunConfig(out=str(tmp_path / "resumed"), resume=str(full / "checkpoints" / "step_2"),
                              **{**TINY, **kw})).run_dir
    want = [strip_wall_time(r) for r in read_jsonl(full / "logs" / "train.jsonl")][2:]
    got = [strip_wall_time(r) for r in read_jsonl(resumed / "logs" / "train.jsonl")]
    assert [r["step"] for r in got] == [3, 4]
    assert json.dumps(got) == json.dumps(want)


def test_runs_never_overwrite(tmp_path):
    a, b = new_run_dir(tmp_path, "same"), new_run_dir(tmp_path, "same")
    assert a != b and b.name == "same_1"


def test_loading_a_checkpoint_never_unpickles_code(tmp_path):
    run = _run(tmp_path, steps_per_epoch=1)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"x": Evil()}, run / "final" / "training_state.pt")
    s = setup(RunConfig(**TINY))
    with pytest.raises(CheckpointError, match="not a plain tensor checkpoint") as e:
        load_checkpoint(run / "final", s.policy, s.optimizer, s.generators, s.device)
    assert "weights_only=False" not in str(e.value)  # torch's advice to run the file's code is not passed on
    assert not (tmp_path / "pwned").exists()


def test_a_failed_checkpoint_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    from rlhf_nb import checkpoints

    s = setup(RunConfig(**TINY))

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", boom)
    with pytest.raises(checkpoints.CheckpointWriteError):
        checkpoints.save_checkpoint(tmp_path / "step_1", s.policy, s.tokenizer, s.optimizer, s.generators, {"step": 1})
    assert list(tmp_path.iterdir()) == []


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "rlhf_nb.train", *args], capture_output=True, text=True, cwd=ROOT, **kw)


@pytest.mark.parametrize("args, flag", [
    (["--batch_size", "0"], "--batch_size"),
    (["--kl_coef", "-1"], "--kl_coef"),
    (["--max_new_tokens", "500"], "--max_new_tokens"),
    (["--reward", "vibes"], "--reward"),
    (["--device", "tpu"], "--device"),
])
def test_cli_bad_config_stops_before_any_work(tmp_path, args, flag):
    p = _cli("--out", str(tmp_path), *args)
    assert p.returncode == 2
    err = [l for l in p.stderr.strip().splitlines() if l.strip()]
    assert len(err) == 1 and flag in err[0], p.stderr
    assert not any(tmp_path.iterdir())  # no run folder was created


def test_cli_cuda_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = _cli("--out", str(tmp_path), "--device", "cuda")
    assert p.returncode == 2 and "--device cuda" in p.stderr and not any(tmp_path.iterdir())


def test_sigterm_leaves_a_loadable_checkpoint_and_says_how_to_resume(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_nb.train", "--out", str(tmp_path), "--batch_size", "8",
                             "--max_new_tokens", "8", "--steps_per_epoch", "500", "--progress", "false"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    jsonl = None
    while time.time() < deadline:
        found = list(tmp_path.glob("run_*/logs/train.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            jsonl = found[0]
            break
        time.sleep(0.2)
    assert jsonl is not None, "the run never logged two steps"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    run = jsonl.parents[1]
    assert "--resume" in out and str(run / "final") in out
    state = json.loads((run / "final" / "trainer_state.json").read_text())
    assert 2 <= state["step"] < 500
    assert state["step"] == len(read_jsonl(jsonl))


def test_resume_refuses_to_change_the_algorithm(tmp_path):
    run = _run(tmp_path, steps_per_epoch=1)
    p = _cli("--resume", str(run / "final"), "--kl_coef", "0.3")
    assert p.returncode == 2 and "--kl_coef cannot change on --resume" in p.stderr


@pytest.mark.slow
def test_sentiment_reward_actually_improves(tmp_path):
    res = train(RunConfig(seed=0, batch_size=16, steps_per_epoch=80, progress=False), write_run=False)
    scores = [r["objective/scores"] for r in res.history]
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert last > first + 0.25, scores  # 80 steps at the defaults: about -0.01 -> 0.41


def test_every_logged_metric_is_defined_in_the_glossary(tmp_path):
    glossary = (ROOT / "docs" / "metrics.md").read_text()
    for run in (_run(tmp_path / "ppo", steps_per_epoch=1),
                _run(tmp_path / "grpo", steps_per_epoch=1, advantage="grpo", num_generations=2, batch_size=4)):
        for name in read_jsonl(run / "logs" / "train.jsonl")[0]:
            if name != "step":
                assert f"`{name}`" in glossary, f"{name} is logged but not defined in docs/metrics.md"


def test_single_pass_shortcut_uses_one_policy_forward_and_stays_on_policy():
    """With one epoch of one minibatch, the update's own forward gives the old log-probs: ratio 1, nothing clipped."""
    from rlhf_nb import train as train_mod

    kw = dict(TINY, ppo_epochs=1, num_minibatches=1, steps_per_epoch=3, seed=5)
    calls = []

    def counting(*a, **k):
        calls.append(1)
        return forward_tokens(*a, **k)

    cfg = RunConfig(**kw)
    s = train_mod.setup(cfg)
    s.forward = counting  # every forward pass of the step, the update's included
    fast = train(cfg, write_run=False, state=s).history
    assert len(calls) == 2 * 3  # policy (with grad, reused by the update) + reference, per step
    for r in fast:
        assert r["policy/ratio"] == 1.0 and r["policy/clipfrac"] == 0.0


def test_kl_in_loss_moves_the_penalty_from_reward_to_loss(tmp_path):
    hist = train(RunConfig(**{**TINY, "advantage": "grpo", "num_generations": 2, "batch_size": 4, "kl_in_loss": True,
                              "steps_per_epoch": 3}), write_run=False).history
    for r in hist:
        assert r["objective/non_score_reward"] == 0.0 and r["objective/rlhf_reward"] == r["objective/scores"]
        assert r["loss/kl"] >= 0.0
    assert hist[-1]["loss/kl"] > 0.0  # the policy has moved off the reference
    with pytest.raises(Exception, match="--kl_in_loss"):
        RunConfig(kl_in_loss=True)  # GAE keeps the KL in the per-token reward


def test_warmup_raises_the_learning_rate_linearly_then_holds_it():
    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0  # no warm-up: the rate as constructed, from the first step
    s = setup(RunConfig(**{**TINY, "steps_per_epoch": 3, "lr_warmup_steps": 2, "learning_rate": 1e-3}))
    seen = []
    for _ in range(3):
        ppo_step(s)
        seen.append([g["lr"] for g in s.optimizer.param_groups])
    assert seen == [[5e-4], [1e-3], [1e-3]]


@pytest.mark.parametrize("decay, expected", [
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]),
    ("cosine", [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0]),
])
def test_lr_decay_after_the_warmup_reaches_its_last_step_above_zero(decay, expected):
    cfg = RunConfig(**{**TINY, "steps_per_epoch": 3, "epochs": 2, "lr_warmup_steps": 2, "lr_decay": decay})
    got = [lr_factor(step, cfg) for step in range(7)]  # the run is steps 0..5 (epochs * steps_per_epoch = 6)
    assert got == pytest.approx(expected)
    assert got[5] > 0.0  # the last step of the run still learns; only a step past the run gets 0 (constant: 1)
    with pytest.raises(ConfigError, match="--lr_decay"):
        RunConfig(lr_decay="step")


def test_the_result_carries_the_warning_lines_the_run_printed(capsys):
    """train() returns the diagnostics' lines it printed, so callers (lesson 06's sweep, faults.run) need not replay
    the checks or scrape stderr."""
    res = train(RunConfig(**{**TINY, "kl_coef": 0.0, "learning_rate": 0.05, "steps_per_epoch": 8}), write_run=False)
    printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlhf_nb warning")]
    assert printed and res.warnings == printed


def test_a_run_dir_that_is_a_file_or_holds_a_run_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """The smoke notebook's out_dir (papermill -p out_dir …) used to end in a raw FileExistsError."""
    from rlhf_nb import train as train_mod
    from rlhf_nb.config import ConfigError

    monkeypatch.setattr(train_mod, "PPO", dataclasses.replace(
        train_mod.PPO, setup=lambda cfg: pytest.fail("set-up ran before run_dir was checked")))
    cfg = RunConfig(steps_per_epoch=1, batch_size=2, progress=False)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="run_dir .* is a file"):
        train_mod.train(cfg, run_dir=a_file)
    (tmp_path / "used" / "logs").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        train_mod.train(cfg, run_dir=tmp_path / "used")
