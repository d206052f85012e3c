"""The GRPO family's knobs, each on a hand-computed case: loss aggregation (bnpo, dapo, grpo, dr_grpo), reward
scaling (group, batch, none), clip-higher, dynamic sampling, and the KL term's placement and ratio factor."""
from __future__ import annotations

import math

import pytest
import torch

from rlhf_nb.advantages import group_advantages, tied_groups
from rlhf_nb.config import ConfigError, RunConfig
from rlhf_nb.ppo import aggregate_loss, kl_penalty_loss, policy_loss

# two completions: lengths 1 and 3 (right padding), per-token losses chosen by hand
LOSS = torch.tensor([[3.0, 9.0, 9.0], [1.0, 2.0, 3.0]])
MASK = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize("loss_type, kw, want", [
    ("bnpo", {}, (3 + 1 + 2 + 3) / 4),  # every token alike: 9 / 4
    ("dapo", {"norm_tokens": 2.0}, 9 / 2),  # divided by the batch's tokens per minibatch (here 2 minibatches of 4)
    ("dapo", {}, 9 / 4),  # one minibatch: = bnpo
    ("grpo", {}, (3 / 1 + 6 / 3) / 2),  # each completion's mean, then their mean: 2.5 (the short one weighs 3x)
    ("dr_grpo", {"max_len": 5}, 9 / (2 * 5)),  # a constant divisor
])
def test_the_four_aggregations_by_hand(loss_type, kw, want):
    assert math.isclose(float(aggregate_loss(LOSS, MASK, loss_type, **kw)), want, rel_tol=1e-6)


def test_aggregation_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="max_len"):
        aggregate_loss(LOSS, MASK, "dr_grpo")
    with pytest.raises(ValueError, match="loss_type must be one of"):
        aggregate_loss(LOSS, MASK, "sum")


def test_grpo_weighs_a_long_completion_s_tokens_less():
    """The length bias: under grpo each of the 3-token completion's tokens counts 1/6, the 1-token one's 1/2."""
    x = torch.zeros(2, 3, requires_grad=True)
    aggregate_loss(x, MASK, "grpo").backward()
    assert torch.allclose(x.grad, torch.tensor([[0.5, 0, 0], [1 / 6, 1 / 6, 1 / 6]]))
    x.grad = None
    aggregate_loss(x, MASK, "bnpo").backward()
    assert torch.allclose(x.grad, torch.tensor([[0.25, 0, 0], [0.25, 0.25, 0.25]]))


def test_scale_rewards_group_batch_none_by_hand():
    r = torch.tensor([1.0, 3.0, 0.0, 0.0])  # two groups of 2: spread (std sqrt 2) and tied
    centred = torch.tensor([-1.0, 1.0, 0.0, 0.0])
    assert torch.allclose(group_advantages(r, 2, "grpo", "none"), centred)
    assert torch.allclose(group_advantages(r, 2, "grpo", False), centred)  # the old spelling
    assert torch.allclose(group_advantages(r, 2, "grpo", "group"), centred / (math.sqrt(2) + 1e-4))
    assert torch.allclose(group_advantages(r, 2, "grpo", True), centred / (math.sqrt(2) + 1e-4))
    batch_std = float(r.std())  # unbiased over all 4: sqrt(2)
    assert torch.allclose(group_advantages(r, 2, "grpo", "batch"), centred / (batch_std + 1e-4))
    with pytest.raises(ValueError, match="scale must be"):
        group_advantages(r, 2, "grpo", "global")


def test_tied_groups_are_found():
    r = torch.tensor([0.5, 0.5, 0.1, 0.9, 0.2, 0.2])
    assert tied_groups(r, 2).tolist() == [True, True, False, False, True, True]


def test_clip_higher_lets_a_positive_advantage_climb_further():
    """ρ = 1.25, A = 1: the symmetric clip (0.2) stops the gradient at 1.2; ε_high 0.28 leaves it live."""
    logp_old = torch.zeros(1, 1)
    for high, grad_live in ((None, False), (0.28, True)):
        lp = torch.full((1, 1), math.log(1.25), requires_grad=True)
        loss, stats = policy_loss(lp, logp_old, torch.ones(1, 1), torch.ones(1, 1), 0.2, high)
        loss.backward()
        assert (float(lp.grad.abs()) > 0) == grad_live
        assert stats["policy/clipfrac_high"] == (0.0 if grad_live else 1.0)
    # A < 0 and ρ = 0.7: the lower clip (1 − 0.2) binds whatever ε_high is
    lp = torch.full((1, 1), math.log(0.7), requires_grad=True)
    loss, stats = policy_loss(lp, logp_old, -torch.ones(1, 1), torch.ones(1, 1), 0.2, 0.28)
    loss.backward()
    assert float(lp.grad.abs()) == 0 and stats["policy/clipfrac_low"] == 1.0


