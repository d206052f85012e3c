"""run_experiment: reproducible under a seed, validated by RunConfig, probe samples before/after; exercise checks."""
from __future__ import annotations

import json

import pytest

from rlhf_nb.config import ConfigError
from rlhf_nb.course.checks import BAD, OK, TODO, check_batch_prediction, check_kl_prediction, check_rlhf_reward
from rlhf_nb.course.experiments import PROBE_PROMPTS, final_averages, run_experiment, samples_html, samples_table

TINY = dict(steps=3, max_new_tokens=8)


def _strip_time(history):
    return [{k: v for k, v in r.items() if not k.startswith(("time/",))} for r in history]


@pytest.mark.slow
def test_same_seed_same_result_other_seed_differs():
    a, b, c = (run_experiment(0.05, 8, seed=s, **TINY) for s in (5, 5, 6))
    assert json.dumps(_strip_time(a.history)) == json.dumps(_strip_time(b.history))
    assert a.samples_before == b.samples_before and a.samples_after == b.samples_after
    assert a.final == b.final
    assert _strip_time(a.history) != _strip_time(c.history)


@pytest.mark.slow
def test_result_fields():
    r = run_experiment(0.1, 8, **TINY)
    assert (r.kl_coef, r.batch_size, r.steps, r.seed) == (0.1, 8, 3, 0)
    assert [h["step"] for h in r.history] == [1, 2, 3]
    assert all(h["objective/kl_coef"] == 0.1 for h in r.history)  # the coefficient asked for is the one used
    assert [s["prompt"] for s in r.samples_before] == list(PROBE_PROMPTS) == [s["prompt"] for s in r.samples_after]
    assert r.final_reward == r.final["objective/scores"] and r.final_kl == r.final["objective/kl"]
    assert set(r.summary()) >= {"kl_coef", "batch_size", "steps", "objective/scores", "objective/kl"}


@pytest.mark.parametrize("kw, flag", [
    (dict(kl_coef=-0.1, batch_size=8), "--kl_coef"),
    (dict(kl_coef=float("nan"), batch_size=8), "--kl_coef"),
    (dict(kl_coef=0.05, batch_size=0), "--batch_size"),
    (dict(kl_coef=0.05, batch_size=8.5), "--batch_size"),
    (dict(kl_coef=0.05, batch_size=8, steps=0), "--steps_per_epoch"),
    (dict(kl_coef=0.05, batch_size=8, seed=-1), "--seed"),
    (dict(kl_coef=0.05, batch_size=5), "--num_minibatches"),  # 2 minibatches cannot split 5 prompts evenly
    (dict(kl_coef=0.05, batch_size=8, max_new_tokens=0), "--max_new_tokens"),
])
def test_bad_values_raise_config_error_naming_the_flag(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        run_experiment(**kw)


def test_final_averages_use_the_last_quarter():
    hist = [{"a": float(i)} for i in range(8)]
    assert final_averages(hist, keys=("a",)) == {"a": 6.5}
    assert final_averages(hist[:2], keys=("a",)) == {"a": 1.0}


def test_samples_table_and_html_escape():
    before = [{"prompt": "The <b>", "completion": " bad & sad", "score": -0.5}]
    after = [{"prompt": "The <b>", "completion": " great", "score": 0.75}]
    df = samples_table(before, after)
    assert list(df.columns) == ["prompt", "before", "score before", "after", "score after"]
    assert df.iloc[0]["score after"] == 0.75
    h = samples_html(before, after)
    assert "&lt;b&gt;" in h and "&amp;" in h and "<b>" not in h and "+0.75" in h


@pytest.mark.parametrize("check, right, wrongs", [
    (check_kl_prediction, 0.0, [0.2]),
    (check_rlhf_reward, 0.7, [0.8, 0.72]),
    (check_batch_prediction, 64, [8]),
])
def test_checks_pass_right_answers_and_fail_wrong_ones(check, right, wrongs, capsys):
    assert check(right) is True
    assert capsys.readouterr().out.startswith(OK)
    for w in wrongs:
        assert check(w) is False
        assert capsys.readouterr().out.startswith(BAD)
    assert check(None) is False
    assert capsys.readouterr().out.startswith(TODO)
    assert check("a string") is False and check(True) is False
    assert "answer with" in capsys.readouterr().out
