"""Lesson 09's helpers: the committed DPO / SFT / reward model + PPO comparison (`make dpo_compare`), its summary at
matched KL and per seed, each token's log-prob change from the reference to a trained policy, and the lesson's plots.
The runs themselves are rlhf_nb.dpo and rlhf_nb.train; nothing here trains."""
from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import torch

from ..dpo import ASSETS

COMPARISON = ASSETS / "dpo-vs-ppo.json"
METHODS = {"dpo": "DPO", "sft": "SFT on the chosen", "ppo": "reward model + PPO"}
COLORS = {"dpo": "tab:blue", "sft": "tab:green", "ppo": "tab:red"}


def load_comparison(path: str | Path = COMPARISON) -> dict:
    """The committed sweep of `python -m rlhf_nb.tools.dpo_vs_ppo`: config, reward-model accuracy, every run's rows."""
    return json.loads(Path(path).read_text())


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(comparison: dict) -> list[dict]:
    """One row per (method, beta, step): kl, gold, well_formed (and DPO/SFT's held-out accuracy), mean and std over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in comparison["runs"]:
        for r in run["rows"]:
            groups[(run["method"], run["beta"], r["step"])].append(r)
    out = []
    for (method, beta, step), rows in sorted(groups.items()):
        row = {"method": method, "beta": beta, "step": step, "seeds": len(rows)}
        for k in ("kl", "gold", "well_formed", "accuracy"):
            vals = [r[k] for r in rows if r.get(k) is not None and not (isinstance(r[k], float) and math.isnan(r[k]))]
            if vals:
                row[k], row[f"{k}_std"] = _mean_std(vals)
        out.append(row)
    return out


def matched_kl(comparison: dict, budgets: Sequence[float] = (0.5, 1.0, 2.0, 4.0)) -> list[dict]:
    """For each KL budget and method: the setting and checkpoint with the best seed-mean gold among those whose
    seed-mean KL stays within the budget (the base policy, KL 0, always qualifies)."""
    summ = summarize(comparison)
    rows = [r for r in summ if r["step"] > 0]
    base = [r for r in summ if r["step"] == 0][0]
    out = []
    for budget in budgets:
        for method in METHODS:
            ok = [r for r in rows if r["method"] == method and r["kl"] <= budget]
            best = max(ok, key=lambda r: r["gold"]) if ok else {**base, "method": method, "beta": None}
            out.append({"KL budget": budget, "method": METHODS[method], "beta": best["beta"], "step": best["step"],
                        "KL": round(best["kl"], 3), "gold": round(best["gold"], 3),
                        "gold std (seeds)": round(best["gold_std"], 3)})
    return out


def last_measurements(comparison: dict) -> list[dict]:
    """Every setting (method, β) at its last measurement: KL, gold and well-formed share, mean and std over seeds."""
    summ = [r for r in summarize(comparison) if r["step"] > 0]
    last = {(r["method"], r["beta"]): r for r in summ}  # summarize sorts by step: the last row of a setting wins
    return [{"method": METHODS[m], "beta": b, "step": r["step"], "KL": r["kl"], "KL std": r["kl_std"],
             "gold": r["gold"], "gold std": r["gold_std"], "well-formed": r["well_formed"]}
            for (m, b), r in sorted(last.items(), key=lambda kv: (list(METHODS).index(kv[0][0]), kv[0][1]))]


def best_by_seed(comparison: dict, max_kl: float = math.inf) -> list[dict]:
    """For each method and seed: its single measurement with the highest gold among those with KL ≤ max_kl (any β,
    any step) — where one seed's run got, not the seed mean."""
    best: dict[tuple[str, int], dict] = {}
    for run in comparison["runs"]:
        for r in run["rows"]:
            key = (run["method"], run["seed"])
            if r["step"] > 0 and r["kl"] <= max_kl and (key not in best or r["gold"] > best[key]["gold"]):
                best[key] = {"method": METHODS[run["method"]], "seed": run["seed"], "beta": run["beta"],
                             "step": r["step"], "KL": r["kl"], "gold": r["gold"]}
    return [best[k] for k in sorted(best, key=lambda k: (list(METHODS).index(k[0]), k[1]))]


# ---------------------------------------------------------------- per token: where the chosen log-prob goes

