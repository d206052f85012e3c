"""Reward over-optimisation (Gao, Schulman & Hilton 2022): optimise a proxy reward model, watch the gold.

    best-of-n   pick the proxy's favourite of n base samples;  KL_bon(n) = log n - (n - 1)/n  exactly
    RL          PPO on the proxy (rlhf_nb.train), the policy scored by the gold every few steps
    d           sqrt(KL(pi || pi_init)), the distance both are plotted against
    Gao's fits  best-of-n: R(d) = d (alpha - beta d);   RL: R(d) = d (alpha - beta log d)
                R = gold(d) - gold(0), fitted by least squares (both forms are linear in alpha, beta)

The proxies live in `rlhf_nb/assets/proxy-rm-{250,1000,4000}/` (`make proxies`); the committed sweep that the
lesson and docs/overoptimisation.md read is `rlhf_nb/assets/overopt-sweep.json` (`make overopt`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .gold import gold_text_scores
from .text import join_text

ASSETS = Path(__file__).resolve().parent / "assets"
PROXY_SIZES = (250, 1000, 4000)  # preference pairs each proxy was trained on
SWEEP_PATH = ASSETS / "overopt-sweep.json"
BON_NS = tuple(2 ** k for k in range(12))  # 1, 2, 4, ..., 2048
FORMS = ("bon", "rl")

Judge = Callable[[list[str], list[str]], torch.Tensor]


def proxy_dir(n_pairs: int) -> str:
    """Folder of the committed proxy reward model trained on `n_pairs` gold-labelled pairs."""
    return str(ASSETS / f"proxy-rm-{n_pairs}")


def proxy_pairs(n_pairs: int, split: str = "train") -> list[dict]:
    """The preference pairs a proxy was trained on (`train`) or evaluated on (`eval`, the same 500 for every proxy)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    with open(Path(proxy_dir(n_pairs), f"{split}_pairs.jsonl")) as f:
        return [json.loads(line) for line in f]


def load_proxy_metrics(n_pairs: int) -> dict:
    """metrics.json of a committed proxy: held-out accuracy against the gold, how its pairs were made."""
    return json.loads(Path(proxy_dir(n_pairs), "metrics.json").read_text())


def load_sweep(path: str | Path = SWEEP_PATH) -> dict:
    """The committed best-of-n and RL curves of `make overopt`."""
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------- 1. best-of-n

def _check_n(n, name: str = "n") -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name} must be an int >= 1, got {n!r}")
    return n


def kl_bon(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1)/n nats, exact for a continuous proxy (no ties)."""
    n = _check_n(n)
    return math.log(n) - (n - 1) / n


def bon_weights(N: int, n: int) -> torch.Tensor:
    """(N,) float64: P(the i-th smallest of N values is the largest of n drawn without replacement) = C(i-1, n-1)/C(N, n).

    Averaging with these weights is the unbiased best-of-n estimator Gao et al. use: every n-subset of N samples at once.
    """
    N, n = _check_n(N, "N"), _check_n(n)
    if n > N:
        raise ValueError(f"n must be <= N (the samples per prompt), got n={n}, N={N}")
    i = torch.arange(1, N + 1, dtype=torch.float64)
    logw = torch.full((N,), -math.inf, dtype=torch.float64)
    ok = i >= n
    # log C(i-1, n-1) - log C(N, n), in log space: C(4095, 255) overflows a float64
    log_c_N_n = math.lgamma(N + 1) - math.lgamma(n + 1) - math.lgamma(N - n + 1)
    logw[ok] = torch.lgamma(i[ok]) - math.lgamma(n) - torch.lgamma(i[ok] - n + 1) - log_c_N_n
    return logw.exp()


def best_of_n(proxy: torch.Tensor, gold: torch.Tensor, n: int) -> tuple[float, float]:
    """(proxy, gold) of the proxy's best of n samples, averaged over prompts. proxy, gold: (P, N) or (N,), N samples per prompt."""
    proxy, gold = torch.as_tensor(proxy, dtype=torch.float64), torch.as_tensor(gold, dtype=torch.float64)
    if proxy.shape != gold.shape or proxy.dim() not in (1, 2) or proxy.numel() == 0:
        raise ValueError(f"proxy and gold must be same-shape (P, N) or (N,) tensors, got {tuple(proxy.shape)} and "
                         f"{tuple(gold.shape)}")
    proxy, gold = proxy.reshape(-1, proxy.shape[-1]), gold.reshape(-1, gold.shape[-1])  # (P, N)
    w = bon_weights(proxy.shape[1], n)  # (N,) by ascending proxy rank
    order = proxy.argsort(dim=1, stable=True)  # ties (never seen with a float proxy) resolve by sample index
    best_proxy = (proxy.gather(1, order) * w).sum(1)  # (P,)
    best_gold = (gold.gather(1, order) * w).sum(1)  # (P,)
    return float(best_proxy.mean()), float(best_gold.mean())


