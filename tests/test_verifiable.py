"""Lesson 12: its checkers, its helpers, and the stored sweep (rlhf_nb/assets/verifiable-sweep.json)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import rlhf_nb.tools.verifiable_sweep as tool
from rlhf_nb.course import checks
from rlhf_nb.course.verifiable import (COMMON, KS, METHODS, VERIFIABLE_PATH, VERIFIABLE_SEEDS, crossing, curves,
                                       load_verifiable, prompt_shift, summary_table)
from rlhf_nb.passk import pass_at_k
from rlhf_nb.tasks import check_answer


def test_check_pass_at_k(capsys):
    assert checks.check_pass_at_k(pass_at_k)
    assert not checks.check_pass_at_k(lambda n, c, k: 1 - (1 - c / n) ** k)
    assert "BIASED" in capsys.readouterr().out
    assert not checks.check_pass_at_k(lambda n, c, k: None)
    assert "not attempted" in capsys.readouterr().out


def test_check_checker(capsys):
    assert checks.check_checker(check_answer)
    naive = lambda p, c: "correct" if c.strip() == str(eval(p[:-1])) else "wrong"  # noqa: E731
    assert not checks.check_checker(naive)
    assert "malformed" in capsys.readouterr().out


def test_check_crossing(capsys):
    assert checks.check_crossing(8, 8) and checks.check_crossing(None, None)
    assert not checks.check_crossing(64, 8) and not checks.check_crossing(8, None)
    assert not checks.check_crossing(..., 8)
    assert "not attempted" in capsys.readouterr().out


def test_crossing_helper():
    base = np.array([0.3, 0.5, 0.9])
    runs = np.array([[0.4, 0.5, 0.8], [0.45, 0.6, 0.85]])
    c = crossing(base, runs, ks=(1, 2, 4))
    assert c == {"above": [1], "below": [4], "mean_crosses_at": 4}


def test_the_job_list():
    assert tool.jobs_list() == [(m, s) for m in METHODS for s in VERIFIABLE_SEEDS]


@pytest.fixture(scope="module")
def stored():
    return load_verifiable(VERIFIABLE_PATH)


def test_the_committed_sweep_was_run_with_todays_settings(stored):
    assert stored["common"] == COMMON and stored["methods"] == METHODS and stored["seeds"] == list(VERIFIABLE_SEEDS)
    assert len(stored["base_p"]) == 256 and stored["base_remainder_max"] < 1e-6
    for m, runs in stored["runs"].items():
        assert [r["seed"] for r in runs] == list(VERIFIABLE_SEEDS)
        assert all(len(r["history"]) == METHODS[m].get("steps", COMMON["steps"]) and len(r["p"]) == 256 for r in runs)
        assert all(r["remainder_max"] < 1e-6 for r in runs)
        assert len({tuple(r["p"][:8]) for r in runs}) == len(runs)  # the seeds differ


def test_the_base_model_leaves_rl_room(stored):
    c = curves(stored)["base model"][0]
    assert 0.2 <= c[0] <= 0.6 and c[KS.index(64)] > 0.9


def test_the_helpers_on_the_stored_sweep(stored):
    rows = summary_table(stored)
    assert [r["method"] for r in rows] == ["base model", *METHODS]
    s = prompt_shift(stored, next(iter(METHODS)))
    assert s["gain"] + s["lose"] <= 256 and len(s["delta"]) == 256
    assert not math.isnan(float(np.mean(s["delta"])))