TOKEN_KINDS = ("common prefix", "shared", "own", "EOS")


def token_kind(t: int, token: int, other: Sequence[int], prefix: int, eos: int) -> str:
    """What token t of one completion has in common with the other completion of its pair.

    "common prefix": t lies in the two completions' common start (same context, same token: the same log-prob in
    both, so the pair's own DPO gradient cancels there); "EOS": the end token both completions close with; "shared":
    the token id occurs in the other completion after the common start; "own": it does not."""
    if t < prefix:
        return "common prefix"
    if token == eos:
        return "EOS"
    return "shared" if token in set(other[prefix:]) else "own"


@torch.no_grad()
def token_changes(policy, ref, tokenizer, pairs: Sequence[dict], batch_size: int = 64) -> list[dict]:
    """One row per completion token of every pair, chosen and rejected: log ρ before training, log π after, and their
    difference Δ = log π(y_t | x, y_<t) − log ρ(y_t | x, y_<t), with the token's kind (`token_kind`).

    Tokenized and scored exactly as DPO scores a pair (`dpo.tokenize_pairs`, `dpo.collate`, `forward_tokens`), so a
    side's Δ summed over its tokens is its sequence log-ratio log π(y|x) − log ρ(y|x)."""
    from ..dpo import collate, tokenize_pairs
    from ..policy import forward_tokens

    enc, eos, rows = tokenize_pairs(tokenizer, pairs), tokenizer.eos_token_id, []
    for i in range(0, len(enc), batch_size):
        chunk = enc[i:i + batch_size]
        batch = collate(chunk, tokenizer.pad_token_id)
        args = (batch.ids, batch.attention_mask, batch.context_length)
        new, old = (forward_tokens(m, *args, entropy=False)[0] for m in (policy, ref))  # (2B, T)
        for j, (_, chosen, rejected) in enumerate(chunk):
            prefix = len(os.path.commonprefix([chosen, rejected]))  # tokens both completions start with
            for side, r, toks, other in (("chosen", j, chosen, rejected),
                                         ("rejected", len(chunk) + j, rejected, chosen)):
                for t, tok in enumerate(toks):
                    rows.append({"pair": i + j, "side": side, "t": t, "token": tokenizer.decode([tok]),
                                 "kind": token_kind(t, tok, other, prefix, eos), "log ρ": float(old[r, t]),
                                 "log π": float(new[r, t]), "Δ": float(new[r, t] - old[r, t])})
    return rows


def token_change_summary(rows: Sequence[dict]) -> list[dict]:
    """Per side and kind of token: how many tokens, the mean Δ per token, and the sum over the pairs' tokens of that
    kind divided by the number of pairs (the kinds' parts of the mean sequence log-ratio, which they add up to)."""
    pairs = len({r["pair"] for r in rows})
    out = []
    for side in ("chosen", "rejected"):
        for kind in TOKEN_KINDS:
            ds = [r["Δ"] for r in rows if r["side"] == side and r["kind"] == kind]
            if ds:
                out.append({"side": side, "kind": kind, "tokens": len(ds), "mean Δ per token": statistics.fmean(ds),
                            "Δ per pair": sum(ds) / pairs})
    return out


def pair_tokens(rows_by_run: dict[str, Sequence[dict]], pair: int) -> list[dict]:
    """One pair, token by token, next to each other for several runs scored on the same pairs (`token_changes`
    rows per run label): side, token, kind, log ρ (the same in every run) and each run's Δ."""
    keep = {label: [r for r in rows if r["pair"] == pair] for label, rows in rows_by_run.items()}
    base = next(iter(keep.values()))  # side, token, kind and log ρ do not depend on the run
    if not base:
        raise ValueError(f"no pair {pair} in the rows")
    return [{"side": r["side"], "token": r["token"], "kind": r["kind"], "log ρ": r["log ρ"],
             **{f"Δ, {label}": rows[i]["Δ"] for label, rows in keep.items()}} for i, r in enumerate(base)]


# ---------------------------------------------------------------- plots