def best_of_n_curve(proxy: torch.Tensor, gold: torch.Tensor, ns: Sequence[int] = BON_NS) -> list[dict]:
    """One row per n: n, KL_bon, d = sqrt(KL_bon), and the proxy and gold of best-of-n."""
    rows = []
    for n in ns:
        p, g = best_of_n(proxy, gold, n)
        kl = kl_bon(n)
        rows.append({"n": n, "kl": kl, "d": math.sqrt(kl), "proxy": p, "gold": g})
    return rows


@torch.no_grad()
def base_completions(prompts: Sequence[str], n_per_prompt: int, max_new_tokens: int, seed: int, model=None,
                     tokenizer=None, batch_size: int = 512) -> list[list[str]]:
    """`n_per_prompt` completions of each prompt from the base policy (T = 1, the RL rollout sampler), seeded:
    one list per prompt."""
    from .policy import load_policy, sample_batched
    _check_n(n_per_prompt, "n_per_prompt")
    if model is None or tokenizer is None:
        model, tokenizer = load_policy()
    flat = [p for p in prompts for _ in range(n_per_prompt)]
    comps = sample_batched(model, tokenizer, flat, max_new_tokens, torch.Generator().manual_seed(seed), batch_size)
    return [comps[j:j + n_per_prompt] for j in range(0, len(comps), n_per_prompt)]


def score_samples(prompts: Sequence[str], completions: list[list[str]], judges: dict[str, Judge]) -> dict[str, torch.Tensor]:
    """(P, N) scores of every completion by each judge, plus the gold (key "gold")."""
    flat = [(p, c) for p, cs in zip(prompts, completions) for c in cs]
    shape = (len(completions), len(completions[0]))
    # a tiny model repeats itself: each distinct (prompt, completion) is scored once, then spread back
    unique = list(dict.fromkeys(flat))
    where = {pc: i for i, pc in enumerate(unique)}
    index = torch.tensor([where[pc] for pc in flat])
    up, uc = [p for p, _ in unique], [c for _, c in unique]
    out = {name: j(up, uc).double()[index].reshape(shape) for name, j in judges.items()}
    gold = torch.tensor(gold_text_scores([join_text(p, c) for p, c in unique]), dtype=torch.float64)
    out["gold"] = gold[index].reshape(shape)
    return out


# ---------------------------------------------------------------- 2. Gao's functional forms

def gao_form(d: torch.Tensor, alpha: float, beta: float, form: str) -> torch.Tensor:
    """R(d) = d (alpha - beta d) for best-of-n, d (alpha - beta log d) for RL (R(0) = 0)."""
    d = torch.as_tensor(d, dtype=torch.float64)
    if form == "bon":
        return d * (alpha - beta * d)
    if form == "rl":
        return d * alpha - beta * torch.special.xlogy(d, d)  # d log d -> 0 at d = 0
    raise ValueError(f"form must be one of {', '.join(FORMS)}; got {form!r}")


@dataclass
class GaoFit:
    """A least-squares fit of one of Gao's forms to gold gains R = gold(d) - gold(0)."""

    form: str
    alpha: float
    beta: float
    rmse: float
    n_points: int
    d_max: float  # the largest d measured

    @property
    def peak_d(self) -> float:
        """argmax_d R(d): alpha/(2 beta) for best-of-n, exp(alpha/beta - 1) for RL; inf when beta <= 0 (no peak)."""
        if self.beta <= 0:
            return math.inf
        if self.form == "bon":
            return self.alpha / (2 * self.beta)
        return math.exp(min(self.alpha / self.beta - 1, 700.0))

    @property
    def peak_gain(self) -> float:
        """R at the peak: alpha^2/(4 beta) for best-of-n, beta * d* for RL."""
        if self.beta <= 0:
            return math.inf
        return float(gao_form(torch.tensor(self.peak_d), self.alpha, self.beta, self.form))

    @property
    def fall(self) -> float:
        """How far the fitted gold falls from its peak to the largest measured d (0 if the peak lies beyond it)."""
        if self.peak_d >= self.d_max:
            return 0.0
        return self.peak_gain - float(self.predict(torch.tensor(self.d_max)))

    def predict(self, d: torch.Tensor) -> torch.Tensor:
        return gao_form(d, self.alpha, self.beta, self.form)

    def summary(self, digits: int = 3) -> dict:
        """alpha, beta, peak d, peak gain, fall and rmse, rounded for a table."""
        r = lambda x: round(x, digits) if math.isfinite(x) else x  # noqa: E731
        return {"form": self.form, "alpha": r(self.alpha), "beta": r(self.beta), "peak_d": r(self.peak_d),
                "peak_kl": r(self.peak_d ** 2), "peak_gain": r(self.peak_gain), "fall": r(self.fall),
                "rmse": r(self.rmse), "n_points": self.n_points}

    def to_dict(self) -> dict:
        return asdict(self)


