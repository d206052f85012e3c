"""The PPO update's losses and diagnostics, on (B, T) completion tokens with a 0/1 `mask`.

Stats are dicts of plain Python floats with the names of docs/metrics.md.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from .config import RunConfig
from .kl import kl_k3
from .masking import masked_mean, masked_var
from .policy import forward_tokens


def _check_clip(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0.0 < value < float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


LOSS_TYPES = ("bnpo", "dapo", "grpo", "dr_grpo")


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str = "bnpo", max_len: int | None = None,
                   norm_tokens: float | torch.Tensor | None = None) -> torch.Tensor:
    """One number from per-token losses (B, T), as TRL 1.16's GRPO `loss_type` does it:

        bnpo     Σ_it m·ℓ / Σ_it m                 one token mean over the minibatch (every token weighs the same)
        dapo     Σ_it m·ℓ / N̄                      N̄ = norm_tokens: the batch's tokens per minibatch (= bnpo for one)
        grpo     1/B Σ_i (Σ_t m·ℓ / Σ_t m)          mean over completions of each one's token mean (GRPO paper)
        dr_grpo  Σ_it m·ℓ / (B · max_len)           a constant divisor (Dr. GRPO, Liu et al. 2025)

    Under grpo a token of a long completion weighs less than one of a short completion: the length bias Dr. GRPO
    names. bnpo, dapo and dr_grpo weigh every token alike."""
    m = mask.bool()
    total = torch.where(m, per_token, torch.zeros_like(per_token))
    if loss_type == "bnpo":
        return total.sum() / m.sum()
    if loss_type == "dapo":
        return total.sum() / (m.sum() if norm_tokens is None else norm_tokens)
    if loss_type == "grpo":
        return (total.sum(1) / m.sum(1).clamp(min=1)).mean()
    if loss_type == "dr_grpo":
        if max_len is None:
            raise ValueError("loss_type dr_grpo needs max_len (the longest completion allowed: max_new_tokens)")
        return total.sum() / (per_token.size(0) * max_len)
    raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}; got {loss_type!r}")


def policy_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
    clip_range_high: float | None = None,
    loss_type: str = "bnpo",
    max_len: int | None = None,
    norm_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate: the aggregate (loss_type, see aggregate_loss; default one token mean) of
    max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε_high)), ρ = exp(logp_new − logp_old); ε_high = clip_range_high, or ε (symmetric).

    Raising ε_high alone ("clip-higher", DAPO) lets a token with A > 0 raise its probability further before the clip
    stops its gradient, which keeps rare tokens from being starved (entropy collapse); A < 0 is unchanged.

    Stats: policy/clipfrac (and its two sides, policy/clipfrac_low: A < 0 and ρ < 1 − ε; policy/clipfrac_high: A > 0
    and ρ > 1 + ε_high), policy/ratio (mean ρ), policy/approx_kl (k3, CleanRL's: mean of (ρ − 1) − log ρ, an
    estimate of KL(π_old‖π_new)), policy/approx_kl_k2 (½·mean (log ρ)², TRL's `policy/approxkl`).
    """
    _check_clip("clip_range", clip_range)
    high = clip_range if clip_range_high is None else clip_range_high
    _check_clip("clip_range_high", high)
    log_ratio = logp_new - logp_old.detach()  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    adv = advantages.detach()
    pg1 = -adv * ratio  # (B, T)
    pg2 = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + high)  # (B, T)
    # pessimistic bound: the clipped side carries no gradient
    loss = aggregate_loss(torch.max(pg1, pg2), mask, loss_type, max_len, norm_tokens)
    with torch.no_grad():
        stats = {
            "policy/clipfrac": masked_mean((pg2 > pg1).float(), mask).item(),
            "policy/clipfrac_low": masked_mean(((ratio < 1.0 - clip_range) & (adv < 0)).float(), mask).item(),
            "policy/clipfrac_high": masked_mean(((ratio > 1.0 + high) & (adv > 0)).float(), mask).item(),
            "policy/ratio": masked_mean(ratio, mask).item(),
            "policy/approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask).item(),  # k3
            "policy/approx_kl_k2": masked_mean(0.5 * log_ratio**2, mask).item(),  # k2
        }
    return loss, stats