def test_the_kl_term_takes_the_loss_aggregation_and_the_ratio_factor():
    logp_new = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.7, -0.9]])
    logp_old = logp_new - 0.1
    ref = logp_new + 0.3
    k3 = torch.exp(ref - logp_new) - (ref - logp_new) - 1  # per token
    plain = kl_penalty_loss(logp_new, logp_old, ref, MASK, bias_correction=False)
    assert math.isclose(float(plain), float((k3 * MASK).sum() / MASK.sum()), rel_tol=1e-6)
    ratio = kl_penalty_loss(logp_new, logp_old, ref, MASK, bias_correction=True)
    assert math.isclose(float(ratio), float((k3 * math.exp(0.1) * MASK).sum() / MASK.sum()), rel_tol=1e-6)
    seq = kl_penalty_loss(logp_new, logp_old, ref, MASK, False, lambda x, m: aggregate_loss(x, m, "grpo"))
    assert math.isclose(float(seq), float(((k3 * MASK).sum(1) / MASK.sum(1)).mean()), rel_tol=1e-6)


def test_the_config_refuses_knobs_that_do_not_apply():
    with pytest.raises(ConfigError, match="--scale_rewards batch needs --advantage grpo"):
        RunConfig(scale_rewards="batch")
    with pytest.raises(ConfigError, match="--dynamic_sampling needs"):
        RunConfig(dynamic_sampling=True)
    with pytest.raises(ConfigError, match="--loss_type"):
        RunConfig(loss_type="seq")
    RunConfig(advantage="grpo", num_generations=2, scale_rewards="none", loss_type="dr_grpo", clip_range_high=0.28,
              dynamic_sampling=True)


TINY = dict(device="cpu", advantage="grpo", num_generations=4, batch_size=4, max_new_tokens=6, steps_per_epoch=3,
            progress=False, learning_rate=1e-3)


def test_each_variant_trains_and_dynamic_sampling_logs_and_drops_tied_groups():
    from rlhf_nb.train import train

    base = train(RunConfig(**TINY), write_run=False).history
    assert all(0.0 <= r["rollout/zero_std_frac"] <= 1.0 for r in base)
    for kw in ({"loss_type": "grpo"}, {"loss_type": "dr_grpo"}, {"loss_type": "dapo"}, {"scale_rewards": "batch"},
               {"scale_rewards": "none"}, {"clip_range_high": 0.28}, {"dynamic_sampling": True},
               {"kl_in_loss": True, "kl_loss_ratio": False}):
        hist = train(RunConfig(**{**TINY, **kw}), write_run=False).history
        assert len(hist) == 3 and all(math.isfinite(r["loss/total"]) for r in hist), kw
        assert [r["objective/scores"] for r in hist][0] == base[0]["objective/scores"]  # same first rollout


def test_dynamic_sampling_with_every_group_tied_takes_no_step():
    from rlhf_nb.train import setup, train

    cfg = RunConfig(**TINY, dynamic_sampling=True)
    s = setup(cfg)
    s.reward_fn = lambda prompts, completions: torch.zeros(len(completions))  # every group ties
    before = [p.detach().clone() for p in s.policy.parameters()]
    hist = train(cfg, write_run=False, state=s).history
    assert all(r["rollout/zero_std_frac"] == 1.0 and r["policy/grad_norm"] == 0.0 for r in hist)
    assert all(torch.equal(a, b) for a, b in zip(before, s.policy.parameters()))  # no step was taken


def test_the_lengths_by_sign_of_advantage_are_the_rollouts_lengths_split_by_sign():
    from rlhf_nb.train import setup, train

    cfg = RunConfig(**{**TINY, "steps_per_epoch": 1, "kl_coef": 0.0})
    s = setup(cfg)
    seen = {}
    sampler = s.sampler

    def recording(*a, **kw):
        ro = sampler(*a, **kw)
        seen["len"] = ro.completion_mask.float().sum(1)
        return ro

    def reward(prompts, completions):
        seen["scores"] = torch.arange(len(completions), dtype=torch.float32) % 3  # groups of 4 never tie
        return seen["scores"]

    s.sampler, s.reward_fn = recording, reward
    h = train(cfg, write_run=False, state=s).history[0]
    adv = group_advantages(seen["scores"], 4, "grpo", "group")  # β = 0: the advantage is the score's alone
    assert h["rollout/completion_len_pos_adv"] == pytest.approx(float(seen["len"][adv > 0].mean()))
    assert h["rollout/completion_len_neg_adv"] == pytest.approx(float(seen["len"][adv < 0].mean()))
    s2 = setup(cfg)
    s2.reward_fn = lambda prompts, completions: torch.zeros(len(completions))  # every advantage is 0: both sides empty
    h2 = train(cfg, write_run=False, state=s2).history[0]
    assert math.isnan(h2["rollout/completion_len_pos_adv"]) and math.isnan(h2["rollout/completion_len_neg_adv"])
