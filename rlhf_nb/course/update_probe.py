"""Lesson 05's look inside one PPO update: the package's own `ppo.ppo_update`, opened up minibatch by minibatch.

`record_update(state)` runs one real `train.ppo_step(state)` (its numbers unchanged) and records, through ppo_update's
`on_minibatch` hook, what each optimizer step of the update saw and did: its rows, its tokens' log-probs, values and
statistics as its loss saw them, the whole batch's log-probs after it, and (params=True) every weight's gradient and
move. The other functions turn a record into the lesson's tables; none recomputes the update, they read what it did.
"""
from __future__ import annotations

import functools
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from ..kl import kl_k3
from ..masking import masked_mean
from ..ppo import PPOBatch, policy_loss, value_loss


@dataclass
class MinibatchStep:
    """One optimizer step of ppo_update. (n, T) tensors are its n rows; logp and values are its own forward pass,
    taken before its step (what its loss saw)."""

    epoch: int  # counts from 1
    minibatch: int  # counts from 1
    rows: list[int]  # the rows of the batch it trained on
    lr: float  # the learning rate of this step
    adam_step: int  # Adam's step counter after this step (1: the optimizer's first update)
    stats: dict[str, float]  # its statistics; ppo_step's metrics are their means over the update
    logp: torch.Tensor  # (n, T)
    values: torch.Tensor | None  # (n, T); None without a value head
    batch_logp_after: torch.Tensor  # (B, T) log-probs of the whole batch after this step (0 on padding)
    grad_abs: torch.Tensor | None = None  # (params=True) |g| of every weight, after the gradient-norm clip
    move_abs: torch.Tensor | None = None  # (params=True) |Δw| of every weight in this step


@dataclass
class UpdateRecord:
    """One ppo_step, opened up: its batch, its metrics and samples as ppo_step returned them, and its minibatch steps."""

    batch: PPOBatch
    tokens: list[list[str]]  # (B, T) each completion token as text
    completions: list[str]  # (B,)
    metrics: dict[str, float]
    samples: dict[str, Any]
    clip_range: float
    clip_range_value: float
    adam_eps: float
    steps: list[MinibatchStep] = field(default_factory=list)


@contextmanager
def _hooked(state, on_minibatch: Callable[[dict], None]) -> Iterator[None]:
    """ppo_step calls the state's own ppo_update: inside this block it is the same function with on_minibatch set
    (nothing of the package is patched; the state gets its own update back afterwards)."""
    real = state.ppo_update
    state.ppo_update = functools.partial(real, on_minibatch=on_minibatch)
    try:
        yield
    finally:
        state.ppo_update = real


def record_update(state, params: bool = False) -> UpdateRecord:
    """Run one `train.ppo_step(state)` and record each optimizer step of its update (see the module's docstring).

    After each step the whole batch goes through the policy once more without a gradient (dropout is off, no random
    number is drawn), so the step's numbers are those of an unrecorded step. params=True also keeps every weight's
    |gradient| and |move| per step (about 8 bytes a weight a step)."""
    from .. import train

    cfg, steps, seen_batch = state.cfg, [], []
    weights = [p for p in state.policy.parameters() if p.requires_grad]
    last = [p.detach().clone() for p in weights] if params else None  # the rollout does not change a weight

    def on_minibatch(seen: dict) -> None:
        batch, rows = seen["batch"], seen["rows"]
        with torch.no_grad():
            after, _, _ = state.forward(state.policy, batch.ids, batch.attn, batch.context_length, cfg.temperature,
                                        entropy=False)
        grad_abs = move_abs = None
        if params:
            grad_abs = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().abs().flatten()
                                  for p in weights])
            now = [p.detach().clone() for p in weights]
            move_abs = torch.cat([(a - b).abs().flatten() for a, b in zip(now, last)])
            last[:] = now
        adam = state.optimizer.state.get(weights[0], {})
        steps.append(MinibatchStep(seen["epoch"] + 1, seen["minibatch"] + 1, rows.tolist(),
                                   float(state.optimizer.param_groups[0]["lr"]), int(adam.get("step", 0)),
                                   dict(seen["stats"]), seen["logp"], seen["values"], after * batch.mask,
                                   grad_abs, move_abs))
        if not seen_batch:
            seen_batch.append(batch)

    with _hooked(state, on_minibatch):
        metrics, samples = train.ppo_step(state)
    batch = seen_batch[0]
    P, tok = batch.context_length, state.tokenizer
    completion_ids = batch.ids[:, P:]
    tokens = [[tok.decode([int(i)]) for i in row] for row in completion_ids]
    completions = [tok.decode([int(i) for i, m in zip(row, mrow) if m]) for row, mrow in zip(completion_ids, batch.mask)]
    return UpdateRecord(batch, tokens, completions, metrics, samples, cfg.clip_range, cfg.clip_range_value,
                        cfg.adam_eps, steps)


def _rows(step: MinibatchStep, x: torch.Tensor) -> torch.Tensor:
    return x[torch.tensor(step.rows, dtype=torch.long)]


def step_tensors(rec: UpdateRecord, i: int) -> dict[str, torch.Tensor]:
    """Minibatch step i's rows, per token (n, T): mask, advantages, logp_old, logp (before its step), logp_after,
    ratio = exp(logp − logp_old) as its loss saw it, ratio_after (the same tokens after its step), values, values_old,
    returns (the last three None without a value head)."""
    s, b = rec.steps[i], rec.batch
    out = {"mask": _rows(s, b.mask), "advantages": _rows(s, b.advantages), "logp_old": _rows(s, b.logp_old),
           "logp": s.logp, "logp_after": _rows(s, s.batch_logp_after), "values": s.values,
           "values_old": None if b.values_old is None else _rows(s, b.values_old),
           "returns": None if b.returns is None else _rows(s, b.returns)}
    out["ratio"] = torch.exp(out["logp"] - out["logp_old"])
    out["ratio_after"] = torch.exp(out["logp_after"] - out["logp_old"])
    return out


def batch_k3_after(rec: UpdateRecord, i: int) -> float:
    """Mean over the whole batch's tokens of k3 = (ρ − 1) − log ρ after minibatch step i (i = −1: after the update)."""
    b = rec.batch
    return float(masked_mean(kl_k3(b.logp_old, rec.steps[i].batch_logp_after), b.mask))


def minibatch_plan(rec: UpdateRecord) -> list[dict[str, Any]]:
    """One row per epoch: the batch rows each of its minibatches trained on (sorted), in the order they ran."""
    plan: dict[int, dict[str, Any]] = {}
    for s in rec.steps:
        plan.setdefault(s.epoch, {"epoch": s.epoch})[f"minibatch {s.minibatch}"] = " ".join(map(str, sorted(s.rows)))
    return list(plan.values())


def _q(x: torch.Tensor, q: float) -> float:
    return float(torch.quantile(x.double(), q))


def ratio_table(rec: UpdateRecord) -> list[dict[str, Any]]:
    """One row per optimizer step: the range of ρ over its own real tokens before its step (what its loss saw) and
    after it, its logged policy/clipfrac and policy/approx_kl, and the whole batch's mean k3 after it."""
    rows = []
    for i, s in enumerate(rec.steps):
        t = step_tensors(rec, i)
        real = t["mask"].bool()
        before, after = t["ratio"][real], t["ratio_after"][real]
        rows.append({"step": i + 1, "epoch": s.epoch, "minibatch": s.minibatch, "tokens": int(real.sum()),
                     "ρ before: min": float(before.min()), "ρ before: max": float(before.max()),
                     "ρ after: min": float(after.min()), "ρ after: max": float(after.max()),
                     "policy/clipfrac": s.stats["policy/clipfrac"], "policy/approx_kl": s.stats["policy/approx_kl"],
                     "batch k3 after": batch_k3_after(rec, i)})
    return rows


def ratio_spread(rec: UpdateRecord) -> list[dict[str, torch.Tensor]]:
    """Per optimizer step, the ρ of its own real tokens before and after its step (1-D tensors), for a plot."""
    out = []
    for i in range(len(rec.steps)):
        t = step_tensors(rec, i)
        real = t["mask"].bool()
        out.append({"before": t["ratio"][real], "after": t["ratio_after"][real]})
    return out


CASES = ("A > 0, ρ > 1+ε", "A < 0, ρ < 1−ε", "A > 0, ρ < 1−ε", "A < 0, ρ > 1+ε", "1−ε ≤ ρ ≤ 1+ε")


def clip_table(rec: UpdateRecord, i: int = -1, k: int = 2) -> dict[str, Any]:
    """Which tokens of optimizer step i the clip cut off, and why.

    The per-token gradient comes from autograd through the package's `policy_loss` on the step's own tensors:
    "∂L/∂log π" is −n·∂loss/∂log π_t (n real tokens), which is A·ρ where the gradient flows and 0 where the clipped
    term is active; "ρ after the step" is the token's ratio once the step is taken. Returns {"counts": tokens per case
    (CASES) with whether the case is clipped, "tokens": up to k real tokens per case, farthest from ρ = 1 first,
    "clipfrac": the clipped share, "logged": the step's policy/clipfrac}."""
    s, t, eps = rec.steps[i], step_tensors(rec, i), rec.clip_range
    real, adv, ratio = t["mask"].bool(), t["advantages"], t["ratio"]
    leaf = t["logp"].clone().requires_grad_(True)
    loss, _ = policy_loss(leaf, t["logp_old"], adv, t["mask"], eps)
    loss.backward()
    push = -leaf.grad * real.sum()
    above, below = ratio > 1 + eps, ratio < 1 - eps
    case_masks = [above & (adv > 0), below & (adv < 0), below & (adv > 0), above & (adv < 0), ~above & ~below]
    clipped = case_masks[0] | case_masks[1]
    counts, tokens = [], []
    for name, cm, is_clipped in zip(CASES, case_masks, (True, True, False, False, False)):
        cm = cm & real
        counts.append({"case": name, "clipped": is_clipped, "tokens": int(cm.sum())})
        idx = cm.nonzero().tolist()
        idx.sort(key=lambda rt: -abs(float(ratio[rt[0], rt[1]]) - 1))
        for r, c in idx[:k]:
            row = s.rows[r]
            tokens.append({"case": name, "row": row, "t": c, "token": rec.tokens[row][c], "A": float(adv[r, c]),
                           "ρ": float(ratio[r, c]), "clipped": bool(clipped[r, c]),
                           "∂L/∂log π": float(push[r, c]) + 0.0,  # + 0.0: a clipped token's −0.0 prints as 0.0
                           "ρ after the step": float(t["ratio_after"][r, c])})
    return {"counts": counts, "tokens": tokens, "clipfrac": float(clipped[real].float().mean()),
            "logged": s.stats["policy/clipfrac"]}


