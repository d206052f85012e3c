"""Lesson 08's per-seed summary of the sweep's RL runs: peak, lowest, start and end, the step where samples turn
mostly ill-formed; checked on hand-made rows and on the committed sweep."""
from __future__ import annotations

import math

import pytest

from rlhf_nb.course.overopt_lesson import seed_summary


def _row(step, kl, gain, wf, pref=0.7, dis=0.6):
    return {"step": step, "kl": kl, "d": math.sqrt(kl), "gold_gain": gain, "well_formed": wf,
            "proxy_gain_sd": kl / 10, "pref_accuracy": pref, "disagreement": dis}


def test_seed_summary_by_hand():
    rose = [_row(0, 0.0, 0.0, 0.98), _row(5, 1.0, 0.2, 0.9), _row(10, 4.0, -0.3, 0.4),
            _row(15, 9.0, -0.1, 0.3, 0.2, 1.1)]
    fell = [_row(0, 0.0, 0.0, 0.98), _row(5, 1.0, -0.2, 0.6), _row(10, 4.0, -0.5, 0.6)]
    a, b = seed_summary([rose, fell], seeds=(3, 4))
    assert (a["seed"], a["peak gold gain"], a["peak step"], a["peak KL"], a["peak d"]) == (3, 0.2, 5, 1.0, 1.0)
    assert (a["lowest gold gain"], a["lowest at d"]) == (-0.3, 2.0)
    assert (a["end KL"], a["end d"], a["end gold gain"], a["end well-formed"]) == (9.0, 3.0, -0.1, 0.3)
    assert (a["start well-formed"], a["below half well-formed from step"]) == (0.98, 10)
    assert (a["pref_accuracy start"], a["pref_accuracy end"], a["disagreement end"]) == (0.7, 0.2, 1.1)
    assert a["end proxy gain (sd)"] == pytest.approx(0.9)
    assert (b["peak gold gain"], b["peak step"]) == (0.0, 0)  # never rose: the base policy is the peak
    assert b["below half well-formed from step"] is None
    assert seed_summary([fell])[0]["seed"] == 0


def test_seed_summary_of_the_committed_sweep_matches_observed_peak():
    from rlhf_nb.overopt import load_sweep, observed_peak, sweep_runs

    sweep = load_sweep()
    runs = sweep_runs(sweep, "rl", 4000, 0.05)
    rows = seed_summary(runs, sweep["config"]["seeds"])
    assert [r["seed"] for r in rows] == list(sweep["config"]["seeds"])
    assert all(r["start well-formed"] == runs[0][0]["well_formed"] for r in rows)  # one base policy, one measurement
    assert sum(r["end d"] for r in rows) / len(rows) == pytest.approx(observed_peak(runs)["d_last"])
    assert max(r["peak gold gain"] for r in rows) >= observed_peak(runs)["gain"]  # a seed's peak ≥ the mean's
