"""pass@k two ways: EXACT from the policy's probabilities, and the unbiased estimator from n samples (Chen et al. 2021).

Exact. Let p_x be the probability that ONE sample for prompt x is accepted by the checker. k independent samples all
fail with probability (1 - p_x)^k, so

    pass@k = mean_x [ 1 - (1 - p_x)^k ].

p_x is a sum over the token sequences whose text the checker accepts; each is a product of next-token probabilities.
`correct_probs` finds them all by a search over prefixes that can still become the answer (every tokenisation, the
special tokens that decode to nothing, EOS or the max_new_tokens cut), so p_x is exact up to a stated remainder: the
mass of the branches cut below `prune`, an upper bound on what the search left out (0 with prune=0).

Estimated. From n samples with c correct, pass@k ≈ 1 - C(n-c, k) / C(n, k), unbiased for k <= n (`pass_at_k`).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021)'s unbiased estimator of pass@k from n samples of which c are correct: 1 - C(n-c,k)/C(n,k),
    computed as a product (no huge binomials). Needs 0 <= c <= n and 1 <= k <= n."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def exact_pass_at_k(p: Sequence[float] | np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """mean over prompts of 1 - (1 - p)^k, for each k in ks: (len(ks),). p: per-prompt probability of one correct
    sample. Uses log1p, so tiny p and large k stay accurate."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    ks = np.asarray(ks, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_fail = np.log1p(-p)  # -inf where p == 1
    return 1.0 - np.exp(np.outer(ks, log_fail)).mean(axis=1)


def estimated_pass_at_k(counts: Sequence[int], n: int, ks: Sequence[int]) -> np.ndarray:
    """mean over prompts of pass_at_k(n, c, k), for each k in ks: (len(ks),)."""
    return np.array([np.mean([pass_at_k(n, int(c), int(k)) for c in counts]) for k in ks])


@torch.no_grad()
def correct_probs(model, tokenizer, prompts: list[str], answers: list[str], max_new_tokens: int,
                  temperature: float = 1.0, prune: float = 1e-9, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(p, remainder): p[i] = probability that one sample for prompts[i] (the kit's sampler: temperature, full
    distribution, stop at EOS or after max_new_tokens) decodes to exactly answers[i]; remainder[i] bounds the mass of
    the prefixes cut because their probability fell below `prune` (the true p is in [p, p + remainder])."""
    from .policy import PolicyWithValue, position_ids_from_mask

    lm = model.lm if isinstance(model, PolicyWithValue) else model
    device = next(lm.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pieces = [tokenizer.decode([i], skip_special_tokens=True) for i in range(len(tokenizer))]
    empty = [i for i, s in enumerate(pieces) if s == "" and i != eos]  # drawn, kept, decoded to nothing (PAD)
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    p_ok = np.zeros(len(prompts))
    rest = np.zeros(len(prompts))
    # a node: (prompt index, completion ids so far, text so far, log-prob so far)
    frontier = [(i, [], "", 0.0) for i in range(len(prompts))]
    for depth in range(max_new_tokens):
        if not frontier:
            break
        logp = []
        for s in range(0, len(frontier), batch):
            chunk = frontier[s:s + batch]
            seqs = [prompt_ids[i] + ids for i, ids, _, _ in chunk]
            T = max(map(len, seqs))
            x = torch.full((len(seqs), T), pad, dtype=torch.long)
            m = torch.zeros((len(seqs), T), dtype=torch.long)
            for r, q in enumerate(seqs):  # left padding, as the sampler; an inner PAD token is a real token (mask 1)
                x[r, T - len(q):] = torch.tensor(q)
                m[r, T - len(q):] = 1
            x, m = x.to(device), m.to(device)
            logits = lm(input_ids=x, attention_mask=m, position_ids=position_ids_from_mask(m)).logits[:, -1]
            logp.append(torch.log_softmax(logits.float() / temperature, -1).double().cpu())
        logp = torch.cat(logp).numpy()
        nxt = []
        last = depth == max_new_tokens - 1
        for (i, ids, text, lp), row in zip(frontier, logp):
            left = answers[i][len(text):]
            if left == "":
                p_ok[i] += math.exp(lp + row[eos])  # the answer, then EOS
            cands = [(t, pieces[t]) for t in empty]
            cands += [(t, s) for t, s in _starts(pieces, left)]
            for t, s in cands:
                lq = lp + row[t]
                if last:  # cut by max_new_tokens: accepted iff the text is the answer
                    if text + s == answers[i]:
                        p_ok[i] += math.exp(lq)
                elif math.exp(lq) < prune:
                    rest[i] += math.exp(lq)
                else:
                    nxt.append((i, ids + [t], text + s, lq))
        frontier = nxt
    return p_ok, rest


_PREFIX_CACHE: dict[int, dict[str, list[tuple[int, str]]]] = {}


def _starts(pieces: list[str], left: str) -> list[tuple[int, str]]:
    """The tokens whose text is a non-empty prefix of `left` (every tokenisation of the answer is searched)."""
    cache = _PREFIX_CACHE.setdefault(id(pieces), {})
    if left not in cache:
        cache[left] = [(t, s) for t, s in enumerate(pieces) if s and left.startswith(s)]
    return cache[left]


def sample_counts(model, tokenizer, prompts: list[str], n: int, max_new_tokens: int,
                  is_correct: Callable[[str, str], bool], seed: int, batch: int = 2048) -> np.ndarray:
    """Per prompt, how many of n samples (the kit's sampler, temperature 1) the checker accepts: (len(prompts),)."""
    from .policy import sample

    g = torch.Generator().manual_seed(seed)
    rows = [p for p in prompts for _ in range(n)]
    ok = []
    for s in range(0, len(rows), batch):
        ro = sample(model, tokenizer, rows[s:s + batch], max_new_tokens, generator=g)
        ok += [is_correct(p, c) for p, c in zip(ro.prompts, ro.completions)]
    return np.array(ok).reshape(len(prompts), n).sum(1)
