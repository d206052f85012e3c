"""update_probe: one real ppo_step recorded through ppo_update's on_minibatch hook, unchanged by the recording, and the
lesson-05 tables read from it agree with what the step logged."""
from __future__ import annotations

import math

import pytest
import torch

from rlhf_nb import train
from rlhf_nb.config import RunConfig
from rlhf_nb.course import update_probe as probe
from rlhf_nb.ppo import ppo_update
from rlhf_nb.train import ppo_step, setup

CFG = dict(seed=0, device="cpu", batch_size=4, max_new_tokens=6, ppo_epochs=2, num_minibatches=2, learning_rate=3e-4,
           lr_decay="constant", progress=False, log_samples=4)

pytestmark = pytest.mark.slow  # loads the tiny model (about a second)


@pytest.fixture(scope="module")
def rec():
    state = setup(RunConfig(**CFG))
    record = probe.record_update(state, params=True)
    assert state.ppo_update is ppo_update  # the state's own update is put back
    return record


def test_recording_changes_nothing_and_puts_ppo_update_back(rec):
    plain, samples = ppo_step(setup(RunConfig(**CFG)))
    assert {k: v for k, v in rec.metrics.items() if not k.startswith("time/")} == \
        {k: v for k, v in plain.items() if not k.startswith("time/")}
    assert rec.samples == samples
    assert train.ppo_update is ppo_update  # nothing of the package is patched


def test_ppo_update_is_put_back_when_the_step_raises():
    state = setup(RunConfig(**CFG))

    def broken(*a, **k):
        raise RuntimeError("sampler broke")

    state.sampler = broken
    with pytest.raises(RuntimeError, match="sampler broke"):
        probe.record_update(state)
    assert state.ppo_update is ppo_update and train.ppo_update is ppo_update  # the state's own update is back


