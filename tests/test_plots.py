"""Plot helpers return a Figure with the axes a lesson expects."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rlhf_nb.course import plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def titles(fig):
    return [ax.get_title() for ax in fig.axes]


def test_token_distributions():
    fig = plots.plot_token_distributions({"T = 0.5": [0.7, 0.2, 0.1], "T = 2": [0.4, 0.3, 0.3]}, ["a", "b", "c"])
    assert isinstance(fig, Figure) and titles(fig) == ["T = 0.5", "T = 2"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]
    assert len(fig.axes[1].patches) == 3


def test_length_histogram():
    fig = plots.plot_length_histogram([1, 3, 3, 5, 8], max_new_tokens=8)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert fig.axes[0].get_xlabel() == "tokens" and sum(p.get_height() for p in fig.axes[0].patches) == 5


def test_reward_model_training():
    fig = plots.plot_reward_model_training({"loss": [0.7 - 0.01 * i for i in range(30)], "accuracy": [0.5] * 30})
    assert titles(fig) == ["reward model loss", "reward model accuracy"]


def test_score_scatter():
    fig = plots.plot_score_scatter([0.1, -0.5, 0.9], [0.3, -1.0, 2.0])
    assert len(fig.axes) == 1 and fig.axes[0].collections[0].get_offsets().shape == (3, 2)


def test_per_token():
    fig = plots.plot_per_token({"λ = 0": [1, 2, 3], "λ = 1": [3, 2, 1]}, title="GAE")
    assert titles(fig) == ["GAE"] and len(fig.axes[0].get_lines()) == 2


def test_kl_estimators():
    fig = plots.plot_kl_estimators({"k1": [0.1, -0.2, 0.3], "k3": [0.05, 0.02, 0.1]}, exact=0.05)
    assert titles(fig) == ["per-sample estimates", "running mean"]
    assert fig.axes[1].get_xscale() == "log"


def test_kl_controller():
    fig = plots.plot_kl_controller([1, 2, 3], {"fixed": [0.1] * 3, "adaptive": [0.1, 0.11, 0.12]}, target=2.0)
    assert titles(fig) == ["KL to the reference", "β (kl_coef)"] and len(fig.axes[1].get_lines()) == 2
    fig = plots.plot_kl_controller({"fixed": [1, 2], "adaptive": [1, 1.5]}, {"fixed": [0.1] * 2, "adaptive": [0.1] * 2})
    assert len(fig.axes[0].get_lines()) == 2


def test_clipped_objective_is_flat_where_clipped():
    fig = plots.plot_clipped_objective(clip_range=0.2)
    assert titles(fig) == ["A > 0", "A < 0"]
    x, y = fig.axes[0].get_lines()[1].get_data()
    assert abs(y[-1] - 1.2) < 1e-9 and abs(y[x < 0.8][0] - x[0]) < 1e-9  # A > 0: capped at 1 + ε, linear below
    x, y = fig.axes[1].get_lines()[1].get_data()
    assert abs(y[0] + 0.8) < 1e-9 and abs(y[-1] + x[-1]) < 1e-9  # A < 0: floored at −(1 − ε), linear above


def test_ratio_steps_adam_moves_and_update_k3():
    import torch

    spread = [{"before": torch.ones(5), "after": torch.tensor([0.9, 1.0, 1.0, 1.1, 1.3])}] * 3
    fig = plots.plot_ratio_steps(spread, clip_range=0.2)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"] and len(ax.patches) == 6  # 2 boxes a step
    rows = [{"|g|": g, "|Δw|/lr: median": g / (g + 1e-5), "p10": 0.0, "p90": 1.0} for g in (1e-7, 1e-5, 1e-3)]
    fig = plots.plot_adam_moves({"Adam step 1": rows}, eps=1e-5)
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].collections) == 1  # the 10–90 % band
    fig = plots.plot_update_k3({"seed 0": {1: [1e-3, 2e-3], 2: [1e-4, 1e-3]}, "seed 1": {1: [1e-3, 3e-3]}})
    assert titles(fig) == ["seed 0", "seed 1"] and len(fig.axes[0].get_lines()) == 2


def test_plot_history_unchanged():
    fig = plots.plot_history([{"step": 0, "objective/scores": 0.1, "objective/kl": 0.0, "policy/entropy": 3.0},
                              {"step": 1, "objective/scores": 0.2, "objective/kl": 0.1, "policy/entropy": 2.9}])
    assert titles(fig) == ["objective/scores", "objective/kl", "policy/entropy"]
