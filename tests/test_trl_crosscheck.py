"""rlhf_nb's group advantages, clipped loss and k3 against TRL's own code, on identical tensors (tolerance 1e-5).

How TRL is exercised: its advantages and losses live inside trainer methods, not in importable functions, so
each test builds a small real trainer through the bridge and calls the method itself:
  - advantages: GRPOTrainer/RLOOTrainer._generate_and_score_completions, with a reward function that returns
    scores we chose (the sampled text is ignored), so TRL's own lines turn our scores into its advantages;
  - losses: GRPOTrainer/RLOOTrainer._compute_loss on crafted inputs, with the model's forward replaced by one that
    returns crafted log-probs (requires_grad), so TRL's own ratio/clip/KL/aggregation code runs on our tensors.
Where TRL's definition differs on purpose (KL placement and estimator, loss aggregation, RLOO's sequence-level
ratio), the test says so and checks each side against its documented definition.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")

from rlhf_nb.advantages import group_advantages  # noqa: E402
from rlhf_nb.bridges.trl import make_trl_trainer  # noqa: E402
from rlhf_nb.config import RunConfig  # noqa: E402
from rlhf_nb.kl import kl_k1, kl_k3  # noqa: E402
from rlhf_nb.masking import masked_mean  # noqa: E402
from rlhf_nb.ppo import policy_loss  # noqa: E402

ATOL = 1e-5
G = 4  # completions per prompt
N_PROMPTS = 3
B = G * N_PROMPTS


class FixedScores:
    """A TRL reward function that returns chosen scores, whatever was sampled."""

    __name__ = "fixed_scores"

    def __init__(self, scores: torch.Tensor):
        self.scores = scores

    def __call__(self, prompts, completions, **kwargs):
        assert len(completions) == len(self.scores)
        return self.scores.tolist()


def _trainer(model_dir, tmp_path, algo, scores=None, **cfg_kw):
    cfg = RunConfig(model=model_dir, advantage=algo, batch_size=N_PROMPTS, num_generations=G, max_new_tokens=4,
                    num_minibatches=1, ppo_epochs=1, progress=False, **cfg_kw)
    reward = FixedScores(scores) if scores is not None else None
    tr = make_trl_trainer(cfg, algo=algo, output_dir=str(tmp_path), reward=(lambda p, c: torch.zeros(len(c))))
    if reward is not None:
        tr.reward_funcs = [reward]  # a raw list-returning TRL reward: no rlhf_nb tensor in between
    tr.model.train()
    tr.current_gradient_accumulation_steps = 1  # set by Trainer's loop; the loss divides by it
    return tr


def _scores(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, generator=g)
    s[G:2 * G] = 0.7  # one group with zero spread: exercises the +1e-4 in the denominator
    return s


def _inputs(prompt: str = "The plot was"):
    return [{"prompt": prompt} for _ in range(B)]  # TRL's sampler repeats each prompt G times, contiguously


# ---------------------------------------------------------------- advantages


@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_advantages_match_trl(model_dir, tmp_path, seed):
    """TRL GRPO (scale_rewards='group'): (r − mean_g)/(std_g + 1e-4), unbiased std = rlhf_nb grpo, scale=True."""
    s = _scores(seed)
    tr = _trainer(model_dir, tmp_path, "grpo", scores=s, kl_coef=0.0)
    out = tr._generate_and_score_completions(_inputs())
    ours = group_advantages(s, G, "grpo", scale=True)
    torch.testing.assert_close(out["advantages"].float(), ours, atol=ATOL, rtol=0)
    assert out["advantages"][G:2 * G].abs().max() < ATOL  # a flat group gets no signal in both


def test_grpo_unscaled_advantages_match_trl(model_dir, tmp_path):
    """TRL scale_rewards='none' (Dr. GRPO) = rlhf_nb grpo with scale=False."""
    s = _scores(2)
    tr = _trainer(model_dir, tmp_path, "grpo", scores=s, kl_coef=0.0)
    tr.scale_rewards = "none"
    out = tr._generate_and_score_completions(_inputs())
    torch.testing.assert_close(out["advantages"].float(), group_advantages(s, G, "grpo", scale=False), atol=ATOL, rtol=0)


@pytest.mark.parametrize("normalize", [True, False])
def test_rloo_advantages_match_trl(model_dir, tmp_path, normalize):
    """TRL RLOO: r − mean of the other k−1, then (optionally) batch whitening with std + 1e-4 = rlhf_nb rloo."""
    s = _scores(3)
    tr = _trainer(model_dir, tmp_path, "rloo", scores=s, kl_coef=0.0)
    tr.normalize_advantages = normalize
    out = tr._generate_and_score_completions(_inputs())
    torch.testing.assert_close(out["advantages"].float(), group_advantages(s, G, "rloo", scale=normalize),
                               atol=ATOL, rtol=0)


def test_kl_placement_differs_on_purpose():
    """Where β·KL goes. rlhf_nb (grpo and rloo) and TRL's RLOO: into the score, r' = r − β·Σ_t k1_t, before the
    group baseline. TRL's GRPO: not in the advantage at all; β·k3_t is added per token to the loss (see the loss
    test below). Same β, different objective: with KL into the score, a completion that drifted further from the
    reference gets a lower advantage than its siblings; with KL in the loss, every token is pulled back alike."""
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(B, generator=g)
    logp, ref = -torch.rand(B, 5, generator=g) * 3, -torch.rand(B, 5, generator=g) * 3  # (B, T)
    mask = torch.ones(B, 5)
    beta = 0.1
    seq_reward = scores - beta * (kl_k1(logp, ref) * mask).sum(1)  # rlhf_nb train.py step 4-5 and TRL RLOO
    a_ours = group_advantages(seq_reward, G, "grpo")
    a_trl_grpo = group_advantages(scores, G, "grpo")  # TRL GRPO: the score alone
    assert not torch.allclose(a_ours, a_trl_grpo, atol=1e-3)
    # with β = 0 the two placements coincide
    torch.testing.assert_close(group_advantages(scores - 0.0 * kl_k1(logp, ref).sum(1), G, "grpo"), a_trl_grpo)


# ---------------------------------------------------------------- losses


def _loss_tensors(seed: int, T: int = 6):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T)
    lengths = torch.randint(1, T + 1, (B,), generator=g)  # ragged completions: aggregation choices matter
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()  # (B, T) right padding after EOS, as TRL
    logp_old = -torch.rand(B, T, generator=g) * 4
    logp_new = logp_old + 0.4 * torch.randn(B, T, generator=g)  # ratios well outside 1 ± 0.2: some clipping
    ref = logp_old + 0.2 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    return mask, logp_old, logp_new, ref, adv


def _trl_loss(tr, mask, logp_old, logp_new, ref, adv, beta: float):
    """Run TRL's _compute_loss with the model's per-token log-probs replaced by `logp_new`; returns (loss, grad)."""
    lp = logp_new.clone().requires_grad_(True)
    tr._get_per_token_logps_and_entropies = lambda *a, **k: (lp, torch.zeros_like(lp), None)
    tr.beta = beta
    inputs = {
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.zeros(B, mask.size(1), dtype=torch.long), "completion_mask": mask.long(),
        "advantages": adv, "old_per_token_logps": logp_old, "ref_per_token_logps": ref,
        "old_logps": (logp_old * mask).sum(1),  # RLOO keeps sequence log-probs
        "num_items_in_batch": mask.sum(),
    }
    loss = tr._compute_loss(None, inputs)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad


def _our_loss(mask, logp_old, logp_new, adv):
    lp = logp_new.clone().requires_grad_(True)
    loss, stats = policy_loss(lp, logp_old, adv[:, None] * mask, mask, clip_range=0.2)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad, stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grpo_clipped_loss_matches_trl_bnpo(model_dir, tmp_path, seed):
    """β = 0, loss_type='bnpo' (what the bridge sets): token mean over the minibatch = rlhf_nb policy_loss.
    Values, gradients and the clip fraction all agree."""
    mask, logp_old, logp_new, ref, adv = _loss_tensors(seed)
    tr = _trainer(model_dir, tmp_path, "grpo")
    assert tr.loss_type == "bnpo"
    trl_loss, trl_grad = _trl_loss(tr, mask, logp_old, logp_new, ref, adv, beta=0.0)
    ours, our_grad, stats = _our_loss(mask, logp_old, logp_new, adv)
    torch.testing.assert_close(trl_loss, ours, atol=ATOL, rtol=0)
    torch.testing.assert_close(trl_grad, our_grad, atol=ATOL, rtol=0)
    assert 0 < stats["policy/clipfrac"] < 1  # the test really exercises clipping
    assert abs(tr._metrics["train"]["clip_ratio/region_mean"][-1] - stats["policy/clipfrac"]) < ATOL


def test_grpo_dapo_equals_bnpo_for_one_minibatch(model_dir, tmp_path):
    """TRL's default 'dapo' divides by the tokens of the whole generation batch; with one minibatch per
    generation and one process that is the same token mean, so it also equals ours."""
    mask, logp_old, logp_new, ref, adv = _loss_tensors(5)
    tr = _trainer(model_dir, tmp_path, "grpo")
    tr.loss_type = "dapo"
    trl_loss, _ = _trl_loss(tr, mask, logp_old, logp_new, ref, adv, beta=0.0)
    ours, _, _ = _our_loss(mask, logp_old, logp_new, adv)
    torch.testing.assert_close(trl_loss, ours, atol=ATOL, rtol=0)


def test_grpo_loss_aggregation_grpo_differs_on_purpose(model_dir, tmp_path):
    """loss_type='grpo' (the GRPO paper): mean over sequences of each sequence's token mean. rlhf_nb takes one token
    mean over the minibatch ('bnpo'). Same per-token terms; with ragged lengths the weights differ (a short
    completion's tokens count more under 'grpo'). TRL's value equals the per-sequence mean of our per-token terms."""
    mask, logp_old, logp_new, ref, adv = _loss_tensors(6)
    tr = _trainer(model_dir, tmp_path, "grpo")
    tr.loss_type = "grpo"
    trl_loss, _ = _trl_loss(tr, mask, logp_old, logp_new, ref, adv, beta=0.0)
    ratio = torch.exp(logp_new - logp_old)
    a = adv[:, None]
    per_token = torch.max(-a * ratio, -a * ratio.clamp(0.8, 1.2))  # our policy_loss's per-token term
    seq_mean = ((per_token * mask).sum(1) / mask.sum(1)).mean()
    torch.testing.assert_close(trl_loss, seq_mean, atol=ATOL, rtol=0)
    ours, _, _ = _our_loss(mask, logp_old, logp_new, adv)
    assert abs(float(ours - trl_loss)) > 1e-3  # ragged lengths: the two aggregations really differ


@pytest.mark.parametrize("bias_correction", [True, False])
def test_grpo_kl_term_is_beta_k3_in_the_loss(model_dir, tmp_path, bias_correction):
    """TRL GRPO with β > 0 adds β·k3(π_θ, ρ) per token to the loss, k3 = exp(log ρ − log π) − (log ρ − log π) − 1,
    times the ratio π_θ/π_old when use_bias_correction_kl=True (TRL 1.16's default, DeepSeek-V3.2; the value is
    unchanged on-policy, where the ratio is 1, but the gradient is not). So loss(β) − loss(0) = β · token-mean of
    [ratio ·] rlhf_nb kl_k3 (bnpo aggregation). rlhf_nb instead puts β·Σk1 into the score
    (see test_kl_placement_differs_on_purpose); its k3 estimator agrees with TRL's formula."""
    mask, logp_old, logp_new, ref, adv = _loss_tensors(7)
    tr = _trainer(model_dir, tmp_path, "grpo")
    tr.args.use_bias_correction_kl = bias_correction
    beta = 0.3
    l0, _ = _trl_loss(tr, mask, logp_old, logp_new, ref, adv, beta=0.0)
    lb, _ = _trl_loss(tr, mask, logp_old, logp_new, ref, adv, beta=beta)
    k3 = kl_k3(logp_new, ref)  # (B, T)
    if bias_correction:
        k3 = k3 * torch.exp(logp_new - logp_old)
    torch.testing.assert_close(lb - l0, beta * masked_mean(k3, mask), atol=ATOL, rtol=0)
    assert abs(tr._metrics["train"]["kl"][-1] - float(masked_mean(k3, mask))) < ATOL  # TRL logs the same term


def test_rloo_loss_is_sequence_level(model_dir, tmp_path):
    """TRL RLOO clips one ratio per sequence, exp(Σ_t log π − Σ_t log π_old), and averages over sequences.
    rlhf_nb clips per token. Our policy_loss fed sequence log-probs as (B, 1) 'tokens' reproduces TRL exactly;
    fed per-token log-probs it is the per-token objective rlhf_nb trains with, which differs."""
    mask, logp_old, logp_new, ref, adv = _loss_tensors(8)
    logp_new = logp_old + 0.1 * (logp_new - logp_old)  # sequence ratios of a few tokens stay near the clip range
    tr = _trainer(model_dir, tmp_path, "rloo")
    trl_loss, trl_grad = _trl_loss(tr, mask, logp_old, logp_new, ref, adv, beta=0.0)
    lp = logp_new.clone().requires_grad_(True)
    seq_new, seq_old = (lp * mask).sum(1, keepdim=True), (logp_old * mask).sum(1, keepdim=True)  # (B, 1)
    ours_seq, stats = policy_loss(seq_new, seq_old, adv[:, None], torch.ones(B, 1), clip_range=0.2)
    (grad,) = torch.autograd.grad(ours_seq, lp)
    torch.testing.assert_close(trl_loss, ours_seq.detach(), atol=ATOL, rtol=0)
    torch.testing.assert_close(trl_grad, grad, atol=ATOL, rtol=0)
    ours_tok, _, _ = _our_loss(mask, logp_old, logp_new, adv)
    assert abs(float(ours_tok - trl_loss)) > 1e-4


def test_kl_in_loss_matches_trl_grpo_loss_with_beta(model_dir, tmp_path):
    """With --kl_in_loss, rlhf_nb's GRPO loss is TRL's, KL term included: policy_loss + β·kl_penalty_loss equals
    TRL's _compute_loss at β > 0 (bnpo, bias-corrected k3), value and gradient."""
    from rlhf_nb.ppo import kl_penalty_loss

    mask, logp_old, logp_new, ref, adv = _loss_tensors(8)
    tr = _trainer(model_dir, tmp_path, "grpo")
    assert tr.args.use_bias_correction_kl
    beta = 0.3
    trl_loss, trl_grad = _trl_loss(tr, mask, logp_old, logp_new, ref, adv, beta=beta)
    lp = logp_new.clone().requires_grad_(True)
    pg, _ = policy_loss(lp, logp_old, adv[:, None] * mask, mask, clip_range=0.2)
    ours = pg + beta * kl_penalty_loss(lp, logp_old, ref, mask)
    (our_grad,) = torch.autograd.grad(ours, lp)
    torch.testing.assert_close(trl_loss, ours.detach(), atol=ATOL, rtol=0)
    torch.testing.assert_close(trl_grad, our_grad, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- the GRPO family (lesson 11): every loss_type and
# scale_rewards TRL 1.16 offers that rlhf_nb implements, set through the bridge from the RunConfig flag itself.
# Left out, each for one reason: cispo, sapo, vespo, luspo (other objectives, not aggregations of the clipped PPO
# term); importance_sampling_level="sequence" (GSPO: one ratio per sequence); multi_objective_aggregation (one reward
# here); delta (a second, one-sided clip on the ratio).


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_scale_rewards_match_trl(model_dir, tmp_path, scale):
    s = _scores(4)
    tr = _trainer(model_dir, tmp_path, "grpo", scores=s, kl_coef=0.0, scale_rewards=scale)
    assert tr.scale_rewards == scale  # carried over by the bridge
    out = tr._generate_and_score_completions(_inputs())
    torch.testing.assert_close(out["advantages"].float(), group_advantages(s, G, "grpo", scale), atol=ATOL, rtol=0)


def _our_family_loss(cfg, mask, logp_old, logp_new, ref, adv, beta: float, n_minibatches: int = 1):
    """rlhf_nb's GRPO loss as ppo_update assembles it: policy_loss + β·kl_penalty_loss, both with cfg's aggregation."""
    import functools

    from rlhf_nb.ppo import aggregate_loss, kl_penalty_loss

    lp = logp_new.clone().requires_grad_(True)
    norm = mask.sum() / n_minibatches
    loss, _ = policy_loss(lp, logp_old, adv[:, None] * mask, mask, cfg.clip_range, cfg.clip_range_high, cfg.loss_type,
                          cfg.max_new_tokens, norm)
    if beta:
        agg = functools.partial(aggregate_loss, loss_type=cfg.loss_type, max_len=cfg.max_new_tokens, norm_tokens=norm)
        loss = loss + beta * kl_penalty_loss(lp, logp_old, ref, mask, cfg.kl_loss_ratio, agg)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad


@pytest.mark.parametrize("loss_type", ["bnpo", "dapo", "grpo", "dr_grpo"])
@pytest.mark.parametrize("beta, kl_ratio, high", [(0.0, True, None), (0.3, True, 0.28), (0.3, False, None)])
def test_every_loss_type_matches_trl_value_and_gradient(model_dir, tmp_path, loss_type, beta, kl_ratio, high):
    """TRL adds β·[ρ·]k3 to each token's clipped loss, then aggregates by loss_type; so does rlhf_nb.
    max_new_tokens 6 is dr_grpo's constant divisor on both sides (TRL's max_completion_length)."""
    mask, logp_old, logp_new, ref, adv = _loss_tensors(11)
    tr = _trainer(model_dir, tmp_path, "grpo", loss_type=loss_type, kl_loss_ratio=kl_ratio, clip_range_high=high)
    cfg = RunConfig(advantage="grpo", num_generations=G, batch_size=N_PROMPTS, max_new_tokens=mask.size(1),
                    loss_type=loss_type, kl_loss_ratio=kl_ratio, clip_range_high=high)
    tr.max_completion_length = cfg.max_new_tokens
    assert (tr.loss_type, tr.args.use_bias_correction_kl) == (loss_type, kl_ratio)
    assert tr.epsilon_high == (high if high is not None else cfg.clip_range)
    trl_loss, trl_grad = _trl_loss(tr, mask, logp_old, logp_new, ref, adv, beta=beta)
    ours, our_grad = _our_family_loss(cfg, mask, logp_old, logp_new, ref, adv, beta)
    torch.testing.assert_close(trl_loss, ours, atol=ATOL, rtol=0)
    torch.testing.assert_close(trl_grad, our_grad, atol=ATOL, rtol=0)


def test_dapo_with_two_minibatches_divides_by_the_batch_s_tokens_per_minibatch(model_dir, tmp_path):
    """TRL's dapo normalises a minibatch by num_items_in_batch (the generation batch's tokens) over
    steps_per_generation: the mean tokens per minibatch, not this minibatch's own count (bnpo)."""
    mask, logp_old, logp_new, ref, adv = _loss_tensors(12)
    tr = _trainer(model_dir, tmp_path, "grpo", loss_type="dapo")
    half = slice(0, B // 2)
    lp = logp_new.clone().requires_grad_(True)
    tr._get_per_token_logps_and_entropies = lambda *a, **k: (lp[half], torch.zeros_like(lp[half]), None)
    tr.beta, tr.args.steps_per_generation = 0.0, 2
    inputs = {"prompt_ids": torch.zeros(B // 2, 2, dtype=torch.long),
              "prompt_mask": torch.ones(B // 2, 2, dtype=torch.long),
              "completion_ids": torch.zeros(B // 2, mask.size(1), dtype=torch.long),
              "completion_mask": mask[half].long(), "advantages": adv[half], "old_per_token_logps": logp_old[half],
              "ref_per_token_logps": ref[half], "num_items_in_batch": mask.sum()}
    trl_loss = tr._compute_loss(None, inputs).detach()
    ours, _ = policy_loss(logp_new[half], logp_old[half], adv[half, None] * mask[half], mask[half], 0.2, None, "dapo",
                          None, mask.sum() / 2)
    torch.testing.assert_close(trl_loss, ours, atol=ATOL, rtol=0)
