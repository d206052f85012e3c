"""Lesson 06's stored sweep: the runs round-trip through JSON, a live re-run is checked against the file, the tool
writes the same numbers at any --jobs, and the committed file holds what lesson 06 claims about it."""
from __future__ import annotations

import json
import math

import pytest

import rlhf_nb.tools.capstone_sweep as tool
from rlhf_nb.course.experiments import (CAPSTONE_PATH, CAPSTONE_RUN, CAPSTONE_VARIANT_BETA, CAPSTONE_VARIANTS,
                                        REFRESH_EVERY, REFRESH_RUN, REFRESH_SEEDS, STORED_KEYS, SWEEP_BETAS,
                                        SWEEP_SEEDS, load_capstone, refresh_from_dict, refresh_to_dict,
                                        result_from_dict, result_to_dict, run_experiment, run_refresh, same_refresh,
                                        same_run)

TINY = dict(steps=3, max_new_tokens=8)


@pytest.mark.slow
def test_a_stored_run_round_trips_and_a_rerun_matches_it_exactly():
    r = run_experiment(0.05, 8, seed=3, **TINY)
    d = json.loads(json.dumps(result_to_dict(r)))
    back = result_from_dict(d)
    assert back.final == r.final and back.samples_after == r.samples_after and back.settings == r.settings
    assert all(set(h) <= set(STORED_KEYS) and "step" in h for h in back.history)
    assert same_run(run_experiment(0.05, 8, seed=3, **TINY), back) == 0.0  # reproduces to the stored digit
    assert same_run(run_experiment(0.05, 8, seed=4, **TINY), back) > 1e-3  # another seed does not
    with pytest.raises(ValueError, match="different steps"):
        same_run(run_experiment(0.05, 8, seed=3, steps=2, max_new_tokens=8), back)


@pytest.mark.slow
def test_the_warnings_kept_are_the_lines_the_run_printed(capsys):
    # β = 0 at a learning rate far too high: the policy runs away within a few steps
    r = run_experiment(0.0, 8, seed=0, steps=8, max_new_tokens=8, learning_rate=0.05)
    printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlhf_nb warning")]
    assert printed and r.warnings == printed


def test_the_job_list_covers_the_sweep_each_variant_and_the_refresh_runs():
    jobs = tool.jobs_list()
    assert [(b, s) for g, b, s, _ in jobs if g == "sweep"] == [(b, s) for b in SWEEP_BETAS for s in SWEEP_SEEDS]
    for label, change in CAPSTONE_VARIANTS.items():
        mine = [j for j in jobs if j[0] == label]
        assert [(b, s) for _, b, s, _ in mine] == [(CAPSTONE_VARIANT_BETA, s) for s in SWEEP_SEEDS]
        assert all(settings == {**CAPSTONE_RUN, **change} for *_, settings in mine)
    for group, every in (("refresh fixed", None), ("refresh refreshed", REFRESH_EVERY)):
        mine = [j for j in jobs if j[0] == group]
        assert [s for _, _, s, _ in mine] == list(REFRESH_SEEDS)
        assert all(settings == {**REFRESH_RUN, "every": every} for *_, settings in mine)


@pytest.mark.slow
def test_a_refresh_run_round_trips_and_a_rerun_matches_it():
    tiny = dict(steps=4, batch_size=4, max_new_tokens=6)
    r = run_refresh(2, seed=0, measure_at=(2, 4), n=8, **tiny)
    back = refresh_from_dict(json.loads(json.dumps(refresh_to_dict(r))))
    assert sorted(back.kl_to_original) == [2, 4] and (back.every, back.seed) == (2, 0)
    assert same_refresh(run_refresh(2, seed=0, measure_at=(2, 4), n=8, **tiny), back) == 0.0
    assert same_refresh(run_refresh(2, seed=1, measure_at=(2, 4), n=8, **tiny), back) > 1e-3
    with pytest.raises(ValueError, match="different runs"):
        same_refresh(run_refresh(None, seed=0, measure_at=(2, 4), n=8, **tiny), back)


@pytest.mark.slow
def test_the_tool_writes_the_same_runs_at_any_number_of_jobs(tmp_path, monkeypatch):
    monkeypatch.setattr(tool, "CAPSTONE_RUN", {"batch_size": 4, "steps": 2, "max_new_tokens": 6})
    monkeypatch.setattr(tool, "SWEEP_BETAS", (0.0, 0.1))
    monkeypatch.setattr(tool, "SWEEP_SEEDS", (0,))
    monkeypatch.setattr(tool, "CAPSTONE_VARIANTS", {"vf 1": {"vf_coef": 1.0}})
    monkeypatch.setattr(tool, "REFRESH_RUN", {"kl_coef": 0.2, "batch_size": 4, "steps": 2, "max_new_tokens": 6})
    monkeypatch.setattr(tool, "REFRESH_SEEDS", (0,))
    monkeypatch.setattr(tool, "REFRESH_GROUPS", {"fixed": None, "refreshed": 1})
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    tool.main(["--jobs", "1", "--out", str(one)])
    tool.main(["--jobs", "2", "--out", str(two)])
    a, b = load_capstone(one), load_capstone(two)
    for x, y in zip([*a["sweep"][0.0], *a["sweep"][0.1], *a["variants"]["vf 1"]],
                    [*b["sweep"][0.0], *b["sweep"][0.1], *b["variants"]["vf 1"]]):
        assert x.history == y.history and x.samples_after == y.samples_after
    for x, y in zip([*a["refresh"]["fixed"], *a["refresh"]["refreshed"]], [*b["refresh"]["fixed"], *b["refresh"]["refreshed"]]):
        assert x.history == y.history and x.kl_to_original == y.kl_to_original
    assert [r.every for r in a["refresh"]["refreshed"]] == [1] and [r.every for r in a["refresh"]["fixed"]] == [None]
    assert a["variants"]["vf 1"][0].settings["vf_coef"] == 1.0
    direct = run_experiment(0.1, 4, steps=2, seed=0, max_new_tokens=6)
    assert same_run(direct, a["sweep"][0.1][0]) == 0.0


