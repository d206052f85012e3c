"""From scores to advantages: per-token rewards, GAE, whitening, and the group baselines of GRPO / RLOO.

Tensors are (B, T) over completion tokens with a 0/1 `mask` that is one contiguous run of 1s per row
(right padding after EOS in practice; left padding works too).
"""
from __future__ import annotations

import torch

from .masking import masked_whiten

GROUP_EPS = 1e-4  # TRL's epsilon in (r − mean) / (std + eps), GRPO and RLOO alike
GROUP_METHODS = ("grpo", "rloo")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, for any padding; ValueError if a row has no real token."""
    m = mask.bool()  # (B, T)
    if not m.any(dim=1).all():
        empty = (~m.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"mask has rows with no real token (rows {empty}); every completion needs >= 1 token")
    T = m.shape[1]
    return T - 1 - m.flip(1).int().argmax(dim=1)  # (B,) first 1 from the right


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """r_t = −β·kl_t on real tokens, plus the score at the last real token. Returns (rewards, non_score_reward), (B, T) each.

    An all-padding row raises ValueError: it has no token to carry its score.
    """
    if scores.ndim != 1 or kl.shape != mask.shape or scores.shape[0] != kl.shape[0]:
        raise ValueError(f"scores must be (B,) and kl, mask (B, T); got {tuple(scores.shape)}, {tuple(kl.shape)}, {tuple(mask.shape)}")
    m = mask.bool()
    non_score = torch.where(m, -kl_coef * kl, torch.zeros_like(kl))  # (B, T)  −β·kl_t
    last = last_token_index(m)  # (B,)
    rewards = non_score.clone()
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)  # R(x, y) lands on the final token
    return rewards, non_score


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE-λ over real tokens; V beyond the last real token is 0; padding zeroed. Returns (advantages, returns), (B, T)."""
    m = mask.bool()
    zeros = torch.zeros_like(values)
    r = torch.where(m, rewards, zeros)  # (B, T)
    v = torch.where(m, values, zeros)  # (B, T)  V = 0 on padding, so V_{T_last+1} = 0
    B, T = v.shape
    adv = torch.zeros_like(v)
    last_gae = torch.zeros(B, dtype=v.dtype, device=v.device)  # (B,)
    # the next lines implement GAE-λ, backward in time, all rows at once
    for t in reversed(range(T)):
        next_v = v[:, t + 1] if t + 1 < T else torch.zeros_like(last_gae)
        delta = r[:, t] + gamma * next_v - v[:, t]  # δ_t = r_t + γ V_{t+1} − V_t
        last_gae = torch.where(m[:, t], delta + gamma * lam * last_gae, torch.zeros_like(last_gae))  # A_t = δ_t + γλ A_{t+1}
        adv[:, t] = last_gae
    returns = torch.where(m, adv + v, zeros)  # R_t = A_t + V_t, the value target
    return adv, returns


def whiten_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked (A − μ)/σ over the whole batch; padding 0."""
    return masked_whiten(advantages, mask, shift_mean=True)


def whiten_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked r/σ keeping the mean, as TRL's `whiten_rewards=True` (shift_mean=False); padding 0."""
    return masked_whiten(rewards, mask, shift_mean=False)


def group_advantages(
    scores: torch.Tensor, num_generations: int, method: str = "grpo", scale: bool | str = True
) -> torch.Tensor:
    """Critic-free advantages (B,) from scores (B,) in consecutive groups of `num_generations` completions per prompt.

    grpo: A = (r − mean_g) / (std + 1e-4), std unbiased: TRL GRPO's scale_rewards. scale="group" (or True): the
          group's std; "batch": the std of all B scores (the baseline stays the group mean); "none" (or False):
          r − mean_g, no division (Dr. GRPO: dividing by a small group std inflates prompts that are nearly solved
          or nearly hopeless).
    rloo: A = r − mean of the other k−1 in the group = (k·r − Σ_g r)/(k − 1) (TRL RLOO); scale=True then whitens
          over the whole batch, (A − mean)/(std + 1e-4), std unbiased (TRL's normalize_advantages=True;
          TRL's default is False, i.e. scale=False here).
    """
    if method not in GROUP_METHODS:
        raise ValueError(f"method must be one of {GROUP_METHODS}, got {method!r}")
    if not isinstance(num_generations, int) or isinstance(num_generations, bool) or num_generations < 2:
        raise ValueError(f"num_generations must be an int >= 2, got {num_generations!r}")
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D (B,), got shape {tuple(scores.shape)}")
    B, k = scores.shape[0], num_generations
    if B % k != 0:
        raise ValueError(f"batch size B={B} must be divisible by num_generations={k}")
    g = scores.view(-1, k)  # (B/k, k) — TRL's RepeatSampler puts a prompt's k completions next to each other
    if method == "grpo":
        how = {True: "group", False: "none"}.get(scale, scale)
        if how not in ("group", "batch", "none"):
            raise ValueError(f"scale must be group, batch or none (or True/False), got {scale!r}")
        adv = g - g.mean(dim=1, keepdim=True)
        if how == "group":
            adv = adv / (g.std(dim=1, keepdim=True) + GROUP_EPS)  # torch.std is unbiased, as TRL's nanstd
        elif how == "batch":
            adv = adv / (scores.std() + GROUP_EPS)
        return adv.reshape(B)
    baseline = (g.sum(dim=1, keepdim=True) - g) / (k - 1)  # leave-one-out mean
    adv = (g - baseline).reshape(B)
    if scale:
        adv = (adv - adv.mean()) / (adv.std() + GROUP_EPS)
    return adv


def tied_groups(scores: torch.Tensor, num_generations: int) -> torch.Tensor:
    """(B,) bool: the completions whose group's scores all tie (std 0, as TRL's frac_reward_zero_std tells it).
    A tied group's GRPO/RLOO advantages are all 0: it adds no gradient, only tokens to the loss's denominator."""
    g = scores.view(-1, num_generations)
    tied = torch.isclose(g.std(dim=1), torch.zeros((), dtype=g.dtype))  # (B/k,)
    return tied.repeat_interleave(num_generations)