def test_one_record_per_optimizer_step_and_each_epoch_covers_every_row(rec):
    assert [(s.epoch, s.minibatch) for s in rec.steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [s.adam_step for s in rec.steps] == [1, 2, 3, 4]
    for row in probe.minibatch_plan(rec):
        rows = sorted(int(r) for key in ("minibatch 1", "minibatch 2") for r in row[key].split())
        assert rows == [0, 1, 2, 3]
    for key in ("policy/clipfrac", "policy/approx_kl", "loss/value", "loss/policy"):  # the step logs their means
        assert rec.metrics[key] == pytest.approx(sum(s.stats[key] for s in rec.steps) / len(rec.steps), abs=1e-9)


def test_the_first_optimizer_step_sees_ratio_one_exactly_and_the_batch_moves_after_it(rec):
    table = probe.ratio_table(rec)
    assert table[0]["ρ before: min"] == table[0]["ρ before: max"] == 1.0
    assert table[0]["policy/approx_kl"] == 0.0
    assert 0.0 < table[0]["batch k3 after"] == probe.batch_k3_after(rec, 0)
    second = probe.step_tensors(rec, 1)  # its "before" is the policy after the first step, on its own rows
    after_first = rec.steps[0].batch_logp_after[torch.tensor(rec.steps[1].rows)]
    assert torch.allclose(second["logp"] * second["mask"], after_first, atol=1e-5)
    assert not torch.equal(second["logp_old"], after_first)  # the first step moved rows it did not train on


def test_clip_table_matches_the_logged_clipfrac_and_the_gradient_is_zero_exactly_where_clipped(rec):
    for i in range(len(rec.steps)):
        out = probe.clip_table(rec, i, k=100)
        assert out["clipfrac"] == pytest.approx(out["logged"], abs=1e-7)
        assert sum(c["tokens"] for c in out["counts"]) == int(probe.step_tensors(rec, i)["mask"].sum())
        t = probe.step_tensors(rec, i)
        for tok in out["tokens"]:
            r = rec.steps[i].rows.index(tok["row"])
            assert tok["ρ after the step"] == pytest.approx(float(t["ratio_after"][r, tok["t"]]))
            if tok["clipped"]:
                assert tok["∂L/∂log π"] == 0.0
            else:
                assert tok["∂L/∂log π"] == pytest.approx(tok["A"] * tok["ρ"], rel=1e-4, abs=1e-6)


def test_value_table_at_the_runs_clip_is_the_logged_value_loss(rec):
    rows = probe.value_table(rec, clip_ranges=(rec.clip_range_value, 1e-4))
    for row, s in zip(rows, rec.steps):
        assert row[f"loss, ε_v = {rec.clip_range_value:g}"] == pytest.approx(s.stats["loss/value"], rel=1e-6)
        assert row[f"value/clipfrac, ε_v = {rec.clip_range_value:g}"] == s.stats["value/clipfrac"]
        assert row[f"loss, ε_v = {1e-4:g}"] >= row["½ mean (V − R)², no clip"] - 1e-9  # the max never lowers it
    assert rows[0]["max |V − V_old|"] == 0.0  # the first step's values are the rollout's


def test_epoch_table_is_the_mean_of_its_optimizer_steps(rec):
    rows = probe.epoch_table(rec)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["policy/clipfrac"] == pytest.approx((rec.steps[0].stats["policy/clipfrac"]
                                                        + rec.steps[1].stats["policy/clipfrac"]) / 2)
    assert rows[-1]["batch k3 at its end"] == probe.batch_k3_after(rec, -1)


def test_adams_first_step_moves_each_weight_by_lr_g_over_g_plus_eps(rec):
    first = probe.adam_moves(rec, 0)
    assert first and all(r["weights"] >= 10 for r in first)
    for r in first:  # the median of a bin sits on the curve at the bin's centre (bins are half a decade wide)
        assert r["|Δw|/lr: median"] == pytest.approx(r["first update |g|/(|g|+ε)"], abs=0.12)
    big = [r for r in first if r["|g|"] > 1e-3]
    assert big and all(r["p10"] > 0.95 for r in big)  # |g| ≫ ε: the full learning rate, whatever |g|
    s = probe.move_summary(rec, 0)
    assert s["Adam step"] == 1 and s["lr"] == pytest.approx(3e-4)
    assert 0.0 < s["share |Δw| ≥ 0.9·lr"] <= s["share |g| > ε"]  # |Δw| ≥ 0.9·lr needs |g| ≥ 9ε at Adam's step 1


def test_token_moves_ranks_the_batch_tokens_by_k3(rec):
    out = probe.token_moves(rec, 0, k=3)
    rows = out["rows"]
    assert len(rows) == 3 and [r["k3"] for r in rows] == sorted((r["k3"] for r in rows), reverse=True)
    for r in rows:  # k3 = (ρ − 1) − log ρ with ρ = π_after / π_old
        log_rho = r["logp after"] - r["logp before"]
        assert r["k3"] == pytest.approx(math.expm1(log_rho) - log_rho, rel=1e-3, abs=1e-7)
        assert r["in its minibatch"] == (r["row"] in rec.steps[0].rows)
    assert out["approx_kl_after"] == pytest.approx(probe.batch_k3_after(rec, 0), rel=1e-6)
    assert sum(r["k3"] for r in rows) <= out["approx_kl_after"] * out["tokens"] + 1e-6


def test_params_false_keeps_no_weights_and_says_so():
    rec = probe.record_update(setup(RunConfig(**{**CFG, "ppo_epochs": 1})))
    assert all(s.grad_abs is None and s.move_abs is None for s in rec.steps)
    with pytest.raises(ValueError, match="params=True"):
        probe.adam_moves(rec, 0)


def test_run_recorded_and_first_update_rows():
    cfg = RunConfig(**{**CFG, "ppo_epochs": 1})
    steps = probe.run_recorded(cfg, steps=2, params_steps=2)
    assert [s["step"] for s in steps] == [1, 2] and all(len(s["k3 curve"]) == 2 for s in steps)
    assert steps[0]["first move"]["Adam step"] == 1 and steps[1]["first move"]["Adam step"] == 3
    (row,) = probe.first_update_rows({("case", 0): steps})
    assert row["k3 after opt. step 1: RLHF step 1"] == steps[0]["k3 curve"][0]
    assert row["later steps: median"] == row["later steps: max"] == steps[1]["k3 curve"][0]
    assert row["approx_kl: RLHF step 1"] == steps[0]["policy/approx_kl"]