def value_table(rec: UpdateRecord, clip_ranges: tuple[float, ...] | None = None) -> list[dict[str, Any]]:
    """One row per optimizer step: ½·mean (V − R)² (no clip) and the package's `value_loss` at each ε_v of
    clip_ranges (default: the run's), with its value/clipfrac, and the largest |V − V_old| over the step's tokens.
    At the run's ε_v the loss is the step's logged loss/value."""
    clip_ranges = clip_ranges or (rec.clip_range_value,)
    rows = []
    for i, s in enumerate(rec.steps):
        t = step_tensors(rec, i)
        if t["values"] is None:
            raise ValueError("this update has no value head (grpo/rloo): there is no value loss")
        v, v_old, ret, mask = t["values"], t["values_old"], t["returns"], t["mask"]
        row = {"step": i + 1, "epoch": s.epoch, "minibatch": s.minibatch,
               "max |V − V_old|": float((v - v_old).abs()[mask.bool()].max()),
               "½ mean (V − R)², no clip": float(0.5 * masked_mean((v - ret) ** 2, mask))}
        for eps_v in clip_ranges:
            loss, stats = value_loss(v, v_old, ret, mask, eps_v)
            row[f"loss, ε_v = {eps_v:g}"] = float(loss)
            row[f"value/clipfrac, ε_v = {eps_v:g}"] = stats["value/clipfrac"]
        rows.append(row)
    return rows


def epoch_table(rec: UpdateRecord) -> list[dict[str, Any]]:
    """One row per PPO epoch: the means over its minibatch steps of policy/clipfrac, policy/approx_kl and loss/value
    (as logged), and the whole batch's mean k3 at the epoch's end."""
    rows = []
    for epoch in sorted({s.epoch for s in rec.steps}):
        idx = [i for i, s in enumerate(rec.steps) if s.epoch == epoch]
        mean = lambda key: sum(rec.steps[i].stats.get(key, 0.0) for i in idx) / len(idx)  # noqa: E731
        rows.append({"epoch": epoch, "policy/clipfrac": mean("policy/clipfrac"),
                     "policy/approx_kl": mean("policy/approx_kl"), "loss/value": mean("loss/value"),
                     "batch k3 at its end": batch_k3_after(rec, idx[-1])})
    return rows


def adam_moves(rec: UpdateRecord, i: int, bins_per_decade: int = 2, low: float = 1e-9) -> list[dict[str, float]]:
    """How far optimizer step i moved each weight, against the size of its gradient (record_update(params=True)).

    Weights are binned by |g| (log scale, from `low` up); per bin: how many, the median of |Δw|/lr with its 10th and
    90th percentiles, and Adam's first-update value |g|/(|g| + ε) at the bin's centre (m̂ = g and √v̂ = |g| when m and v
    hold one gradient)."""
    s = rec.steps[i]
    if s.grad_abs is None:
        raise ValueError("record_update(state, params=True) keeps the weights' gradients and moves")
    g, ratio = s.grad_abs.double(), s.move_abs.double() / s.lr
    keep = g >= low
    g, ratio = g[keep], ratio[keep]
    edges = torch.arange(torch.log10(g.min()).floor() * bins_per_decade,
                         torch.log10(g.max()).floor() * bins_per_decade + 2) / bins_per_decade
    which = torch.bucketize(torch.log10(g), edges, right=True) - 1
    rows = []
    for b in range(len(edges) - 1):
        sel = which == b
        if int(sel.sum()) < 10:
            continue
        centre = float(10 ** ((edges[b] + edges[b + 1]) / 2))
        r = ratio[sel]
        rows.append({"|g|": centre, "weights": int(sel.sum()), "|Δw|/lr: median": _q(r, 0.5), "p10": _q(r, 0.1),
                     "p90": _q(r, 0.9), "first update |g|/(|g|+ε)": centre / (centre + rec.adam_eps)})
    return rows


def move_summary(rec: UpdateRecord, i: int) -> dict[str, float]:
    """Optimizer step i over all weights with a gradient: Adam's step counter, the learning rate, the share of weights
    with |g| > ε, the median |Δw|/lr and the share of weights moved by at least 0.9·lr."""
    s = rec.steps[i]
    if s.grad_abs is None:
        raise ValueError("record_update(state, params=True) keeps the weights' gradients and moves")
    has = s.grad_abs > 0
    ratio = (s.move_abs[has] / s.lr).double()
    return {"Adam step": s.adam_step, "lr": s.lr, "share |g| > ε": float((s.grad_abs[has] > rec.adam_eps).double().mean()),
            "median |Δw|/lr": _q(ratio, 0.5), "share |Δw| ≥ 0.9·lr": float((ratio >= 0.9).double().mean())}