def fit_gao(d: Sequence[float], gain: Sequence[float], form: str) -> GaoFit:
    """Least squares of gain ≈ R(d; alpha, beta) through the origin. Both forms are linear in (alpha, beta):
    bon: R = alpha d - beta d^2;  rl: R = alpha d - beta d log d."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}; got {form!r}")
    d = torch.as_tensor(d, dtype=torch.float64).flatten()
    y = torch.as_tensor(gain, dtype=torch.float64).flatten()
    if d.shape != y.shape or d.numel() < 2:
        raise ValueError(f"d and gain must hold the same number (>= 2) of points, got {d.numel()} and {y.numel()}")
    if not (torch.isfinite(d).all() and torch.isfinite(y).all()) or (d < 0).any():
        raise ValueError("d must be finite and >= 0, gain finite")
    second = d * d if form == "bon" else torch.special.xlogy(d, d)
    X = torch.stack([d, -second], dim=1)  # (N, 2)
    coef = torch.linalg.lstsq(X, y[:, None], driver="gelsd").solution.squeeze(1)  # (2,)
    resid = y - X @ coef
    return GaoFit(form, float(coef[0]), float(coef[1]), float(resid.pow(2).mean().sqrt()), int(d.numel()),
                  float(d.max()))


# ---------------------------------------------------------------- 3. an RL run scored along the way

@torch.no_grad()
def score_policy(state, prompts: Sequence[str], seed: int, judges: dict[str, Judge] | None = None,
                 base_std: dict[str, float] | None = None) -> dict[str, float]:
    """Sample once per prompt from the current policy (own generator) and measure what the lesson plots.

    kl: mean over samples of sum_t (log pi - log pi_init), k1 (unbiased); proxy: the run's own reward; gold and
    well_formed (share the grammar accepts); pref_accuracy: how often the run's reward orders consecutive pairs
    of samples (same prompt) like the gold, over untied pairs (nan if none); with `judges` (other reward models,
    each z-scored by its `base_std`): disagreement = mean over samples of the std across judges.
    """
    from .policy import sample_with_kl
    cfg = state.cfg
    g = torch.Generator(device=state.device).manual_seed(seed)
    ro, kl = sample_with_kl(state.policy, state.ref, state.tokenizer, list(prompts), cfg.max_new_tokens,
                            cfg.temperature, generator=g)  # kl: (B,)
    proxy = state.reward_fn(ro.prompts, ro.completions).double().cpu()  # (B,)
    texts = [join_text(p, c) for p, c in zip(ro.prompts, ro.completions)]
    gold = torch.tensor(gold_text_scores(texts), dtype=torch.float64)  # (B,)
    out = {"kl": float(kl.mean()), "proxy": float(proxy.mean()), "gold": float(gold.mean()),
           "well_formed": float((gold > -1).double().mean()), "pref_accuracy": pair_accuracy(proxy, gold)}
    if judges:
        z = torch.stack([(j(ro.prompts, ro.completions).double() / (base_std or {}).get(k, 1.0))
                         for k, j in judges.items()])  # (J, B)
        out["disagreement"] = float(z.std(0).mean())
    return out


def pair_accuracy(score: torch.Tensor, gold: torch.Tensor) -> float:
    """Share of pairs (samples 2i, 2i+1) with different gold that `score` orders like the gold; nan if none."""
    s, g = torch.as_tensor(score).double(), torch.as_tensor(gold).double()
    m = (s.numel() // 2) * 2
    ds, dg = s[0:m:2] - s[1:m:2], g[0:m:2] - g[1:m:2]
    untied = dg != 0
    return float(((ds * dg) > 0)[untied].double().mean()) if untied.any() else math.nan


def rl_curve(cfg, eval_every: int = 5, eval_prompts: Sequence[str] | None = None, eval_seed: int = 4321,
             judges: dict[str, Judge] | None = None, base_std: dict[str, float] | None = None,
             callback: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Train with rlhf_nb.train's ppo_step for cfg.total_steps steps; score the policy at step 0 and every `eval_every`.

    Each row: step, kl, d = sqrt(max(kl, 0)), proxy, gold, well_formed, pref_accuracy (and disagreement), plus the
    step's training metrics objective/scores, objective/kl and objective/gold_scores when there are any.
    """
    from .corpus import PROMPTS
    from .train import ppo_step, setup
    _check_n(eval_every, "eval_every")
    prompts = list(eval_prompts) if eval_prompts is not None else [p for p in PROMPTS for _ in range(4)]
    state = setup(cfg)
    rows, train_m = [], {}
    for step in range(cfg.total_steps + 1):
        if step % eval_every == 0 or step == cfg.total_steps:
            row = {"step": step, **score_policy(state, prompts, eval_seed, judges, base_std), **train_m}
            row["d"] = math.sqrt(max(row["kl"], 0.0))
            rows.append(row)
            if callback is not None:
                callback(step, row)
        if step < cfg.total_steps:
            m, _ = ppo_step(state)
            train_m = {k: m[k] for k in ("objective/scores", "objective/kl", "objective/gold_scores") if k in m}
    return rows


