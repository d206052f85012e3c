"""token_moves: the first step's batch recovered exactly, and the tokens ranked by how far the update moved them."""
from __future__ import annotations

import math

import pytest

from rlhf_nb.config import RunConfig
from rlhf_nb.course.update_probe import token_moves
from rlhf_nb.train import ppo_step, setup

CFG = dict(seed=0, device="cpu", batch_size=4, max_new_tokens=6, progress=False, log_samples=4)


@pytest.mark.slow
def test_token_moves_ranks_the_tokens_of_the_batch_the_step_trained_on():
    cfg = RunConfig(**CFG)
    out = token_moves(cfg, k=3)
    _, samples = ppo_step(setup(cfg))  # the same first step: its batch's completions
    rows = out["rows"]
    assert len(rows) == 3 and all(r["completion"] in samples["completions"] for r in rows)
    assert [r["k3"] for r in rows] == sorted((r["k3"] for r in rows), reverse=True)
    for r in rows:  # k3 = (ρ − 1) − log ρ with ρ = π_after / π_before
        log_rho = r["logp after"] - r["logp before"]
        assert r["k3"] == pytest.approx(math.expm1(log_rho) - log_rho, rel=1e-4, abs=1e-7)
    assert 0.0 <= out["approx_kl_after"] <= rows[0]["k3"]  # a mean over tokens is at most its largest term
    assert sum(r["k3"] for r in rows) <= out["approx_kl_after"] * out["tokens"] + 1e-6  # the top k are part of the sum


@pytest.mark.slow
def test_no_update_moves_nothing():
    out = token_moves(RunConfig(**{**CFG, "learning_rate": 1e-8}), k=2)
    assert out["approx_kl_after"] < 1e-6 and all(r["k3"] < 1e-6 for r in out["rows"])
