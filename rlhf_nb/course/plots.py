"""Plots the lessons share. Each returns the matplotlib Figure; notebooks end the cell with plt.show()."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt


def plot_history(history: Sequence[dict], keys: Sequence[str] = ("objective/scores", "objective/kl", "policy/entropy"),
                 x: str = "step", title: str | None = None, fig=None, label: str | None = None):
    """One panel per metric against `x` ('step' or 'time/elapsed_s'); pass `fig` to draw several runs on one figure."""
    if fig is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0), squeeze=False)
    axes = fig.axes
    xs = [r[x] for r in history]
    for ax, k in zip(axes, keys):
        ax.plot(xs, [r.get(k) for r in history], marker=".", label=label)
        ax.set_title(k, fontsize=10)
        ax.set_xlabel("wall seconds" if x.startswith("time/") else x)
        if x.startswith("time/"):
            mark_timing(ax)
        if label:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ lesson helpers (01-05)

def plot_token_distributions(probs: dict[str, "Sequence[float]"], labels: Sequence[str], title: str | None = None):
    """One bar panel per setting (e.g. 'T = 0.5'): probability of each of the same candidate tokens."""
    fig, axes = plt.subplots(1, len(probs), figsize=(3.3 * len(probs), 3.0), sharey=True, squeeze=False)
    for ax, (name, p) in zip(axes[0], probs.items()):
        ax.bar(range(len(labels)), [float(v) for v in p], color="tab:blue")
        ax.set_xticks(range(len(labels)), labels, rotation=70, fontsize=8)
        ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("probability")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_length_histogram(lengths: Sequence[int], max_new_tokens: int, title: str = "completion length"):
    """Histogram of completion lengths in tokens (EOS included); a bar at max_new_tokens means 'cut off'."""
    fig, ax = plt.subplots()
    ax.hist([int(n) for n in lengths], bins=range(1, max_new_tokens + 2), align="left", rwidth=0.85)
    ax.axvline(max_new_tokens, color="tab:red", ls="--", lw=1, label="max_new_tokens")
    ax.set_xlabel("tokens")
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_reward_model_training(history: dict, smooth: int = 10):
    """Bradley-Terry loss and batch accuracy per step (light) with a running mean over `smooth` steps (dark)."""
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.0))
    for ax, key, ref in ((axes[0], "loss", np.log(2)), (axes[1], "accuracy", 0.5)):
        y = np.asarray(history[key], dtype=float)
        ax.plot(y, alpha=0.3, color="tab:blue")
        if len(y) >= smooth:
            ax.plot(np.arange(smooth - 1, len(y)), np.convolve(y, np.ones(smooth) / smooth, "valid"), color="tab:blue")
        ax.axhline(ref, color="gray", ls=":", lw=1, label="chance")
        ax.set_title(f"reward model {key}", fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_score_scatter(gold: Sequence[float], predicted: Sequence[float], xlabel: str = "gold score (VADER)",
                       ylabel: str = "reward model r(x, y)", title: str | None = None):
    """Scatter of a learned score against the gold score it was trained to imitate."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.scatter([float(g) for g in gold], [float(p) for p in predicted], s=10, alpha=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_per_token(series: dict[str, Sequence[float]], title: str | None = None, xlabel: str = "completion token t",
                   ylabel: str = ""):
    """Several per-token curves of one completion on one axis (rewards, values, returns, advantages per λ …)."""
    fig, ax = plt.subplots()
    for name, ys in series.items():
        ax.plot(range(len(ys)), [float(y) for y in ys], marker=".", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_kl_estimators(samples: dict[str, "Sequence[float]"], exact: float, bins: int = 40):
    """Left: histogram of per-sample k1/k2/k3 values; right: their running means against the exact KL."""
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, xs in samples.items():
        xs = np.asarray(xs, dtype=float)
        axes[0].hist(xs, bins=bins, alpha=0.5, label=name)
        axes[1].plot(np.arange(1, len(xs) + 1), np.cumsum(xs) / np.arange(1, len(xs) + 1), label=name)
    axes[0].axvline(exact, color="k", ls="--", lw=1, label="exact KL")
    axes[0].set_title("per-sample estimates", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].axhline(exact, color="k", ls="--", lw=1, label="exact KL")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("samples")
    axes[1].set_title("running mean", fontsize=10)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_kl_controller(kls: dict[str, Sequence[float]] | Sequence[float], betas: dict[str, Sequence[float]],
                       target: float | None = None, steps: Sequence[int] | None = None):
    """Left: KL to the reference per step (one curve per controller, or one); right: β per step for each controller.
    `steps`: the x value of each entry (default 0, 1, 2, …), e.g. a run history's logged steps 1…N."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.0))
    xs = lambda ys: list(steps)[:len(ys)] if steps is not None else list(range(len(ys)))  # noqa: E731
    for name, ks in (kls.items() if isinstance(kls, dict) else [(None, kls)]):
        axes[0].plot(xs(ks), [float(k) for k in ks], label=name)
    if target is not None:
        axes[0].axhline(target, color="tab:red", ls="--", lw=1, label="target KL")
    if target is not None or isinstance(kls, dict):
        axes[0].legend(fontsize=8)
    axes[0].set_title("KL to the reference", fontsize=10)
    axes[0].set_xlabel("step")
    for name, bs in betas.items():
        axes[1].plot(xs(bs), [float(b) for b in bs], label=name)
    axes[1].set_title("β (kl_coef)", fontsize=10)
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_clipped_objective(clip_range: float = 0.2, ratio_max: float = 2.0, n: int = 201):
    """The PPO objective −policy_loss per token as a function of ρ, for A = +1 and A = −1, from `ppo.policy_loss`."""
    import torch

    from ..ppo import policy_loss

    ratios = torch.linspace(1e-3, ratio_max, n, dtype=torch.float64)
    ones = torch.ones(1, 1, dtype=torch.float64)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, a in zip(axes, (1.0, -1.0)):
        obj = [-policy_loss(torch.log(r).reshape(1, 1), torch.zeros(1, 1, dtype=torch.float64), a * ones, ones,
                            clip_range)[0].item() for r in ratios]
        ax.plot(ratios.numpy(), (a * ratios).numpy(), color="tab:gray", ls=":", label="unclipped A·ρ")
        ax.plot(ratios.numpy(), obj, color="tab:blue", lw=2, label="PPO objective")
        for x in (1 - clip_range, 1 + clip_range):
            ax.axvline(x, color="tab:red", ls="--", lw=0.8)
        ax.set_title(f"A {'> 0' if a > 0 else '< 0'}", fontsize=10)
        ax.set_xlabel("ratio ρ = π_new / π_old")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("objective per token")
    fig.tight_layout()
    return fig


def plot_ratio_steps(spread: Sequence[dict], clip_range: float = 0.2):
    """Lesson 05: per optimizer step of one update (update_probe.ratio_spread), box plots of ρ over the step's own
    tokens before its step (what its loss saw) and after it; whiskers at the min and max."""
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(9, 3.4))
    steps = range(1, len(spread) + 1)
    for key, shift, color in (("before", -0.18, "tab:blue"), ("after", 0.18, "tab:orange")):
        ax.boxplot([[float(v) for v in s[key]] for s in spread], positions=[k + shift for k in steps], widths=0.3,
                   whis=(0, 100), patch_artist=True, boxprops={"facecolor": color, "alpha": 0.5},
                   medianprops={"color": "black"}, manage_ticks=False)
    for x in (1 - clip_range, 1 + clip_range):
        ax.axhline(x, color="tab:red", ls="--", lw=0.8)
    ax.set_xticks(list(steps), [str(k) for k in steps])
    ax.set_xlabel("optimizer step of the update (epoch by epoch, minibatch by minibatch)")
    ax.set_ylabel("ρ = π_θ / π_old")
    ax.legend([Patch(color="tab:blue", alpha=0.5), Patch(color="tab:orange", alpha=0.5)],
              ["before its step (its loss sees this)", "after its step"], fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_adam_moves(curves: dict[str, Sequence[dict]], eps: float):
    """Lesson 05: |Δw|/lr against |g| (update_probe.adam_moves rows), median and 10–90 % band per curve, beside Adam's
    first-update value |g|/(|g| + ε)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for label, rows in curves.items():
        g = [r["|g|"] for r in rows]
        line, = ax.plot(g, [r["|Δw|/lr: median"] for r in rows], marker=".", label=f"{label}: median")
        ax.fill_between(g, [r["p10"] for r in rows], [r["p90"] for r in rows], color=line.get_color(), alpha=0.2)
    lo = min(r["|g|"] for rows in curves.values() for r in rows)
    hi = max(r["|g|"] for rows in curves.values() for r in rows)
    x = np.geomspace(lo, hi, 60)
    ax.plot(x, x / (x + eps), color="black", ls="--", lw=1, label="|g| / (|g| + ε)")
    ax.axvline(eps, color="tab:gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("|g| of a weight (after the gradient-norm clip)")
    ax.set_ylabel("|Δw| / lr")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_update_k3(curves: dict[str, dict[int, Sequence[float]]]):
    """Lesson 05: one panel per seed, the batch's mean k3 after each optimizer step of the update, one line per RLHF
    step (curves[panel][step] = values, as update_probe.run_recorded's "k3 curve")."""
    fig, axes = plt.subplots(1, len(curves), figsize=(3.4 * len(curves), 3.2), sharey=True, squeeze=False)
    for ax, (panel, by_step) in zip(axes[0], curves.items()):
        for step, ys in by_step.items():
            ax.plot(range(1, len(ys) + 1), [float(y) for y in ys], marker=".", lw=2.5 if step == 1 else 1,
                    label=f"RLHF step {step}")
        ax.set_yscale("log")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("optimizer step of the update")
    axes[0][0].set_ylabel("batch mean k3 after it")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


LABELS = {"rlhf_nb": "rlhf_nb GRPO", "trl": "TRL GRPO", "rlhf_nb_ppo": "rlhf_nb PPO (gae)"}


def plot_comparison(runs: dict[str, list[dict[str, float]]], path: str | Path | None = None):
    """Reward and per-sequence KL against step and against wall seconds, one line per run; saved to `path` if given.

    runs: {label: benchmark rows (reward, kl_seq, step, elapsed_s)}. KL is kl_seq: rlhf_nb's Σ_t k1 per sequence,
    TRL's token-mean [ratio·]k3 times the mean completion length (different estimators: compare shapes)."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 5.4), squeeze=False)
    for label, rows in runs.items():
        for col, x in enumerate(("step", "elapsed_s")):
            xs = [r[x] for r in rows]
            axes[0][col].plot(xs, [r["reward"] for r in rows], marker=".", label=label)
            axes[1][col].plot(xs, [r["kl_seq"] for r in rows], marker=".", label=label)
    for col in range(2):  # symlog keeps both runs readable whatever their KL scales
        axes[1][col].set_yscale("symlog", linthresh=0.1)
    for col, xl in enumerate(("step", "wall seconds since training began")):
        axes[0][col].set_title(f"mean sentiment score vs {xl.split()[0]}", fontsize=10)
        axes[1][col].set_title(f"KL per sequence vs {xl.split()[0]}", fontsize=10)
        axes[1][col].set_xlabel(xl)
    for row in axes:
        mark_timing(row[1])  # the wall-seconds column
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return fig


# ------------------------------------------------------------------ lesson 06: seed bands and the optimum's frontier

def plot_bands(runs: dict[str, Sequence[Sequence[dict]]], keys: Sequence[str] = ("objective/scores", "objective/kl"),
               x: str = "step", title: str | None = None, logy: Sequence[str] = ()):
    """One panel per metric: for each label, the mean over its seeds' histories (line) and their min–max (band)."""
    import numpy as np

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for label, histories in runs.items():
        n = min(len(h) for h in histories)
        xs = [r[x] for r in histories[0][:n]]
        for ax, k in zip(axes[0], keys):
            ys = np.array([[float(r[k]) for r in h[:n]] for h in histories])  # (seeds, steps)
            line, = ax.plot(xs, ys.mean(0), label=f"{label} ({len(histories)} seeds)")
            ax.fill_between(xs, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2, lw=0)
    for ax, k in zip(axes[0], keys):
        ax.set_title(k, fontsize=10)
        ax.set_xlabel(x)
        if x.startswith("time/"):  # wall-clock x: the fingerprint reads y only
            mark_timing(ax)
        if k in logy:
            ax.set_yscale("symlog", linthresh=1.0)
    axes[0][-1].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_frontier(frontier: dict[float, dict], points: Sequence[dict] = (), marked: Sequence[float] = (),
                  title: str | None = None):
    """The optimum's (KL, score) curve over β, with `marked` β labelled on it, and runs as points.

    frontier: {β: {"kl", "score"}} (rlhf_nb.optimum.frontier); points: dicts with kl, score, label (one colour per
    label; several seeds of one label share it)."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    betas = sorted(frontier)
    ax.plot([frontier[b]["kl"] for b in betas], [frontier[b]["score"] for b in betas], color="k", lw=1.5,
            label="optimum π* (β from right to left)")
    for i, b in enumerate(sorted(marked)):
        f = frontier[b]
        ax.plot([f["kl"]], [f["score"]], "k*", ms=9)
        # neighbouring βs sit close on the curve: alternate their labels above and below it
        ax.annotate(f"β={b:g}", (f["kl"], f["score"]), textcoords="offset points",
                    xytext=(-8, 8) if i % 2 else (4, -13), fontsize=8)
    colours: dict[str, str] = {}
    for p in points:
        first = p["label"] not in colours
        c = colours.setdefault(p["label"], f"C{len(colours)}")
        ax.plot([p["kl"]], [p["score"]], "o", color=c, alpha=0.8, label=p["label"] if first else None)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("KL(π‖ρ) per sequence, nats")
    ax.set_ylabel("mean score E[r]")
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_reference_refresh(fixed: Sequence, refreshed: Sequence, title: str | None = None):
    """Lesson 06: runs with a fixed and with a refreshed reference (`experiments.run_refresh` results, one per seed).
    Left: the KL the trainer logs (to the reference in use), mean and min–max over seeds. Right: the distance from
    the original model π_0: each seed's measured KL(π‖π_0) (markers, refreshed joined by thin lines) and the fixed
    runs' logged KL, which is to π_0 by construction (seed mean, 5-step running mean). Dotted lines: the refreshes."""
    import numpy as np

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    every = next((r.every for r in refreshed if r.every), None)
    for label, runs, c in (("fixed reference", fixed, "C0"), (f"refreshed every {every} steps", refreshed, "C3")):
        n = min(len(r.history) for r in runs)
        xs = [h["step"] for h in runs[0].history[:n]]
        ys = np.array([[h["objective/kl"] for h in r.history[:n]] for r in runs])  # (seeds, steps)
        a.plot(xs, ys.mean(0), color=c, label=f"{label} ({len(runs)} seeds)")
        a.fill_between(xs, ys.min(0), ys.max(0), color=c, alpha=0.2, lw=0)
        if runs is fixed:
            mean = ys.mean(0)
            run5 = [mean[max(0, i - 4):i + 1].mean() for i in range(len(mean))]  # 5-step running mean
            b.plot(xs, run5, color=c, lw=1, label=f"{label}: logged KL = KL to π_0 (5-step mean)")
        for i, r in enumerate(runs):
            steps = sorted(r.kl_to_original)
            b.plot(steps, [r.kl_to_original[s] for s in steps], marker="o", ms=4, color=c,
                   lw=0.8 if runs is refreshed else 0, alpha=0.8, label=f"{label}: measured (each seed)" if i == 0 else None)
    last = max(h["step"] for r in refreshed for h in r.history)
    for ax in (a, b):
        for s in range(every, last + 1, every) if every else ():
            ax.axvline(s, color="k", lw=0.5, ls=":")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    a.set(ylabel="nats per completion", title="logged objective/kl: to the reference in use")
    b.set(ylabel="nats per completion", title="KL(π‖π_0): to the original model")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ what nbval compares of a figure

def _numbers(values) -> str:
    """Values as text, 6 significant digits; a value below 1e-6 of the largest in its array counts as 0 (float noise)."""
    import numpy as np

    try:
        a = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan).ravel()
    except (TypeError, ValueError):  # dates, strings: their text is stable as it is
        return repr(np.asarray(values).ravel().tolist())
    finite = np.isfinite(a)
    top = float(np.abs(a[finite]).max()) if finite.any() else 0.0
    a = np.where(finite & (np.abs(a) < 1e-6 * top), 0.0, a) + 0.0  # + 0.0 turns -0.0 into 0.0
    return ",".join(f"{v:.6g}" for v in a.tolist())


def _fixed_ticklabels(axis) -> list[str]:
    """Tick labels only where they are data (set by hand or categories): automatic ticks depend on the figure size."""
    from matplotlib.category import StrCategoryLocator
    from matplotlib.ticker import FixedLocator

    if isinstance(axis.get_major_locator(), (FixedLocator, StrCategoryLocator)):
        return [t.get_text() for t in axis.get_majorticklabels()]
    return []


TIMING = "rlhf_nb:timing-x"  # the gid of an axes whose x axis is wall-clock time


def mark_timing(ax):
    """Mark an axes whose x axis is wall-clock time: x changes every run, so `figure_fingerprint` hashes only y."""
    ax.set_gid(TIMING)
    return ax


def figure_fingerprint(fig) -> str:
    """12 hex digits of a hash of what the figure shows, not how it is rendered: each axes' lines, collections,
    patches, images and texts in data coordinates (6 significant digits), limits, scales, titles, labels, legends and
    hand-set tick labels. The same data gives the same hash at any size or dpi; a moved point changes it.
    On an axes marked by `mark_timing` only the y coordinates count (its x is wall-clock seconds)."""
    import hashlib

    import numpy as np

    parts = [f"suptitle {t.get_text()!r}" for t in fig.texts]
    for ax in fig.axes:
        timing = ax.get_gid() == TIMING

        def xy(points):  # (N, 2) data coordinates -> the text hashed: y alone on a timing axes
            points = np.asarray(points, dtype=float).reshape(-1, 2)
            return _numbers(points[:, 1] if timing else points)

        parts.append(f"axes {type(ax).__name__} title {[ax.get_title(loc) for loc in ('left', 'center', 'right')]!r} "
                     f"x {ax.get_xlabel()!r} {ax.get_xscale()} {'wall-clock' if timing else _numbers(ax.get_xlim())} "
                     f"{_fixed_ticklabels(ax.xaxis)!r} y {ax.get_ylabel()!r} {ax.get_yscale()} "
                     f"{_numbers(ax.get_ylim())} {_fixed_ticklabels(ax.yaxis)!r}")
        for line in ax.lines:
            parts.append(f"line {line.get_label()!r} {xy(line.get_xydata())}")
        for c in ax.collections:
            array = c.get_array()
            parts.append(f"{type(c).__name__} {c.get_label()!r} offsets {xy(c.get_offsets())} "
                         f"paths {[xy(p.vertices) for p in c.get_paths()]} "
                         f"array {_numbers(array) if array is not None else None}")
        for p in ax.patches:  # bars, histogram bins, polygons: their corners in data coordinates
            parts.append(f"{type(p).__name__} {xy(p.get_patch_transform().transform(p.get_path().vertices))}")
        for im in ax.images:
            parts.append(f"image {_numbers(im.get_array())} extent {_numbers(im.get_extent())}")
        for t in ax.texts:
            parts.append(f"text {t.get_text()!r} at {xy(t.get_position())}")
        legend = ax.get_legend()
        if legend is not None:
            parts.append(f"legend {[t.get_text() for t in legend.get_texts()]!r}")
    for legend in fig.legends:
        parts.append(f"figure legend {[t.get_text() for t in legend.get_texts()]!r}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def figure_text(fig) -> str:
    """The text/plain line a notebook stores for a figure (`rlhf_nb.course.start` registers it): nbval compares it."""
    return f"<Figure {len(fig.axes)} axes · data {figure_fingerprint(fig)}>"


# ------------------------------------------------------------------ lesson 08: reward over-optimisation

def plot_vs_d(curves: dict[str, Sequence[Sequence[dict]]], keys: Sequence[str] = ("proxy_gain_sd", "gold_gain"),
              fits: dict | None = None, x: str = "d", title: str | None = None, titles: dict | None = None):
    """One panel per key against d = sqrt(KL); curves = {label: one list of rows per seed}.

    Seeds on a shared x grid (best-of-n's n) are drawn as a mean line and a min–max band; seeds whose x differs
    (RL's measured KL) as one thin line each. fits = {label: GaoFit}, drawn dashed on the last panel."""
    import numpy as np

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.3), squeeze=False)
    for label, runs in curves.items():
        n = min(len(r) for r in runs)
        xs = np.array([[float(row[x]) for row in r[:n]] for r in runs])  # (seeds, points)
        shared = np.allclose(xs, xs[0])
        color = None
        for ax, k in zip(axes[0], keys):
            ys = np.array([[float(row[k]) for row in r[:n]] for r in runs])
            if shared:
                line, = ax.plot(xs[0], np.nanmean(ys, 0), marker=".", color=color, label=f"{label} ({len(runs)} seeds)")
                ax.fill_between(xs[0], np.nanmin(ys, 0), np.nanmax(ys, 0), color=line.get_color(), alpha=0.2, lw=0)
            else:
                for j, (xr, yr) in enumerate(zip(xs, ys)):
                    line, = ax.plot(xr, yr, marker=".", ms=4, lw=0.4, alpha=0.6, color=color,
                                    label=f"{label} ({len(runs)} seeds)" if j == 0 else None)
                    color = line.get_color()
            color = line.get_color()
        if fits and label in fits:
            grid = np.linspace(0, xs.max(), 200)
            axes[0][-1].plot(grid, fits[label].predict(grid).numpy(), ls="--", lw=1.5, color=color)
    for ax, k in zip(axes[0], keys):
        ax.set_title((titles or {}).get(k, k), fontsize=10)
        ax.set_xlabel("d = sqrt(KL(π‖π_init))" if x == "d" else x)
        ax.axhline(0, color="grey", lw=0.6)
    axes[0][-1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_fit_residuals(points: dict[str, tuple[Sequence[float], Sequence[float]]], title: str | None = None):
    """Residuals (measured − fitted) against d, one colour per label: a good fit scatters around 0 with no shape."""
    fig, ax = plt.subplots(figsize=(6, 2.8))
    for label, (d, r) in points.items():
        ax.scatter([float(v) for v in d], [float(v) for v in r], s=8, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("d = sqrt(KL(π‖π_init))")
    ax.set_ylabel("measured − fitted gold gain")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