# ---- the committed file: what lesson 06 reads and says --------------------------------------------------------------

@pytest.fixture(scope="module")
def stored():
    return load_capstone(CAPSTONE_PATH)


def test_the_committed_sweep_was_run_with_todays_settings(stored):
    assert stored["settings"] == CAPSTONE_RUN and stored["variants_changed"] == CAPSTONE_VARIANTS
    assert sorted(stored["sweep"]) == sorted(SWEEP_BETAS)
    for beta, runs in stored["sweep"].items():
        assert [r.seed for r in runs] == list(SWEEP_SEEDS)
        assert all(len(r.history) == CAPSTONE_RUN["steps"] and r.kl_coef == beta for r in runs)
    assert list(stored["variants"]) == list(CAPSTONE_VARIANTS)
    assert stored["refresh_settings"] == {**REFRESH_RUN, "every": REFRESH_EVERY}
    for name, every in (("fixed", None), ("refreshed", REFRESH_EVERY)):
        runs = stored["refresh"][name]
        assert [(r.every, r.seed) for r in runs] == [(every, s) for s in REFRESH_SEEDS]
        assert all(len(r.history) == REFRESH_RUN["steps"] and max(r.kl_to_original) == REFRESH_RUN["steps"]
                   for r in runs)


def test_no_run_with_a_kl_penalty_warns(stored):
    """The healthy-run rule of issue 17: only β = 0 (nothing holds the policy: the sweep's control) may warn."""
    for beta, runs in stored["sweep"].items():
        for r in runs:
            assert beta == 0.0 or r.warnings == [], (beta, r.seed, r.warnings)
    for label, runs in stored["variants"].items():
        assert all(r.warnings == [] for r in runs), label
    for name, runs in stored["refresh"].items():  # lesson 06: the drift shows only against π_0, not in a warning
        assert all(r.warnings == [] for r in runs), name


@pytest.mark.slow
def test_every_beta_above_zero_reaches_the_optimum(stored):
    """Lesson 06's table: mean J/J* >= 0.8 for every β > 0, each seed >= 0.7 (J* from 64 base samples a prompt)."""
    from rlhf_nb.optimum import score_base_samples, frontier, objective
    scores, prompts = score_base_samples(64, max_new_tokens=12, seed=0)
    opt = frontier(scores, prompts, SWEEP_BETAS)
    for beta, runs in stored["sweep"].items():
        if beta == 0.0:
            continue
        ratios = [objective(r.final_reward, r.final_kl, beta) / opt[beta]["J_star"] for r in runs]
        assert not any(math.isnan(x) for x in ratios)
        assert sum(ratios) / len(ratios) >= 0.8 and min(ratios) >= 0.7, (beta, ratios)


def test_run_capstone_runs_the_settings_the_tool_runs(monkeypatch):
    import rlhf_nb.course.experiments as ex
    seen = []
    monkeypatch.setattr(ex, "run_experiment", lambda beta, bs, steps, seed, keep_state, **kw: seen.append(
        (beta, bs, steps, seed, kw)))
    ex.run_capstone(0.05, 1, variant="vf_coef 0.1")
    _, b, s, settings = next(j for j in tool.jobs_list() if j[0] == "vf_coef 0.1" and j[2] == 1)
    rest = {k: v for k, v in settings.items() if k not in ("batch_size", "steps")}
    assert seen == [(0.05, settings["batch_size"], settings["steps"], 1, rest)]


def test_largest_difference_matches_nan_with_nan_and_never_hides_a_nan():
    from rlhf_nb.course.experiments import largest_difference

    nan = float("nan")
    stored = [{"step": 1, "objective/kl": nan, "objective/scores": 0.5}, {"step": 2, "objective/kl": 1.0,
                                                                           "objective/scores": 0.25}]
    assert largest_difference([dict(h) for h in stored], stored) == 0.0  # nan matches nan
    first_nan_live = [{"step": 1, "objective/kl": 3.0, "objective/scores": 0.5}, dict(stored[1])]
    assert largest_difference(first_nan_live, stored) == float("inf")  # a number where nan was stored
    assert largest_difference([dict(stored[0]), {**stored[1], "objective/scores": 0.5}], stored) == 0.25
