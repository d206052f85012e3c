"""Lesson 07's exercise checkers (rlhf_nb/course/checks.py): right answers pass, wrong ones fail with a reason, None is 'not attempted'."""
import pytest
import torch

from rlhf_nb.advantages import group_advantages
from rlhf_nb.course.checks import check_group_advantage, check_knob


def test_group_advantage_right_wrong_and_unattempted(capsys):
    scores = [0.9, 0.1, 0.1, -0.3]
    right = group_advantages(torch.tensor(scores), 4).tolist()
    assert check_group_advantage(right, scores, 4)
    assert check_group_advantage([round(x, 3) for x in right], scores, 4)  # 3 decimals are enough
    assert not check_group_advantage([x * 0.9 for x in right], scores, 4)
    assert not check_group_advantage(right[:3], scores, 4)
    assert not check_group_advantage("0.9", scores, 4)
    assert not check_group_advantage(None, scores, 4)
    out = capsys.readouterr().out
    assert "not attempted" in out and "std unbiased" in out


def test_group_advantage_rloo():
    scores = [0.5, 0.1, -0.2, 0.4, 0.3, 0.3, 0.3, 0.3]
    right = group_advantages(torch.tensor(scores), 4, method="rloo").tolist()
    assert check_group_advantage(right, scores, 4, method="rloo")
    assert not check_group_advantage(group_advantages(torch.tensor(scores), 4).tolist(), scores, 4, method="rloo")


def test_check_knob():
    assert check_knob("kl_coef", "beta")
    assert check_knob("kl_coef", " Beta ")
    assert not check_knob("kl_coef", "kl_coef")
    assert check_knob("max_new_tokens", "max_completion_length")
    assert check_knob("num_minibatches", "steps_per_generation")  # one of several TRL fields
    assert check_knob("steps_per_epoch", "max_steps")  # a key that names two knobs
    assert check_knob("lam", "none")
    assert not check_knob("lam", "gae_lambda")
    assert not check_knob("kl_coef", None)
    assert not check_knob("kl_coef", 0.05)
    with pytest.raises(ValueError):
        check_knob("not_a_knob", "beta")
