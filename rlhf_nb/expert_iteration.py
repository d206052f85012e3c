"""Rejection-sampling fine-tuning (expert iteration): the no-RL baseline of lesson 12.

Each step: draw batch_size train prompts, sample num_generations completions each from the current policy, keep the
ones the checker accepts (reward 1), and take one supervised step on them (mean negative log-likelihood of their
tokens, EOS included). Same prompts, samples per step and sampler as an RL step, so a step costs about the same.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from .masking import masked_mean


def expert_iteration_step(state) -> dict[str, float]:
    """One step on a rlhf_nb.train.TrainState (its policy, optimizer, prompts, reward and random streams)."""
    from .train import next_prompts

    cfg, t0 = state.cfg, time.perf_counter()
    ro = state.sampler(state.policy, state.tokenizer, next_prompts(state), cfg.max_new_tokens, cfg.temperature,
                       generator=state.generators["sample"])
    scores = state.reward_fn(ro.prompts, ro.completions).float()  # (B,)
    keep = scores >= 1.0  # accepted by the checker
    mask = ro.completion_mask.float()  # (B, T)
    logp, ent, _ = state.forward(state.policy, ro.query_responses, ro.attention_mask, ro.context_length,
                                 cfg.temperature, entropy=True, entropy_grad=False)
    loss = torch.tensor(0.0)
    if keep.any():
        loss = -masked_mean(logp[keep], mask[keep])
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(state.policy.parameters(), cfg.max_grad_norm)
        state.optimizer.step()
    state.step += 1
    return {"objective/scores": float(scores.mean()), "policy/entropy": float(masked_mean(ent, mask)),
            "rollout/completion_len": float(mask.sum(1).mean()), "ei/kept_frac": float(keep.float().mean()),
            "ei/nll": float(loss.detach()), "time/step_s": time.perf_counter() - t0}


def expert_iteration(cfg, callback: Callable[[int, dict], None] | None = None):
    """cfg.total_steps expert-iteration steps from a fresh rlhf_nb.train.setup(cfg): (state, history)."""
    from .train import setup

    state = setup(cfg)
    history = []
    for step in range(cfg.total_steps):
        m = expert_iteration_step(state)
        history.append(m)
        if callback:
            callback(step, m)
    return state, history
