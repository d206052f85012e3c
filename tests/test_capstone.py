"""Lesson 06's checkers: check_ppo_step passes the package's step and a faithful rewrite, and names the first stage a
broken rewrite gets wrong; the optimum and the two reasoning exercises pass right answers and fail wrong ones."""
from __future__ import annotations

import math

import pytest
import torch

from rlhf_nb.advantages import compute_gae, per_token_rewards, whiten_advantages
from rlhf_nb.course.checks import (BAD, OK, TODO, check_clipfrac_remedy, check_j_star, check_ppo_step,
                                   check_reference_refresh)
from rlhf_nb.kl import kl_estimate, kl_k1
from rlhf_nb.policy import forward_tokens, sample
from rlhf_nb.ppo import PPOBatch, ppo_update
from rlhf_nb.runlog import StageTimer
from rlhf_nb.train import StepStats, next_prompts, ppo_step, step_metrics


def my_step(s, *, sample_stream="sample", whiten=True, temperature=None, count_step=True, kl_fn=kl_estimate,
            drop=None):
    """The lesson's solution, with switches that each break one stage the way a learner might."""
    cfg, timer = s.cfg, StageTimer()
    ro = sample(s.policy, s.tokenizer, next_prompts(s), cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p,
                generator=s.generators[sample_stream])
    ids, attn, P, mask = ro.query_responses, ro.attention_mask, ro.context_length, ro.completion_mask.float()
    timer.lap("rollout")
    scores = s.reward_fn(ro.prompts, ro.completions).float()
    timer.lap("score")
    with torch.no_grad():
        logp_old, entropy, values = forward_tokens(s.policy, ids, attn, P, temperature or cfg.temperature)
        ref_logp, _, _ = forward_tokens(s.ref, ids, attn, P, temperature or cfg.temperature)
    logp_old, ref_logp, values = logp_old * mask, ref_logp * mask, values * mask
    beta = s.kl_ctl.value
    kl = (kl_fn(logp_old, ref_logp, cfg.kl_estimator) if kl_fn is kl_estimate else kl_fn(logp_old, ref_logp)) * mask
    rewards, non_score = per_token_rewards(scores, kl, mask, beta)
    adv, returns = compute_gae(rewards, values, mask, cfg.gamma, cfg.lam)
    if whiten:
        adv = whiten_advantages(adv, mask)
    timer.lap("forward")
    batch = PPOBatch(ids, attn, P, mask, logp_old, adv, values_old=values, returns=returns, ref_logp=ref_logp)
    upd = ppo_update(s.policy, s.optimizer, batch, cfg, s.generators["minibatch"])
    timer.lap("update")
    seq_kl = (kl_k1(logp_old, ref_logp) * mask).sum(1)
    s.kl_ctl.update(float(seq_kl.mean()), cfg.batch_size * cfg.num_generations)
    s.step += int(count_step)
    timer.lap("adapt")
    metrics = step_metrics(StepStats(ro, batch, scores, seq_kl, rewards, non_score, entropy, beta, upd, timer))
    if drop:
        metrics.pop(drop)
    return metrics


def _verdict(capsys) -> str:
    return capsys.readouterr().out


@pytest.mark.slow
def test_the_package_step_and_a_faithful_rewrite_pass(capsys):
    assert check_ppo_step(ppo_step) is True
    assert _verdict(capsys).startswith(OK)
    assert check_ppo_step(my_step) is True
    assert _verdict(capsys).startswith(OK)


@pytest.mark.slow
@pytest.mark.parametrize("mutation, stage", [
    (dict(sample_stream="prompts"), "stage 1. rollout"),
    (dict(temperature=0.7), "stage 3. log-probs and values"),
    (dict(kl_fn=lambda lp, ref: 0.5 * (lp - ref) ** 2), "stage 4. KL penalty"),  # k2 where the config asks k1
    (dict(whiten=False), "stage 5. advantages"),
    (dict(count_step=False), "stage 7. adapt β"),
])
def test_a_broken_stage_is_named(mutation, stage, capsys):
    assert check_ppo_step(lambda s: my_step(s, **mutation)) is False
    out = _verdict(capsys)
    assert out.startswith(BAD) and stage in out, out
    assert "The package does:" in out


@pytest.mark.slow
def test_missing_metrics_and_stubs(capsys):
    assert check_ppo_step(lambda s: my_step(s, drop="loss/value")) is False
    assert "lack loss/value" in _verdict(capsys)

    def stub(s):
        raise NotImplementedError

    assert check_ppo_step(stub) is False
    assert _verdict(capsys).startswith(TODO)
    assert check_ppo_step(lambda s: None) is False
    assert _verdict(capsys).startswith(TODO)
    assert check_ppo_step(lambda s: 1 / 0) is False
    assert "ZeroDivisionError" in _verdict(capsys)


def test_j_star_right_and_wrong(capsys):
    assert check_j_star(lambda r, b: b * (float(torch.logsumexp(r / b, 0)) - math.log(len(r)))) is True
    assert _verdict(capsys).startswith(OK)
    assert check_j_star(lambda r, b: b * float(torch.logsumexp(r / b, 0))) is False  # forgot log N
    assert "subtract log N" in _verdict(capsys)
    assert check_j_star(lambda r, b: b * math.log(float(torch.exp(r / b).mean()))) is False  # overflows at β = 0.01
    assert "logsumexp" in _verdict(capsys)
    assert check_j_star(None) is False
    assert _verdict(capsys).startswith(TODO)


@pytest.mark.parametrize("check, right, wrongs", [
    (check_clipfrac_remedy, "b", ["a", "c", "d"]),
    (check_reference_refresh, "b", ["a", "c"]),
])
def test_choice_exercises(check, right, wrongs, capsys):
    assert check(right) is True and check(f" {right.upper()} ") is True
    assert _verdict(capsys).startswith(OK)
    for w in wrongs:
        assert check(w) is False
        assert _verdict(capsys).startswith(BAD)
    assert check(None) is False
    assert _verdict(capsys).startswith(TODO)
    assert check("e") is False and check(2) is False
    assert "answer with one of" in _verdict(capsys)
