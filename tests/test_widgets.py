"""The panel without a kernel: set sliders, click Run, and check what it recorded and redrew."""
from __future__ import annotations

import pytest

from rlhf_nb.config import ConfigError
from rlhf_nb.course.experiments import ExperimentResult, final_averages
from rlhf_nb.course.experiments import LESSON_RUN
from rlhf_nb.course.widgets import KL_RANGE, TrainingPanel, legend_html, make_panel, render_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(kl_coef, batch_size, steps=10, seed=0, **overrides):
    """Stands in for run_experiment: validates like it (through RunConfig) and returns a curve that depends on beta."""
    from rlhf_nb.config import RunConfig

    RunConfig(kl_coef=kl_coef, batch_size=batch_size, steps_per_epoch=steps, seed=seed, **overrides)
    hist = [{"step": i + 1, "objective/scores": 0.1 * i, "objective/kl": (1 - kl_coef) * i, "policy/entropy": 3.0 - 0.1 * i,
             "objective/rlhf_reward": 0.1 * i - kl_coef * (1 - kl_coef) * i, "objective/kl_coef": kl_coef} for i in range(steps)]
    rows = [{"prompt": "The acting was", "completion": " fine", "score": 0.1}]
    return ExperimentResult(kl_coef, batch_size, steps, seed, hist, rows, rows, final_averages(hist))


def test_defaults_and_ranges():
    p = make_panel()
    # one click runs the lesson's sweep settings: long enough to show an effect (lesson 06 measures it)
    assert (p.kl_slider.value, p.batch_slider.value, p.steps) == (0.05, LESSON_RUN["batch_size"], LESSON_RUN["steps"])
    assert p.overrides == {"learning_rate": LESSON_RUN["learning_rate"]}
    assert (p.kl_slider.min, p.kl_slider.max) == KL_RANGE[:2]
    assert p.batch_slider.value % 4 == 0 and p.results == [] and p.figure.value == b""


def test_click_runs_with_the_slider_values_and_redraws():
    p = TrainingPanel(steps=6, run_fn=fake_run)
    p.button.click()
    first_png, first_text = bytes(p.figure.value), p.readout.value
    assert first_png.startswith(PNG_MAGIC) and "0.05" in first_text

    p.kl_slider.value, p.batch_slider.value = 0.3, 48
    p.button.click()
    assert [(r.kl_coef, r.batch_size) for r in p.results] == [(0.05, LESSON_RUN["batch_size"]), (0.3, 48)]
    assert p.results[-1].history[-1]["objective/kl_coef"] == p.kl_slider.value  # the coefficient used is the slider's
    assert bytes(p.figure.value) != first_png and bytes(p.figure.value).startswith(PNG_MAGIC)  # figure redrawn
    assert p.readout.value != first_text and "<b class='rlhf-kl'>0.30</b>" in p.readout.value
    assert "The acting was" in p.samples.value and not p.button.disabled
    # both runs stay on the figure, each named by beta and batch size, oldest first
    assert p.legend.value.count("class='rlhf-curve'") == 2
    assert p.legend.value.index(f"β=0.05 B={LESSON_RUN['batch_size']}") < p.legend.value.index("β=0.30 B=48")


def test_legend_lists_only_the_curves_drawn():
    rs = [fake_run(k, 8, steps=3) for k in (0.0, 0.1, 0.2, 0.3, 0.4)]
    text = legend_html(rs)
    assert text.count("rlhf-curve") == 4 and "β=0.00" not in text and "β=0.40 B=8" in text
    assert legend_html([]) == "<ol class='rlhf-legend'></ol>"


def test_run_on_change_observes_the_sliders():
    p = TrainingPanel(steps=4, run_fn=fake_run, run_on_change=True)
    p.kl_slider.value = 0.2
    p.batch_slider.value = 8
    assert [(r.kl_coef, r.batch_size) for r in p.results] == [(0.2, LESSON_RUN["batch_size"]), (0.2, 8)]


def test_slider_cannot_leave_its_range():
    p = make_panel()
    p.kl_slider.value = 5.0  # ipywidgets clamps to max: bad slider values never reach the run
    p.batch_slider.value = 1000
    assert (p.kl_slider.value, p.batch_slider.value) == (KL_RANGE[1], 64)


def test_bad_override_shows_in_readout_not_raised():
    p = TrainingPanel(steps=4, run_fn=fake_run, max_new_tokens=0)
    assert p.run() is None
    assert "--max_new_tokens" in p.readout.value and "rlhf-error" in p.readout.value
    assert p.results == [] and not p.button.disabled
    with pytest.raises(ConfigError):
        fake_run(0.1, 8, max_new_tokens=0)


def test_render_png_keeps_the_last_few_runs():
    rs = [fake_run(k, 8, steps=3) for k in (0.0, 0.1, 0.2, 0.3, 0.4)]
    assert render_png(rs).startswith(PNG_MAGIC)
    assert render_png(rs) == render_png(rs[1:])  # only the last MAX_CURVES = 4 runs are drawn


@pytest.mark.slow
def test_real_run_through_the_panel():
    p = make_panel(kl_coef=0.1, batch_size=8, steps=2, max_new_tokens=6)
    assert p.overrides["learning_rate"] == LESSON_RUN["learning_rate"]
    p.kl_slider.value = 0.2
    r = p.run()
    assert r is p.results[-1] and r.kl_coef == 0.2
    assert all(h["objective/kl_coef"] == 0.2 for h in r.history)
    assert bytes(p.figure.value).startswith(PNG_MAGIC) and "0.20" in p.readout.value


@pytest.mark.parametrize("kwargs, named", [(dict(kl_coef=-1), "kl_coef"), (dict(kl_coef=float("nan")), "kl_coef"),
                                           (dict(kl_coef=0.9), "kl_coef"), (dict(batch_size=1000), "batch_size"),
                                           (dict(batch_size=8.5), "batch_size"), (dict(steps=0), "steps")])
def test_a_bad_start_value_is_refused_not_clamped(kwargs, named):
    """make_panel(kl_coef=-1) used to clamp to 0 without a word; nan or steps=0 gave a run() that returned None."""
    with pytest.raises(ConfigError, match=named):
        make_panel(**kwargs)