def token_moves(rec: UpdateRecord, i: int = -1, k: int = 5) -> dict[str, Any]:
    """The tokens of the whole batch that the update moved most by minibatch step i (default: the end of the update).

    Ranks every real token by its k3 = (ρ − 1) − log ρ, ρ = π_after/π_old, the terms whose mean `policy/approx_kl`
    reports. Returns {"approx_kl_after": the batch's mean k3, "tokens": how many real tokens, "rows": the k largest,
    each with its completion, row, position, whether its row was in step i's minibatch, A, log-probs before and after}."""
    b, s = rec.batch, rec.steps[i]
    k3 = kl_k3(b.logp_old, s.batch_logp_after) * b.mask
    n = int(b.mask.sum())
    rows = []
    for flat in torch.topk(k3.flatten(), min(k, n)).indices.tolist():
        r, t = divmod(flat, k3.shape[1])
        rows.append({"completion": rec.completions[r], "row": r, "in its minibatch": r in s.rows, "position": t,
                     "token": rec.tokens[r][t], "A": float(b.advantages[r, t]), "logp before": float(b.logp_old[r, t]),
                     "logp after": float(s.batch_logp_after[r, t]), "k3": float(k3[r, t])})
    return {"approx_kl_after": float(k3.sum() / n), "tokens": n, "rows": rows}


def run_recorded(cfg, steps: int, params_steps: int = 0) -> list[dict[str, Any]]:
    """`steps` recorded RLHF steps of a fresh run of cfg, each summed up: the step's logged policy/approx_kl and
    policy/clipfrac, the batch's mean k3 after each optimizer step of its update ("k3 curve"), its epoch_table, and
    for the first `params_steps` steps the move_summary of its first optimizer step ("first move")."""
    from ..train import setup

    state, out = setup(cfg), []
    for step in range(1, steps + 1):
        rec = record_update(state, params=step <= params_steps)
        out.append({"step": step, "policy/approx_kl": rec.metrics["policy/approx_kl"],
                    "policy/clipfrac": rec.metrics["policy/clipfrac"],
                    "k3 curve": [batch_k3_after(rec, i) for i in range(len(rec.steps))], "epochs": epoch_table(rec),
                    "first move": move_summary(rec, 0) if step <= params_steps else None})
    return out


def first_update_rows(runs: dict[tuple[str, int], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per run of {(case, seed): run_recorded(...)}: how far the first optimizer step of RLHF step 1 moved the
    batch (its mean k3) next to the first optimizer step of the later RLHF steps (median, max), the median |Δw|/lr of
    that first optimizer step at RLHF steps 1 and 2, and the logged policy/approx_kl of step 1 next to the later steps'."""
    rows = []
    for (case, seed), steps in runs.items():
        first, later = steps[0], steps[1:]
        k3_later = [s["k3 curve"][0] for s in later]
        kl_later = [s["policy/approx_kl"] for s in later]
        row = {"case": case, "seed": seed, "k3 after opt. step 1: RLHF step 1": first["k3 curve"][0],
               "later steps: median": statistics.median(k3_later) if k3_later else float("nan"),
               "later steps: max": max(k3_later, default=float("nan"))}
        if first["first move"] is not None and len(steps) > 1 and steps[1]["first move"] is not None:
            row["median |Δw|/lr at opt. step 1: RLHF step 1"] = first["first move"]["median |Δw|/lr"]
            row["RLHF step 2"] = steps[1]["first move"]["median |Δw|/lr"]
        row.update({"approx_kl: RLHF step 1": first["policy/approx_kl"],
                    "later: mean": sum(kl_later) / len(kl_later) if kl_later else float("nan"),
                    "later: max": max(kl_later, default=float("nan"))})
        rows.append(row)
    return rows
