"""Lesson 12's task: the checker on hand-written and adversarial cases, the split, --task in the config and setup."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rlhf_nb.config import ConfigError, RunConfig
from rlhf_nb.tasks import (ARITH_MODEL_DIR, FORMAT_BONUS, ArithmeticReward, answer_of, arith_score, arith_split,
                           check_answer, get_task, task_parts)


@pytest.mark.parametrize("completion, verdict", [
    ("85", "correct"), ("84", "wrong"), ("185", "wrong"), ("0", "wrong"),
    ("", "malformed"),  # an empty completion
    ("85 ", "malformed"), (" 85", "malformed"), ("85\n", "malformed"),  # extra text, even whitespace
    ("85 85", "malformed"), ("84 85", "malformed"), ("85,86", "malformed"),  # several answers
    ("085", "malformed"), ("+85", "malformed"), ("85.0", "malformed"), ("eighty-five", "malformed"),
    ("37+48=85", "malformed"), ("８５", "malformed"),  # the prompt repeated; full-width digits
])
def test_the_checker_on_hand_written_cases(completion, verdict):
    assert check_answer("37+48=", completion) == verdict


def test_zero_and_three_digit_answers():
    assert check_answer("0+0=", "0") == "correct" and check_answer("0+0=", "00") == "malformed"
    assert check_answer("99+99=", "198") == "correct" and answer_of("5+7=") == "12"
    with pytest.raises(ValueError, match="not an arithmetic prompt"):
        answer_of("The acting was")


def test_the_reward_and_its_optional_format_bonus():
    assert [arith_score("1+2=", c) for c in ("3", "4", "x")] == [1.0, 0.0, 0.0]
    assert [arith_score("1+2=", c, 0.1) for c in ("3", "4", "x")] == [1.0, 0.1, 0.0]
    r = ArithmeticReward(FORMAT_BONUS)(["1+2=", "1+2=", "1+2="], ["3", "4", ""])
    assert torch.equal(r, torch.tensor([1.0, FORMAT_BONUS, 0.0]))


def test_the_split_is_fixed_disjoint_and_complete():
    train, held = arith_split()
    assert len(held) == 256 and not set(train) & set(held) and len(train) + len(held) == 100 * 100
    assert arith_split() == (train, held)


def test_task_in_the_config():
    assert RunConfig().task == "reviews"  # the default: lessons 00-11 unchanged
    with pytest.raises(ConfigError, match="--task must be one of"):
        RunConfig(task="chess")
    with pytest.raises(ConfigError, match="--task arithmetic is scored by its checker"):
        RunConfig(task="arithmetic", reward="length")
    with pytest.raises(ValueError, match="--task must be one of"):
        get_task("chess")


def test_task_parts_pick_the_model_prompts_and_reward():
    from rlhf_nb.corpus import PROMPTS
    model, prompts, reward = task_parts(RunConfig())
    assert model == "embedded" and prompts == list(PROMPTS)
    model, prompts, reward = task_parts(RunConfig(task="arithmetic"))
    assert model == str(ARITH_MODEL_DIR) and prompts == arith_split()[0]
    assert reward(["1+2="], ["3"]).tolist() == [1.0]
    assert task_parts(RunConfig(task="arithmetic", model="/some/checkpoint"))[0] == "/some/checkpoint"


def test_a_short_arithmetic_run_trains_on_the_task():
    from rlhf_nb.train import setup, train
    cfg = RunConfig(task="arithmetic", advantage="grpo", num_generations=4, batch_size=4, steps_per_epoch=2,
                    max_new_tokens=6, progress=False, device="cpu", kl_coef=0.0)
    state = setup(cfg)
    assert state.prompts == arith_split()[0] and len(state.tokenizer) == 258
    res = train(cfg, write_run=False, state=state)
    assert len(res.history) == 2 and 0.0 <= res.history[0]["objective/scores"] <= 1.0


def test_a_bad_task_is_one_line_and_exit_2(tmp_path):
    p = subprocess.run([sys.executable, "-m", "rlhf_nb.train", "--task", "chess", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "--task" in lines[0], p.stderr