def value_loss(
    values_new: torch.Tensor,
    values_old: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """½·masked mean of max((V − R)², (clip(V, V_old ± ε_v) − R)²). Stats: value/clipfrac."""
    _check_clip("clip_range_value", clip_range_value)
    v_old, ret = values_old.detach(), returns.detach()
    v_clipped = torch.clamp(values_new, v_old - clip_range_value, v_old + clip_range_value)  # (B, T)
    vf1 = (values_new - ret) ** 2  # (B, T)
    vf2 = (v_clipped - ret) ** 2  # (B, T)
    loss = 0.5 * masked_mean(torch.max(vf1, vf2), mask)
    with torch.no_grad():
        stats = {"value/clipfrac": masked_mean((vf2 > vf1).float(), mask).item()}
    return loss, stats


def kl_penalty_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                    bias_correction: bool = True, aggregate: Callable = masked_mean) -> torch.Tensor:
    """TRL GRPO's KL term: the aggregate (by default a token mean; ppo_update passes the policy loss's loss_type,
    as TRL adds β·kl to each token's loss before aggregating) of [ρ_t ·] k3(π_θ, π_ref), ρ_t = π_θ/π_old (the ratio
    factor is TRL 1.16's default `use_bias_correction_kl`: the value is unchanged on-policy, the gradient differs)."""
    k3 = kl_k3(logp_new, ref_logp)  # (B, T), differentiable in logp_new
    if bias_correction:
        k3 = k3 * torch.exp(logp_new - logp_old.detach())
    return aggregate(k3, mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V)/Var(R) over masked tokens (biased variances); nan when Var(R) = 0, as CleanRL."""
    var_r = masked_var(returns, mask, unbiased=False).item()
    if var_r == 0.0:
        return float("nan")
    return 1.0 - masked_var(returns - values, mask, unbiased=False).item() / var_r


def minibatch_indices(batch_size: int, minibatch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """A shuffled permutation of range(batch_size) cut into equal LongTensor minibatches; reproducible via `generator`."""
    for name, v in (("batch_size", batch_size), ("minibatch_size", minibatch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if batch_size % minibatch_size != 0:
        raise ValueError(f"batch_size={batch_size} must be divisible by minibatch_size={minibatch_size}")
    perm = torch.randperm(batch_size, generator=generator)
    return list(perm.split(minibatch_size))


@dataclass
class PPOBatch:
    """One rollout batch as the PPO epochs see it. (B, P+T) token columns; (B, T) per completion token."""

    ids: torch.Tensor  # (B, P+T) left-padded prompt + completion
    attn: torch.Tensor  # (B, P+T)
    context_length: int  # P: the completion starts at this column
    mask: torch.Tensor  # (B, T) 1 on completion tokens
    logp_old: torch.Tensor  # (B, T) log-probs at sampling time (the ratio's denominator)
    advantages: torch.Tensor  # (B, T)
    values_old: torch.Tensor | None = None  # (B, T) value head at sampling time; None: no value loss (grpo/rloo)
    returns: torch.Tensor | None = None  # (B, T) value targets
    ref_logp: torch.Tensor | None = None  # (B, T) reference log-probs, for a KL term in the loss


def rollout_forward(policy, ids: torch.Tensor, attn: torch.Tensor, context_length: int, cfg: RunConfig,
                    forward: Callable = forward_tokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple | None]:
    """Stage 3 for the policy: log π_old, entropy and values of the rollout, each (B, T) and detached, plus the
    forward pass that `ppo_update` may reuse (or None).

    A speed shortcut lives here, and only here: with one epoch of one minibatch, the update's first (and only) forward
    pass is this one, so it is run once with its graph kept and handed to ppo_update (the ratio is exactly 1, as
    TRL's on-policy path). Otherwise it runs without a graph and ppo_update runs its own. The numbers are the same."""
    if cfg.ppo_epochs == 1 and cfg.num_minibatches == 1:
        graph = forward(policy, ids, attn, context_length, cfg.temperature, entropy_grad=cfg.ent_coef != 0)
        logp, entropy, values = (t.detach() if t is not None else None for t in graph)
        return logp, entropy, values, graph
    with torch.no_grad():
        logp, entropy, values = forward(policy, ids, attn, context_length, cfg.temperature)
    return logp, entropy, values, None


def ppo_update(policy, optimizer: torch.optim.Optimizer, batch: PPOBatch, cfg: RunConfig, generator: torch.Generator,
               first_forward: tuple | None = None, kl_coef_loss: float = 0.0, forward: Callable = forward_tokens,
               kl_loss: Callable = kl_penalty_loss, on_minibatch: Callable[[dict], None] | None = None) -> dict[str, float]:
    """cfg.ppo_epochs passes over shuffled minibatches of one rollout batch; returns the mean of each statistic.

    Hyper-parameters come from cfg: temperature, ppo_epochs, num_minibatches, clip_range, clip_range_value,
    vf_coef, ent_coef, max_grad_norm. first_forward: (logp, entropy, values) of the whole batch with grad, already
    computed by the caller; allowed only for one epoch of one minibatch, where it saves a forward pass (the
    on-policy shortcut TRL also takes; see rollout_forward). kl_coef_loss: weight of TRL-GRPO's β·k3 loss term (0: none).
    forward and kl_loss: the policy's forward pass and the KL loss term (forward_tokens, kl_penalty_loss), swappable
    for lesson 10's faults. on_minibatch: called after each minibatch's optimizer step with what that step saw, for a
    look inside the update (lesson 05): {"epoch", "minibatch" (both count from 0), "rows" (the rows of `batch` it
    trained on), "batch", "logp" and "values" (its own forward pass, detached, taken before its step; values None
    without a value head), "stats" (its statistics, of which the return value is the mean)}; None changes nothing."""
    B = batch.ids.size(0)
    use_value = batch.returns is not None
    epochs, num_minibatches = cfg.ppo_epochs, cfg.num_minibatches
    sums: dict[str, float] = {}
    n = 0
    if first_forward is not None and (epochs, num_minibatches) != (1, 1):
        raise ValueError("first_forward is only valid for epochs=1, num_minibatches=1")
    # the loss aggregation (--loss_type; dapo divides each minibatch by the batch's mean tokens per minibatch, as TRL)
    agg = functools.partial(aggregate_loss, loss_type=cfg.loss_type, max_len=cfg.max_new_tokens,
                            norm_tokens=batch.mask.sum() / num_minibatches)
    for epoch in range(epochs):
        batches = [torch.arange(B)] if first_forward is not None else minibatch_indices(B, B // num_minibatches, generator)
        for i, mb in enumerate(batches):
            mb = mb.to(batch.ids.device)
            mask = batch.mask[mb]
            if not mask.any():  # every completion here was dropped (--dynamic_sampling): nothing to learn from
                continue
            if first_forward is not None:
                logp, entropy, values = first_forward
            else:
                logp, entropy, values = forward(policy, batch.ids[mb], batch.attn[mb], batch.context_length,
                                                cfg.temperature, entropy=cfg.ent_coef != 0)
            pg_loss, pg_stats = policy_loss(logp, batch.logp_old[mb], batch.advantages[mb], mask, cfg.clip_range,
                                            cfg.clip_range_high, cfg.loss_type, cfg.max_new_tokens,
                                            batch.mask.sum() / num_minibatches)
            # no entropy bonus, no entropy term: pg_loss - 0·H is pg_loss to the bit, gradient included, and its
            # backward pass through a (B, T, V) softmax is skipped
            loss = pg_loss - cfg.ent_coef * masked_mean(entropy, mask) if cfg.ent_coef else pg_loss
            stats = {**pg_stats, "loss/policy": pg_loss.item()}
            if kl_coef_loss:
                kl_l = kl_loss(logp, batch.logp_old[mb], batch.ref_logp[mb], mask, cfg.kl_loss_ratio, agg)
                loss = loss + kl_coef_loss * kl_l
                stats["loss/kl"] = kl_l.item()
            if use_value:
                v_loss, v_stats = value_loss(values, batch.values_old[mb], batch.returns[mb], mask, cfg.clip_range_value)
                loss = loss + cfg.vf_coef * v_loss
                stats.update(v_stats)
                stats["loss/value"] = v_loss.item()
                stats["value/explained_variance"] = float(explained_variance(values.detach(), batch.returns[mb], mask))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stats["policy/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm))
            optimizer.step()
            stats["loss/total"] = loss.item()
            if on_minibatch is not None:
                on_minibatch({"epoch": epoch, "minibatch": i, "rows": mb, "batch": batch, "logp": logp.detach(),
                              "values": values.detach() if use_value else None, "stats": dict(stats)})
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
    if n == 0:  # no minibatch had a token left: no step was taken
        sums, n = {k: 0.0 for k in ("policy/clipfrac", "policy/clipfrac_low", "policy/clipfrac_high",
                                     "policy/approx_kl", "policy/approx_kl_k2", "loss/policy", "policy/grad_norm",
                                     "loss/total", *(("loss/kl",) if kl_coef_loss else ()))}, 1
        sums["policy/ratio"] = 1.0
    out = {k: v / n for k, v in sums.items()}
    if not use_value:  # group baselines (grpo/rloo) have no value head to train
        out.update({"loss/value": 0.0, "value/clipfrac": 0.0})
    return out
