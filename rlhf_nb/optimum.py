"""The KL-regularised optimum: the best any optimiser can do against J(π) = E_π[r] − β·KL(π‖ρ).

Its maximiser is π*(y|x) = ρ(y|x)·exp(r(x, y)/β) / Z(x), and J* = E_x[β·log Z(x)] exactly (Ziegler et al. 2019).
With N samples y_i ~ ρ(·|x) of one prompt x:

    Ĵ*       = β·(logsumexp_i(r_i/β) − log N)
    w_i      = softmax_i(r_i/β)                  (self-normalised importance weights of π* against ρ)
    E_π*[r]  ≈ Σ_i w_i·r_i
    KL(π*‖ρ) ≈ Σ_i w_i·log(N·w_i)                (so Ĵ* = E_π*[r] − β·KL, exactly)

The policy cannot choose its prompt, so the estimate is made per prompt and averaged over prompts (pooling all
samples would let π* move mass between prompts and overstate J*). Finite N misses the rare high-reward tail, so
Ĵ* is biased low (log of a sample mean; Jensen): report N next to it. β = 0 is the limit: all mass on the best
sample, E[r] = max r, KL = log(N / #ties).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import torch

FRONTIER_BETAS = (0.02, 0.03, 0.05, 0.1)


def objective(score: float, kl: float, beta: float) -> float:
    """The regularised objective J = E[r] − β·KL that RLHF maximises."""
    return score - beta * kl


def optimum_from_scores(scores: torch.Tensor, beta: float) -> dict[str, float]:
    """π* estimated from N scores of base samples of ONE prompt: {score: E_π*[r], kl: KL(π*‖ρ), J_star, n}."""
    if beta < 0 or not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    r = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if r.numel() == 0:
        raise ValueError("scores must hold at least one sample")
    n = r.numel()
    if beta == 0:  # the argmax policy: the weights become uniform over the best samples
        w = (r == r.max()).double()
        w = w / w.sum()
        j_star = float(r.max())
    else:
        w = torch.softmax(r / beta, 0)
        j_star = beta * (float(torch.logsumexp(r / beta, 0)) - math.log(n))
    score = float((w * r).sum())
    kl = float(torch.where(w > 0, w * torch.log(n * w), torch.zeros_like(w)).sum())
    return {"score": score, "kl": kl, "J_star": j_star, "n": n}


def optimum_by_prompt(scores: torch.Tensor, prompts: Sequence[str], beta: float) -> dict[str, float]:
    """The optimum per prompt, averaged over prompts (equal weight, as the trainer draws them): score, kl, J_star, n.

    n is the number of samples per prompt (the smallest group), the N that sets the estimate's bias."""
    r = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if len(prompts) != r.numel():
        raise ValueError(f"prompts must hold one prompt per score ({r.numel()}), got {len(prompts)}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[p].append(i)
    per = [optimum_from_scores(r[idx], beta) for idx in groups.values()]
    out = {k: sum(d[k] for d in per) / len(per) for k in ("score", "kl", "J_star")}
    return {**out, "n": min(d["n"] for d in per), "prompts": len(per)}


def score_base_samples(n_per_prompt: int = 128, max_new_tokens: int = 12, seed: int = 0, reward: str = "sentiment",
                       temperature: float = 1.0, model: str = "embedded", batch: int = 256):
    """Sample n_per_prompt completions of every training prompt from the base policy ρ and score them: (scores, prompts),
    both flat, prompt by prompt."""
    from .corpus import PROMPTS
    from .policy import load_policy
    from .rewards import get_reward
    from .seeding import seed_everything

    if n_per_prompt < 1:
        raise ValueError(f"n_per_prompt must be >= 1, got {n_per_prompt}")
    g = seed_everything(seed)
    lm, tok = load_policy(model)
    prompts = [p for p in PROMPTS for _ in range(n_per_prompt)]
    return score_samples(lm, tok, get_reward(reward), prompts, max_new_tokens, g, batch, temperature), prompts


def score_samples(lm, tokenizer, reward_fn, prompts: Sequence[str], max_new_tokens: int, generator: torch.Generator,
                  batch: int = 256, temperature: float = 1.0) -> torch.Tensor:
    """One completion of each prompt (repeat a prompt to sample it n times), scored: (len(prompts),) float64."""
    from .policy import sample_batched

    completions = sample_batched(lm, tokenizer, list(prompts), max_new_tokens, generator, batch, temperature)
    return torch.cat([reward_fn(prompts[i:i + batch], completions[i:i + batch]).double()
                      for i in range(0, len(prompts), batch)])


def measure_policy(state, n_per_prompt: int = 32, seed: int = 12345, chunk: int = 256) -> dict:
    """Score, KL(π‖ρ) and J's parts for a training state's policy on fresh samples: n_per_prompt of each training
    prompt, the prompts and weights of J* (k1 summed over each completion: unbiased for the KL). No gradient."""
    from .policy import sample_with_kl

    cfg = state.cfg
    g = torch.Generator(device=state.device).manual_seed(seed)
    prompts = [p for p in state.prompts for _ in range(n_per_prompt)]
    scores, kls = [], []
    for i in range(0, len(prompts), chunk):
        ro, kl = sample_with_kl(state.policy, state.ref, state.tokenizer, prompts[i:i + chunk], cfg.max_new_tokens,
                                cfg.temperature, generator=g)
        kls.append(kl.double())  # (B,)
        scores.append(state.reward_fn(ro.prompts, ro.completions).double())  # (B,)
    score, kl = float(torch.cat(scores).mean()), float(torch.cat(kls).mean())
    return {"score": score, "kl": kl, "n": len(prompts)}


def frontier(scores: torch.Tensor, prompts: Sequence[str], betas: Sequence[float]) -> dict[float, dict[str, float]]:
    """The optimum for each β: the (KL, score) frontier that no policy can pass (up to the estimate's bias)."""
    return {float(b): optimum_by_prompt(scores, prompts, b) for b in betas}


def kl_regularised_optimum(betas: Sequence[float] = FRONTIER_BETAS, n: int = 4096, max_new_tokens: int = 12,
                           seed: int = 0, reward: str = "sentiment", temperature: float = 1.0) -> dict:
    """Estimate π* per β from about n base samples (n/32 per prompt).

    Returns {"n": samples in all, "n_per_prompt", "base_mean", "base_frac_ge_0.8",
             "betas": {β: {"score": E_π*[r], "kl": KL(π*‖ρ) in nats, "J_star": Ĵ*, "n": samples per prompt}}}.
    Ĵ* is biased low (finite n misses the tail); score and KL are the frontier point at that β."""
    from .corpus import PROMPTS

    r, prompts = score_base_samples(max(1, n // len(PROMPTS)), max_new_tokens, seed, reward, temperature)
    out = {"n": len(r), "n_per_prompt": len(r) // len(PROMPTS), "base_mean": float(r.mean()),
           "base_frac_ge_0.8": float((r >= 0.8).double().mean()), "betas": {}}
    for beta, v in frontier(r, prompts, betas).items():
        out["betas"][beta] = {"score": v["score"], "kl": v["kl"], "J_star": v["J_star"], "n": v["n"]}
    return out
