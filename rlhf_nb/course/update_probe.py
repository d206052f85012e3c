"""Lesson 05's look inside one PPO step: which tokens of the batch did the update move, and by how much?

`token_moves(cfg)` takes the first step of a fresh run and compares, token by token, the log-probability each sampled
token had before the step (π_old, the policy that sampled it) with the one it has after (π_θ). The per-token k3,
(ρ − 1) − log ρ with ρ = π_θ/π_old, is what `policy/approx_kl` averages, so the rows it returns are the tokens behind a
large approx_kl.
"""
from __future__ import annotations

from typing import Any

import torch

from ..config import RunConfig
from ..kl import kl_k3
from ..policy import forward_tokens, sample


def token_moves(cfg: RunConfig, k: int = 5) -> dict[str, Any]:
    """Run the first PPO step of cfg and return {"approx_kl_after": mean k3 over the batch's tokens after the step,
    "tokens": how many completion tokens the batch has, "rows": the k tokens with the largest k3, each with its completion, score, log-probs before and after}.

    The batch is recovered by sampling again from an identical fresh set-up: one seed fixes every random stream, so it
    is the batch the step trained on."""
    from ..train import next_prompts, ppo_step, setup

    trained, replay = setup(cfg), setup(cfg)
    ppo_step(trained)
    ro = sample(replay.policy, replay.tokenizer, next_prompts(replay), cfg.max_new_tokens, cfg.temperature,
                cfg.top_k, cfg.top_p, generator=replay.generators["sample"])
    ids, attn, P, mask = ro.query_responses, ro.attention_mask, ro.context_length, ro.completion_mask.float()
    with torch.no_grad():
        before, _, _ = forward_tokens(replay.policy, ids, attn, P, cfg.temperature)
        after, _, _ = forward_tokens(trained.policy, ids, attn, P, cfg.temperature)
    k3 = kl_k3(before, after) * mask  # per token: (ρ − 1) − log ρ, ρ = π_after / π_before
    scores = replay.reward_fn(ro.prompts, ro.completions).float()
    rows = []
    for flat in torch.topk(k3.flatten(), min(k, int(mask.sum()))).indices.tolist():
        b, t = divmod(flat, k3.shape[1])
        rows.append({"completion": ro.completions[b], "score": float(scores[b]), "position": t,
                     "token": replay.tokenizer.decode([int(ids[b, P + t])]), "logp before": float(before[b, t]),
                     "logp after": float(after[b, t]), "k3": float(k3[b, t])})
    return {"approx_kl_after": float(k3.sum() / mask.sum()), "tokens": int(mask.sum()), "rows": rows}
