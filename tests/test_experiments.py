"""run_experiment: reproducible under a seed, validated by RunConfig, probe samples before/after; the sweep's bands,
their separation, J/J* against the optimum, the critic probe, and lesson 06's plots."""
from __future__ import annotations

import json

import pytest

from rlhf_nb.config import ConfigError
from rlhf_nb.course.experiments import (LESSON_RUN, PROBE_PROMPTS, ExperimentResult, band, final_averages,
                                        regularised_table, run_experiment, run_sweep, samples_html, samples_table,
                                        separated_from, value_probe)

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
    (dict(kl_coef=0.05, batch_size=5, num_minibatches=2), "--num_minibatches"),  # 2 minibatches cannot split 5 prompts
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


def fake(kl_coef, seed, scores, kls):
    """An ExperimentResult with these per-step scores and KLs (no training)."""
    hist = [{"step": i + 1, "objective/scores": a, "objective/kl": b, "objective/rlhf_reward": a - kl_coef * b,
             "policy/entropy": 1.0} for i, (a, b) in enumerate(zip(scores, kls))]
    return ExperimentResult(kl_coef, 8, len(hist), seed, hist, [], [], final_averages(hist))


def test_band_is_mean_and_min_max_over_seeds():
    runs = [fake(0.1, s, [0.0, s], [0, 0]) for s in (0, 1, 2)]
    b = band(runs, "objective/scores")
    assert b == {"step": [1, 2], "mean": [0.0, 1.0], "lo": [0.0, 0.0], "hi": [0.0, 2.0]}


def test_separated_from_needs_the_bands_apart_to_the_end():
    low = [fake(0.2, s, [0, 0, 0, 0], [1.0 + s, 1.0, 2.0, 2.0]) for s in range(3)]
    high = [fake(0.0, s, [0, 0, 0, 0], [3.5, 1.0, 5.0 + s, 6.0]) for s in range(3)]
    assert separated_from(high, low, "objective/kl") == 3  # apart at step 1, touching at step 2, apart from 3 on
    assert separated_from(low, high, "objective/kl") == 3  # symmetric
    assert separated_from(high, low, "objective/scores") is None  # identical bands never separate
    swap = [fake(0.0, s, [0, 0, 0, 0], [3.5, 0.5, 5.0, 6.0]) for s in range(3)]  # below at step 2, above from 3
    assert separated_from(swap, low, "objective/kl") == 3
    late = [fake(0.0, s, [0, 0, 0, 0], [5.0, 5.0, 5.0, 2.0]) for s in range(3)]  # overlaps at the last step
    assert separated_from(late, low, "objective/kl") is None


def test_regularised_table_scores_runs_against_j_star():
    runs = [fake(0.1, s, [0.5] * 4, [2.0] * 4) for s in (0, 1)]
    rows = regularised_table({"b": (0.1, runs)}, {0.1: {"J_star": 0.6}})
    assert [r["seed"] for r in rows] == [0, 1]
    assert rows[0]["J"] == pytest.approx(0.5 - 0.1 * 2.0) and rows[0]["J/J*"] == pytest.approx(0.3 / 0.6)
    with pytest.raises(KeyError):
        regularised_table({"b": (0.2, runs)}, {0.1: {"J_star": 0.6}})  # no optimum estimated at that beta


@pytest.mark.slow
def test_run_sweep_runs_every_beta_and_seed_and_keeps_states():
    sweep = run_sweep(betas=(0.0, 0.3), seeds=(1, 2), batch_size=4, steps=2, max_new_tokens=6, keep_state=True)
    assert list(sweep) == [0.0, 0.3]
    assert [[(r.kl_coef, r.seed, r.steps) for r in runs] for runs in sweep.values()] == \
        [[(0.0, 1, 2), (0.0, 2, 2)], [(0.3, 1, 2), (0.3, 2, 2)]]
    assert all(h["objective/kl_coef"] == 0.3 for r in sweep[0.3] for h in r.history)
    assert sweep[0.0][0].state.step == 2 and sweep[0.0][0].state.cfg.learning_rate == LESSON_RUN["learning_rate"]
    probe = value_probe(sweep[0.3][0].state, n=32)
    assert set(probe) == {"value head", "best linear head"} and all(v == v for v in probe.values())


@pytest.mark.slow
def test_value_probe_of_a_fresh_head_is_zero():
    from rlhf_nb.config import RunConfig
    from rlhf_nb.train import setup

    s = setup(RunConfig(batch_size=4, max_new_tokens=6, progress=False, device="cpu"))
    assert value_probe(s, n=32)["value head"] == pytest.approx(0.0, abs=1e-6)  # V = 0 explains nothing, exactly


def test_plot_bands_draws_a_mean_and_a_band_per_label():
    import matplotlib

    matplotlib.use("Agg")
    from rlhf_nb.course.plots import plot_bands

    runs = {"a": [fake(0.0, s, [0.1 * s, 0.2], [1, 2]).history for s in range(3)],
            "b": [fake(0.2, s, [0.0, 0.1], [1, 1]).history for s in range(3)]}
    fig = plot_bands(runs, keys=("objective/scores", "objective/kl"), logy=("objective/kl",))
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["a (3 seeds)", "b (3 seeds)"]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.1, 0.2])
    assert len(ax.collections) == 2 and fig.axes[1].get_yscale() == "symlog"


def test_plot_frontier_marks_betas_and_labels_each_run_once():
    import matplotlib

    matplotlib.use("Agg")
    from rlhf_nb.course.plots import plot_frontier

    front = {0.0: {"kl": 4.0, "score": 0.8}, 0.1: {"kl": 2.0, "score": 0.6}, 1.0: {"kl": 0.1, "score": 0.1}}
    pts = [{"kl": 3.0, "score": 0.3, "label": "x"}, {"kl": 3.5, "score": 0.2, "label": "x"},
           {"kl": 1.0, "score": 0.1, "label": "y"}]
    fig = plot_frontier(front, pts, marked=(0.1,))
    ax = fig.axes[0]
    assert list(ax.lines[0].get_xdata()) == [4.0, 2.0, 0.1]  # sorted by beta
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["optimum π* (β from right to left)", "x", "y"]
    assert [t.get_text() for t in ax.texts] == ["β=0.1"]