# ---------------------------------------------------------------- 4. reading the committed sweep

def with_gains(rows: list[dict], keys: Sequence[str] = ("proxy", "gold")) -> list[dict]:
    """Rows with `<key>_gain` = value - value at the first row (d = 0: n = 1, or step 0), as Gao's fits want."""
    return [{**r, **{f"{k}_gain": r[k] - rows[0][k] for k in keys}} for r in rows]


def sweep_runs(sweep: dict, method: str, proxy: int, kl_coef: float = 0.0, algo: str = "ppo") -> list[list[dict]]:
    """One list of rows (with gains) per seed: best-of-n (`method="bon"`) or RL (`"rl"`, at this kl_coef)."""
    if method == "bon":
        runs = list(sweep["bon"][str(proxy)].values())
    elif method == "rl":
        runs = [r["rows"] for r in sweep["rl"]
                if r["proxy"] == proxy and r["kl_coef"] == kl_coef and r.get("algo", "ppo") == algo]
    else:
        raise ValueError(f"method must be 'bon' or 'rl', got {method!r}")
    if not runs:
        raise ValueError(f"the sweep has no {method} runs for proxy {proxy}" + (f", kl_coef {kl_coef}" if method == "rl" else ""))
    sd = sweep.get("proxies", {}).get(str(proxy), {}).get("reward_std_on_base", 1.0)
    # proxy_gain_sd: the proxy's gain in its own standard deviations on base samples, comparable across proxies
    return [[{**r, "proxy_gain_sd": r["proxy_gain"] / sd} for r in with_gains(rows)] for rows in runs]


def fit_runs(runs: list[list[dict]], form: str, key: str = "gold_gain") -> GaoFit:
    """Gao's form fitted to every (d, gain) point of every seed, pooled."""
    return fit_gao([r["d"] for rows in runs for r in rows], [r[key] for rows in runs for r in rows], form)


def observed_peak(runs: list[list[dict]], key: str = "gold_gain") -> dict:
    """Seed-mean curve (rows aligned by index: same n or same step): where `key` peaks, and how far it falls by the end."""
    n = min(len(rows) for rows in runs)
    mean = lambda k, i: sum(rows[i][k] for rows in runs) / len(runs)  # noqa: E731
    ys = [mean(key, i) for i in range(n)]
    i = max(range(n), key=ys.__getitem__)
    lo = min(rows[i][key] for rows in runs)
    hi = max(rows[i][key] for rows in runs)
    return {"index": i, "d": mean("d", i), "kl": mean("kl", i), "gain": ys[i], "gain_min": lo, "gain_max": hi,
            "fall": ys[i] - ys[n - 1], "d_last": mean("d", n - 1)}


def fit_table(sweep: dict) -> list[dict]:
    """Per method, proxy and KL coefficient: Gao's fit (alpha, beta, peak d, peak gain, fall, rmse) and the observed peak."""
    out = []
    for k in sweep["config"]["proxies"]:
        cases = [("bon", None)] + [("rl", b) for b in sweep["config"]["kl_coefs"]]
        for method, b in cases:
            runs = sweep_runs(sweep, method, k, b or 0.0)
            fit = fit_runs(runs, method)
            obs = observed_peak(runs)
            out.append({"method": method, "proxy": k, "kl_coef": b, "seeds": len(runs), **fit.summary(),
                        "observed_peak_d": round(obs["d"], 3), "observed_peak_gain": round(obs["gain"], 3),
                        "observed_fall": round(obs["fall"], 3), "d_last": round(obs["d_last"], 3)})
    return out
