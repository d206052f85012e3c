"""python -m rlhf_nb.evaluate: a run's policy against the KL-regularised optimum (J/J*), as make train_quick prints it."""
from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf_nb.config import ConfigError, RunConfig
from rlhf_nb.evaluate import EvaluateOptions, checkpoint_folder, evaluate, main
from rlhf_nb.optimum import measure_policy, objective, optimum_by_prompt, score_samples
from rlhf_nb.train import setup, train

SMALL = dict(samples_per_prompt=2, base_samples_per_prompt=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short run that moves the policy (a large learning rate), with a checkpoint at step 2 and final/ at step 3."""
    out = tmp_path_factory.mktemp("runs")
    cfg = RunConfig(seed=0, batch_size=8, steps_per_epoch=3, max_new_tokens=6, learning_rate=1e-2, save_every=2,
                    progress=False, out=str(out), run_name="r")
    train(cfg)
    return out / "r"


def test_the_numbers_are_the_policy_measured_and_the_optimum_of_base_samples(trained):
    got = evaluate(EvaluateOptions(run=str(trained), **SMALL), say=lambda *_: None)
    assert got["checkpoint"] == str(trained / "final") and got["step"] == 3 and got["beta"] == 0.05
    # recomputed by hand from the same pieces: the checkpoint's weights in a fresh state, the base model for J*
    state = setup(RunConfig.from_dict(json.loads((trained / "final" / "trainer_state.json").read_text())["config"])
                  .replace(progress=False))
    from rlhf_nb.checkpoints import load_checkpoint

    load_checkpoint(trained / "final", state.policy, None, {}, state.device)
    m = measure_policy(state, 2, 12345)
    assert (got["score"], got["kl"]) == (m["score"], m["kl"]) and got["n"] == 2 * len(state.prompts)
    assert got["kl"] > 0.01  # the trained weights were loaded, not the base model's (whose KL is 0)
    prompts = [p for p in state.prompts for _ in range(4)]
    base = score_samples(state.ref, state.tokenizer, state.reward_fn, prompts, 6, torch.Generator().manual_seed(0))
    opt = optimum_by_prompt(base, prompts, 0.05)
    assert got["optimum"] == opt
    assert got["J"] == objective(m["score"], m["kl"], 0.05) and got["J_ratio"] == got["J"] / opt["J_star"]


def test_a_checkpoint_folder_and_another_beta(trained):
    got = evaluate(EvaluateOptions(run=str(trained / "checkpoints" / "step_2"), beta=0.2, **SMALL), say=lambda *_: None)
    assert got["step"] == 2 and got["beta"] == 0.2 and math.isfinite(got["J_ratio"])


def test_the_table_it_prints(trained, capsys):
    assert main(["--run", str(trained), "--samples_per_prompt", "1", "--base_samples_per_prompt", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{trained / 'final'} (step 3), β = 0.05")
    assert out[2].startswith("policy (32 fresh samples)") and out[3].startswith("optimum π* (64 base samples)")
    assert out[4].startswith("J/J* = ")


def test_the_untrained_policy_has_zero_kl():
    state = setup(RunConfig(seed=0, batch_size=2, max_new_tokens=4, progress=False))
    m = measure_policy(state, n_per_prompt=1)
    assert m["n"] == len(state.prompts)
    assert m["kl"] == pytest.approx(0.0, abs=1e-6)  # π = ρ before any update: every log-ratio is 0
    assert -1.0 <= m["score"] <= 1.0 and m["score"] == measure_policy(state, n_per_prompt=1)["score"]


def test_bad_runs_are_one_clear_error_before_any_model_loads(tmp_path, trained):
    assert checkpoint_folder(str(trained)) == trained / "final"
    assert checkpoint_folder(str(trained / "final")) == trained / "final"
    with pytest.raises(ConfigError, match="--run must be a run folder .* it does not exist"):
        checkpoint_folder(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no trainer_state.json"):
        checkpoint_folder(str(tmp_path))
    beta0 = tmp_path / "beta0"
    beta0.mkdir()
    state = json.loads((trained / "final" / "trainer_state.json").read_text())
    state["config"]["kl_coef"] = 0.0
    (beta0 / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="--beta: the run trained at --kl_coef 0, and J/J\\* needs β > 0"):
        evaluate(EvaluateOptions(run=str(beta0)))
    dpo = tmp_path / "dpo"
    dpo.mkdir()
    state["config"] = {**state["config"], "pairs": "proxy-rm-1000"}
    del state["config"]["advantage"]
    (dpo / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="is not a run of rlhf_nb.train"):
        evaluate(EvaluateOptions(run=str(dpo)))


def test_a_missing_run_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2 and "--run is required" in capsys.readouterr().err


@pytest.mark.slow
def test_a_task_run_is_measured_with_its_model_prompts_and_checker(tmp_path):
    """--task arithmetic: the policy and J* come from the task's model, prompts and checker (scores in [0, 1])."""
    train(RunConfig(task="arithmetic", max_new_tokens=6, batch_size=8, steps_per_epoch=2, seed=0, progress=False,
                    out=str(tmp_path), run_name="arith"))
    lines = []
    got = evaluate(EvaluateOptions(run=str(tmp_path / "arith"), samples_per_prompt=1, base_samples_per_prompt=2),
                   say=lines.append)
    assert "task arithmetic (its checker)" in lines[0]
    assert 0.0 <= got["score"] <= 1.0 and 0.0 <= got["optimum"]["score"] <= 1.0
    from rlhf_nb.tasks import arith_split
    assert got["n"] == len(arith_split()[0])  # one fresh sample of every training prompt