def plot_loss_vs_margin(betas: Sequence[float] = (0.1, 0.3, 1.0), h_max: float = 20.0, n: int = 401):
    """Left: the DPO loss −log σ(β·h) and IPO's (h − 1/(2β))² against the margin h. Right: how hard a pair still
    pushes, |dL/dh| = β·σ(−β·h) for DPO."""
    import matplotlib.pyplot as plt

    from ..dpo import dpo_loss

    h = torch.linspace(-h_max, h_max, n)
    zero = torch.zeros(())
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for beta in betas:
        loss = torch.stack([dpo_loss(x, zero, zero, zero, beta) for x in h])  # the package's loss, one pair at a time
        line, = a.plot(h, loss, label=f"DPO β = {beta:g}")
        ipo = torch.stack([dpo_loss(x, zero, zero, zero, beta, "ipo") for x in h])
        a.plot(h, ipo, ls=":", color=line.get_color(), label=f"IPO τ = {beta:g}")
        b.plot(h, beta * torch.sigmoid(-beta * h), color=line.get_color(), label=f"β = {beta:g}")
    a.set(xlabel="margin h (nats)", ylabel="loss of one pair", ylim=(0, 8), title="the loss")
    b.set(xlabel="margin h (nats)", ylabel="|dL/dh| = β·σ(−βh)", title="how hard a pair still pushes (DPO)")
    a.legend(fontsize=7, ncol=2)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_dpo_training(history: list[dict], label: str = ""):
    """A DPO run's training-batch statistics: the implicit rewards of chosen and rejected, and their margin; `label`
    (e.g. "β = 1") goes into both titles."""
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, keys in ((a, (("rewards/chosen", "tab:green"), ("rewards/rejected", "tab:red"))),
                     (b, (("rewards/margins", "tab:blue"),))):
        for k, c in keys:
            ax.plot(steps, [h[k] for h in history], color=c, alpha=0.3, lw=0.8)
            ax.plot(steps, _smooth([h[k] for h in history]), color=c, label=k)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    suffix = f", {label}" if label else ""
    a.set(ylabel="β·(log π − log ρ) on the batch", title="implicit rewards of chosen and rejected" + suffix)
    b.set(ylabel="β·h on the batch", title="their margin" + suffix)
    fig.tight_layout()
    return fig


def _smooth(xs: list[float], k: int = 8) -> list[float]:
    return [statistics.fmean(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def plot_gold_vs_kl(comparison: dict, live: list[dict] | None = None):
    """Gold score against measured KL(π‖ρ) for every method and β: each seed's measurements as faint dots, the seed
    mean along the run as a line with ±1 std (over seeds) of the gold. KL on a symlog axis. `live`: points to overlay."""
    import matplotlib.pyplot as plt

    summ = summarize(comparison)
    base = [r for r in summ if r["step"] == 0][0]
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    markers = "osD^v<>"
    for method in METHODS:
        betas = sorted({r["beta"] for r in summ if r["method"] == method})
        for i, beta in enumerate(betas):
            alpha = 0.35 + 0.65 * (i + 1) / len(betas)
            seeds = [r for run in comparison["runs"] if (run["method"], run["beta"]) == (method, beta)
                     for r in run["rows"][1:]]
            ax.scatter([r["kl"] for r in seeds], [r["gold"] for r in seeds], s=6, color=COLORS[method], alpha=0.2,
                       lw=0)
            rows = [base] + [r for r in summ if r["method"] == method and r["beta"] == beta and r["step"] > 0]
            label = f"{METHODS[method]}" + ("" if method == "sft" else f", β = {beta:g}")
            ax.errorbar([r["kl"] for r in rows], [r["gold"] for r in rows], yerr=[r.get("gold_std", 0) for r in rows],
                        color=COLORS[method], marker=markers[i % 7], ms=4, lw=1, elinewidth=0.6, capsize=1.5,
                        alpha=alpha, label=label)
    if live:
        ax.plot([r["kl"] for r in live], [r["gold"] for r in live], "k*", ms=10, label="the live run above")
    ax.axhline(base["gold"], color="k", lw=0.6, ls="--")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(left=0)
    ax.set(xlabel="KL(π‖ρ), nats per completion (k1 on 256 samples)", ylabel="gold score (mean of 256 samples)",
           title=f"every method learned from the same pairs ({comparison['config']['pairs']}), judged by the gold")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig
