"""Lesson 06's refreshed reference: the callback copies the policy into the reference exactly at its steps, a
refreshed run is its fixed twin up to the first refresh and logs KL 0 right after each refresh, KL(π‖π_0) is
measured on its own generator, and the table and the plot read the results."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rlhf_nb.course.experiments import RefreshResult, kl_to, refresh_reference, refresh_table, run_refresh

TINY = dict(batch_size=4, steps=4, max_new_tokens=6)


def _fake_state():
    torch.manual_seed(0)
    lm, ref = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    return SimpleNamespace(policy=SimpleNamespace(lm=lm), ref=ref)


def test_refresh_copies_the_policy_into_the_reference_every_n_steps_only():
    s = _fake_state()
    cb = refresh_reference(s, every=3)
    for step in (1, 2):
        cb(step, {}, {})
        assert not torch.equal(s.ref.weight, s.policy.lm.weight)  # not yet
    cb(3, {}, {})
    assert torch.equal(s.ref.weight, s.policy.lm.weight) and torch.equal(s.ref.bias, s.policy.lm.bias)
    assert s.ref.weight.data_ptr() != s.policy.lm.weight.data_ptr()  # a copy: training the policy leaves ρ alone
    with torch.no_grad():
        s.policy.lm.weight.add_(1.0)
    cb(4, {}, {})
    assert not torch.equal(s.ref.weight, s.policy.lm.weight)
    cb(6, {}, {})
    assert torch.equal(s.ref.weight, s.policy.lm.weight)


@pytest.mark.parametrize("every", [0, -1, 2.5, True, None])
def test_refresh_refuses_a_bad_interval(every):
    with pytest.raises(ValueError, match="every"):
        refresh_reference(_fake_state(), every)


def test_kl_to_itself_is_zero():
    from rlhf_nb.config import RunConfig
    from rlhf_nb.train import setup

    s = setup(RunConfig(batch_size=4, max_new_tokens=6, progress=False, device="cpu"))
    assert kl_to(s, s.ref, n=8) == 0.0  # π = ρ at step 0: every log-ratio is exactly 0


@pytest.mark.slow
def test_refreshed_run_is_its_fixed_twin_until_the_first_refresh():
    fixed = run_refresh(None, seed=3, measure_at=(2, 4), **TINY)
    refreshed = run_refresh(2, seed=3, measure_at=(2, 4), **TINY)
    again = run_refresh(2, seed=3, measure_at=(2, 4), **TINY)
    drop = ("time/",)
    strip = lambda h: [{k: v for k, v in r.items() if not k.startswith(drop)} for r in h]  # noqa: E731
    assert strip(fixed.history[:2]) == strip(refreshed.history[:2])  # steps 1-2: the same run
    assert strip(refreshed.history) == strip(again.history) and refreshed.kl_to_original == again.kl_to_original
    assert refreshed.history[2]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # step 3: ρ = π_old, KL 0
    assert fixed.history[2]["objective/kl"] != pytest.approx(0.0, abs=1e-5)
    assert sorted(refreshed.kl_to_original) == [2, 4] == sorted(fixed.kl_to_original)
    assert refreshed.kl_to_original[2] == fixed.kl_to_original[2]  # measured on the same policy, same generator
    default = run_refresh(None, seed=3, **TINY)  # measured every REFRESH_EVERY (10) steps and at the last: step 4
    assert list(default.kl_to_original) == [4] and default.kl_to_original[4] == fixed.kl_to_original[4]


def test_refresh_table_reads_the_last_measurement_and_the_last_quarter():
    hist = [{"step": i, "objective/kl": float(i), "objective/scores": 0.1 * i} for i in range(1, 9)]
    rows = refresh_table([RefreshResult(None, 0, hist, {4: 1.0, 8: 2.0}),
                          RefreshResult(4, 1, hist, {4: 1.5, 8: 5.0}, warnings=["x"])])
    assert [r["reference"] for r in rows] == ["fixed", "refreshed every 4 steps"]
    assert rows[1]["KL to π_0 after step 8"] == 5.0 and rows[1]["warnings"] == 1
    assert rows[0]["logged KL (to the reference in use)"] == pytest.approx(7.5)  # steps 7 and 8
    assert rows[0]["score"] == pytest.approx(0.75)


def test_plot_reference_refresh_draws_both_kinds_and_marks_the_refreshes():
    import matplotlib

    matplotlib.use("Agg")
    from rlhf_nb.course.plots import plot_reference_refresh

    hist = [{"step": i, "objective/kl": 0.1 * i} for i in range(1, 9)]
    fixed = [RefreshResult(None, s, hist, {8: 1.0 + s}) for s in range(2)]
    refreshed = [RefreshResult(4, s, hist, {4: 1.0, 8: 3.0 + s}) for s in range(2)]
    fig = plot_reference_refresh(fixed, refreshed)
    left, right = fig.axes
    labels = [ln.get_label() for ln in left.lines][:2]
    assert labels == ["fixed reference (2 seeds)", "refreshed every 4 steps (2 seeds)"]
    assert sum(ln.get_linestyle() == ":" for ln in left.lines) == 2  # refreshes after steps 4 and 8
    measured = [ln for ln in right.lines if ln.get_marker() == "o"]
    assert [list(ln.get_ydata()) for ln in measured] == [[1.0], [2.0], [1.0, 3.0], [1.0, 4.0]]
