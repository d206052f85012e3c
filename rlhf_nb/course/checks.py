"""Every lesson's exercise checkers, one verdict format: `check_…(answer) -> bool` prints a verdict and, when wrong, why.

Each checker builds its own small deterministic inputs, runs the learner's function (or reads the learner's value)
and compares it with the package's own helper. A function that still raises NotImplementedError (or returns
None) counts as "not attempted yet", so an untouched `# YOUR CODE HERE` stub never breaks a notebook run.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

OK, BAD, TODO = "✅ correct", "❌ wrong", "⏳ not attempted yet"


class _NotAttempted(Exception):
    pass


def _verdict(ok: bool, name: str, why: str) -> bool:
    print(f"{OK if ok else BAD} — {name}: {why}")
    return ok


def _call(fn: Callable, *args):
    """Call the learner's function; None or NotImplementedError mean 'not attempted', other errors are reported."""
    if fn is None:
        raise _NotAttempted
    try:
        out = fn(*args)
    except NotImplementedError:
        raise _NotAttempted from None
    if out is None:
        raise _NotAttempted
    return out


def _checker(name: str):
    """Decorator: turn _NotAttempted into a 'not attempted' line and any other exception into a wrong verdict."""
    def wrap(body: Callable[..., tuple[bool, str]]) -> Callable[..., bool]:
        def run(*args, **kwargs) -> bool:
            try:
                ok, why = body(*args, **kwargs)
            except _NotAttempted:
                print(f"{TODO} — {name}: fill in the cell marked YOUR CODE HERE, then run it again")
                return False
            except Exception as e:  # the learner's code raised: say what, not a traceback
                return _verdict(False, name, f"your code raised {e.__class__.__name__}: {e}")
            return _verdict(ok, name, why)
        run.__name__, run.__doc__ = body.__name__, body.__doc__
        return run
    return wrap


def _tensor(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _close(got: torch.Tensor, want: torch.Tensor, what: str, atol: float = 1e-5) -> tuple[bool, str]:
    if tuple(got.shape) != tuple(want.shape):
        return False, f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    err = (got.double() - want.double()).abs()
    err = torch.where(torch.isnan(err), torch.full_like(err, float("inf")), err)
    if float(err.max()) > atol:
        i = int(err.flatten().argmax())
        return False, (f"{what} differs from the package by up to {float(err.max()):.4g} "
                       f"(entry {i}: got {float(got.flatten()[i]):.4f}, expected {float(want.flatten()[i]):.4f})")
    return True, f"{what} matches the package to within {atol:g}"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ lesson 00: the smoke run

@_checker("what the KL penalty cost")
def check_kl_cost(answer: float, history: Sequence[dict], kl_coef: float, last: int = 5) -> tuple[bool, str]:
    """answer: how much score per completion the KL penalty took, on average over the run's last `last` steps:
    β · mean KL = mean (objective/scores − objective/rlhf_reward)."""
    if answer is None:
        raise _NotAttempted
    tail = list(history)[-last:]
    mean = lambda key: sum(float(r[key]) for r in tail) / len(tail)  # noqa: E731
    kl, score, kept = mean("objective/kl"), mean("objective/scores"), mean("objective/rlhf_reward")
    want, a = kl_coef * kl, float(answer)
    close = lambda x: math.isclose(a, x, rel_tol=0.01, abs_tol=5e-4)  # noqa: E731 (2 printed digits of the KL)
    if close(want):
        share = f" ({want / score:.0%} of it)" if score > 0 else ""
        return True, (f"β · KL = {kl_coef:g} × {kl:.2f} = {want:.3f} of the score {score:.3f} per completion{share}; "
                      f"what is left, score − β·KL = {kept:.3f}, is objective/rlhf_reward")
    hint = ""
    if close(kl):
        hint = f"that is the KL itself, in nats; the penalty is in score units: multiply it by β = {kl_coef:g}"
    elif close(kl_coef * float(tail[-1]["objective/kl"])):
        hint = f"that is the last step alone; average β·KL over the last {last} steps"
    elif close(-want):
        hint = "the penalty is subtracted from the score; give what it took away, a positive number"
    elif close(kept):
        hint = "that is what the completions kept after the penalty (objective/rlhf_reward), not what it took"
    elif close(score):
        hint = "that is the score itself; the penalty is the gap between the score and objective/rlhf_reward"
    why = f"you said {a:.4f}; β · (mean KL over the last {last} steps) = {kl_coef:g} × {kl:.4f} = {want:.4f}"
    return False, why + (f" — {hint}" if hint else "")


# ------------------------------------------------------------------ lesson 01: policy sampling

@_checker("temperature softmax")
def check_temperature_softmax(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> tuple[bool, str]:
    """fn(logits (V,), T) -> probabilities softmax(logits / T), for several temperatures."""
    logits = torch.randn(12, generator=_gen(1)) * 2
    for T in (0.5, 1.0, 2.0):
        got = _tensor(_call(fn, logits.clone(), T), "the result")
        ok, why = _close(got, torch.softmax(logits / T, -1), f"probabilities at T={T}")
        if not ok:
            if got.shape == logits.shape and torch.allclose(got, torch.softmax(logits * T, -1), atol=1e-5):
                why += " — you multiplied by T; divide the logits by T instead"
            return False, why
    return True, "softmax(z / T) at T = 0.5, 1 and 2; T < 1 sharpens the distribution, T > 1 flattens it"


@_checker("sequence log-probability")
def check_sequence_logprob(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[bool, str]:
    """fn(logprobs (B, T), mask (B, T)) -> (B,) sum of log-probs over real completion tokens only."""
    lp = -torch.rand(3, 5, generator=_gen(2)) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    lp_padded = torch.where(mask.bool(), lp, torch.full_like(lp, -7.0))  # padding holds junk, as in a real batch
    got = _tensor(_call(fn, lp_padded, mask), "the result")
    want = (lp * mask).sum(1)
    ok, why = _close(got, want, "log p(y | x) per row")
    if not ok and got.shape == want.shape and torch.allclose(got, lp_padded.sum(1), atol=1e-5):
        why += " — padding entries were summed too; multiply by (or select with) the mask"
    return ok, why if not ok else "log p(y|x) = Σ_t mask_t · log π(y_t | x, y_<t); padding ignored"


@_checker("top-k support")
def check_top_k_support(answer: int, logits: torch.Tensor, k: int) -> tuple[bool, str]:
    """answer: how many tokens keep a non-zero probability after top-k filtering of `logits`."""
    from ..policy import filter_logits

    if answer is None:
        raise _NotAttempted
    want = int(torch.isfinite(filter_logits(logits, top_k=k)).sum())
    if int(answer) != want:
        return False, f"you said {answer}; {want} tokens survive top-{k} (ties at the k-th logit survive too)"
    return True, f"{want} tokens survive top-{k}; every other token gets probability exactly 0"


# ------------------------------------------------------------------ lesson 02: rewards

@_checker("composite reward")
def check_composite(answer: torch.Tensor, prompts: list[str], completions: list[str],
                    weights: dict[str, float]) -> tuple[bool, str]:
    """answer: (B,) the weighted sum of the named rewards on these samples."""
    from ..rewards import CompositeReward

    if answer is None:
        raise _NotAttempted
    got = _tensor(answer, "answer").float()
    ok, why = _close(got, CompositeReward(weights)(prompts, completions), "composite score", atol=1e-4)
    return ok, why if not ok else "Σ_k w_k · reward_k, the same as CompositeReward(weights)"


@_checker("Bradley-Terry loss")
def check_bradley_terry_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[bool, str]:
    """fn(r_chosen (N,), r_rejected (N,)) -> scalar mean of −log σ(r_w − r_l)."""
    rw, rl = torch.randn(8, generator=_gen(3)) * 3, torch.randn(8, generator=_gen(4)) * 3
    got = _tensor(_call(fn, rw.clone(), rl.clone()), "the result")
    want = -torch.nn.functional.logsigmoid(rw - rl).mean()
    if got.numel() != 1:
        return False, f"expected a scalar (the mean over pairs), got shape {tuple(got.shape)}"
    ok, why = _close(got.reshape(()), want, "loss")
    if not ok and math.isclose(float(got), float(-torch.nn.functional.logsigmoid(rl - rw).mean()), abs_tol=1e-5):
        why += " — chosen and rejected are swapped: the loss should fall as r_chosen grows"
    if not ok:
        return False, why
    big = _tensor(_call(fn, torch.tensor([200.0]), torch.tensor([-200.0])), "the result")
    if not torch.isfinite(big).all() or float(big) > 1e-6:
        return False, f"for a margin of 400 the loss should be ~0, got {float(big)} — use logsigmoid, not log(sigmoid)"
    small = _tensor(_call(fn, torch.tensor([-200.0]), torch.tensor([200.0])), "the result")
    if not torch.isfinite(small).all():
        return False, "a margin of −400 gave inf/nan — use torch.nn.functional.logsigmoid, which stays finite"
    return True, "−mean log σ(r_w − r_l), finite even for margins of ±400"


@_checker("preference probability")
def check_preference_probability(answer: float, gold_a: float, gold_b: float, temperature: float) -> tuple[bool, str]:
    """answer: P(the simulated labeller prefers a over b) = σ((g_a − g_b)/T)."""
    if answer is None:
        raise _NotAttempted
    want = 1.0 / (1.0 + math.exp(-(gold_a - gold_b) / temperature))
    if not math.isclose(float(answer), want, abs_tol=1e-4):
        return False, (f"you said {float(answer):.4f}; σ(({gold_a} − {gold_b}) / {temperature}) = {want:.4f} "
                       "(give 4 decimals: the check accepts answers within 0.0001)")
    return True, f"σ((g_a − g_b)/T) = {want:.4f}: a larger gold gap, or a smaller T, makes the label less noisy"


# ------------------------------------------------------------------ lesson 03: advantages

def _gae_inputs():
    g = _gen(5)
    rewards, values = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.float32)
    return rewards, values, mask


def _gae_variant(rewards, values, mask, gamma, lam, gamma_in_delta=True, gamma_in_trace=True,
                 v_after_end_zero=True):
    """GAE with one of the usual slips switched on, to recognise it in a learner's answer: γ left out of δ_t
    (r_t + V_{t+1} − V_t) or of the trace (δ_t + λ·A_{t+1}), or V_{t+1} read from a padding slot after the last real
    token instead of 0."""
    m = mask.bool()
    r, v = torch.where(m, rewards, 0.0), torch.where(m, values, 0.0)
    v_next_source = v if v_after_end_zero else values
    B, T = r.shape
    adv, last = torch.zeros_like(r), torch.zeros(B)
    for t in reversed(range(T)):
        next_v = v_next_source[:, t + 1] if t + 1 < T else torch.zeros(B)
        delta = r[:, t] + (gamma if gamma_in_delta else 1.0) * next_v - v[:, t]
        last = torch.where(m[:, t], delta + (gamma if gamma_in_trace else 1.0) * lam * last, torch.zeros(B))
        adv[:, t] = last
    return adv


_GAE_SLIPS = (  # (what the variant leaves out, why it is wrong) — tried in this order
    (dict(gamma_in_trace=False),
     "your A_t = δ_t + λ·A_{t+1} is missing the γ of γλ: each step back the trace is discounted by γ·λ "
     "(here {gl}), not by λ alone ({lam}). At γ = 1 the two agree, which is why γ = 1 passed"),
    (dict(gamma_in_delta=False),
     "your δ_t = r_t + V_{t+1} − V_t is missing the γ: δ_t = r_t + γ·V_{t+1} − V_t. At γ = 1 the two agree, "
     "which is why γ = 1 passed"),
    (dict(gamma_in_delta=False, gamma_in_trace=False),
     "γ is missing twice: δ_t = r_t + γ·V_{t+1} − V_t, and A_t = δ_t + γλ·A_{t+1}. At γ = 1 both slips vanish, "
     "which is why γ = 1 passed"),
    (dict(v_after_end_zero=False),
     "after the last real token you read V_{t+1} from a padding slot; the completion has ended there, so "
     "V_{t+1} = 0 and the last real token's δ_t = r_t − V_t"),
)


@_checker("GAE")
def check_gae(fn: Callable[..., torch.Tensor]) -> tuple[bool, str]:
    """fn(rewards (B, T), values (B, T), mask (B, T), gamma, lam) -> advantages (B, T), zero on padding."""
    from ..advantages import compute_gae

    rewards, values, mask = _gae_inputs()
    for gamma, lam in ((1.0, 0.95), (0.9, 0.5), (1.0, 0.0)):
        got = _call(fn, rewards.clone(), values.clone(), mask.clone(), gamma, lam)
        got = _tensor(got[0] if isinstance(got, tuple) else got, "advantages")
        want = compute_gae(rewards, values, mask, gamma, lam)[0]
        ok, why = _close(got, want, f"advantages at γ={gamma}, λ={lam}")
        if not ok:
            if got.shape != want.shape:
                return False, why
            real = got * mask
            if torch.allclose(real, want, atol=1e-5):
                return False, why + " — the padding entries must be 0"
            for slip, reason in _GAE_SLIPS:
                if torch.allclose(real, _gae_variant(rewards, values, mask, gamma, lam, **slip), atol=1e-5):
                    return False, why + " — " + reason.replace("{gl}", f"{gamma * lam:g}").replace("{lam}", f"{lam:g}")
            return False, why + " — compare your loop with δ_t = r_t + γ·V_{t+1} − V_t and A_t = δ_t + γλ·A_{t+1}, backward from the last real token"
    return True, "A_t = δ_t + γλ·A_{t+1} matches compute_gae for three (γ, λ) pairs and ragged masks"


@_checker("reward-to-go")
def check_reward_to_go(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[bool, str]:
    """fn(rewards (B, T), mask (B, T)) -> Σ_{s≥t} r_s on real tokens (γ = 1), 0 on padding."""
    rewards, _, mask = _gae_inputs()
    got = _tensor(_call(fn, rewards.clone(), mask.clone()), "the result")
    r = rewards * mask
    want = r.flip(1).cumsum(1).flip(1) * mask
    ok, why = _close(got, want, "reward-to-go")
    if not ok and got.shape == want.shape and torch.allclose(got, r.cumsum(1) * mask, atol=1e-5):
        why += " — that is the running sum from the start; sum from t to the end instead"
    return ok, why if not ok else "G_t = Σ_{s≥t} r_s — the GAE advantage when γ = λ = 1 and V = 0"


@_checker("whitening")
def check_whiten(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[bool, str]:
    """fn(x (B, T), mask (B, T)) -> (x − μ)/σ over real tokens (unbiased σ), 0 on padding."""
    from ..masking import WHITEN_EPS, masked_mean, masked_var, masked_whiten

    _, x, mask = _gae_inputs()
    x = (x * 3 + 1) * mask  # padding 0, as compute_gae leaves the advantages
    got = _tensor(_call(fn, x.clone(), mask.clone()), "the result")
    want = masked_whiten(x, mask)
    ok, why = _close(got, want, "whitened values", atol=1e-4)
    if ok or got.shape != want.shape:
        return ok, why if not ok else "mean 0, std 1 over real tokens, padding 0 — as masked_whiten"
    n, N = int(mask.sum()), mask.numel()
    real = got * mask
    mu, var_n = masked_mean(x, mask), masked_var(x, mask, unbiased=False)
    if torch.allclose(real, (x - mu) / torch.sqrt(var_n + WHITEN_EPS) * mask, atol=1e-4):
        return False, why + (f" — you used the biased variance (÷ n); the exercise, masked_whiten and TRL divide by "
                             f"n − 1 (torch.var's default). With the n = {n} real tokens here that makes every "
                             f"entry √(n/(n−1)) = {math.sqrt(n / (n - 1)):.4f}× too large: the std over real tokens "
                             f"comes out {math.sqrt(n / (n - 1)):.4f}, not 1. The factor shrinks as n grows (0.1 % at "
                             f"500 tokens), but on a small batch it scales every advantage, and so the step size")
    all_mu, all_sd = x.mean(), x.std()
    if torch.allclose(real, (x - all_mu) / all_sd * mask, atol=1e-4):
        r_mu, r_sd = masked_mean(got, mask).item(), masked_var(got, mask).sqrt().item()
        return False, why + (f" — the padding entries entered μ and σ: you took them over all {N} entries, {N - n} of "
                             f"them padding. The padded "
                             f"advantages are 0, so they pull μ toward 0 ({all_mu.item():.3f} instead of "
                             f"{mu.item():.3f}) and change σ ({all_sd.item():.3f} instead of "
                             f"{masked_var(x, mask).sqrt().item():.3f}): over the real tokens your result has mean "
                             f"{r_mu:.3f} and std {r_sd:.3f}, not 0 and 1, so the sign of Â no longer says 'better "
                             f"than the batch's average token', and the scale depends on how much padding the batch "
                             f"happened to have. Take μ and σ over the entries where mask is 1")
    if torch.allclose(real, want, atol=1e-4):
        return False, why + " — the padding entries must be 0"
    if torch.allclose(real, x / torch.sqrt(masked_var(x, mask) + WHITEN_EPS) * mask, atol=1e-4):
        return False, why + " — subtract the mean μ before dividing by σ: whitened values have mean 0"
    return False, why


# ------------------------------------------------------------------ lesson 04: KL

@_checker("exact KL")
def check_exact_kl(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[bool, str]:
    """fn(p (V,), q (V,)) -> KL(p‖q) = Σ p log(p/q) for probability vectors."""
    g = _gen(6)
    p, q = torch.softmax(torch.randn(10, generator=g), -1), torch.softmax(torch.randn(10, generator=g), -1)
    got = _tensor(_call(fn, p.clone(), q.clone()), "the result").reshape(-1)
    if got.numel() != 1:
        return False, f"expected one number, got shape {tuple(got.shape)}"
    want = (p * (p.log() - q.log())).sum()
    if math.isclose(float(got), float((q * (q.log() - p.log())).sum()), abs_tol=1e-5):
        return False, f"you computed KL(q‖p) = {float(got):.4f}; KL is not symmetric, KL(p‖q) = {float(want):.4f}"
    ok, why = _close(got[0], want, "KL(p‖q)")
    same = _tensor(_call(fn, p.clone(), p.clone()), "the result").reshape(-1)
    if ok and abs(float(same)) > 1e-6:
        return False, f"KL(p‖p) must be 0, got {float(same):.4g}"
    return ok, why if not ok else f"Σ p·log(p/q) = {float(want):.4f}, and KL(p‖p) = 0"


@_checker("k3 estimator")
def check_k3(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[bool, str]:
    """fn(logp (N,), ref_logp (N,)) -> per-sample k3 = (r − 1) − log r with r = ρ/π."""
    from ..kl import kl_k3

    g = _gen(7)
    logp, ref = -torch.rand(20, generator=g) * 4, -torch.rand(20, generator=g) * 4
    got = _tensor(_call(fn, logp.clone(), ref.clone()), "the result")
    ok, why = _close(got, kl_k3(logp, ref), "k3 per sample")
    if not ok and got.shape == logp.shape and torch.allclose(got, kl_k3(ref, logp), atol=1e-5):
        why += " — r is ρ/π = exp(ref_logp − logp), not the other way round"
    if ok and float(got.min()) < -1e-6:
        return False, "k3 must never be negative"
    return ok, why if not ok else "(r − 1) − log r ≥ 0 for every sample, as kl_k3"


@_checker("adaptive β after one update")
def check_adaptive_beta(answer: float, beta: float, kl: float, target: float, n_steps: int,
                        horizon: float) -> tuple[bool, str]:
    """answer: β after AdaptiveKLController(beta, target, horizon).update(kl, n_steps)."""
    from ..kl import AdaptiveKLController

    if answer is None:
        raise _NotAttempted
    ctl = AdaptiveKLController(beta, target, horizon)
    ctl.update(kl, n_steps)
    if not math.isclose(float(answer), ctl.value, rel_tol=1e-6, abs_tol=1e-9):
        e_raw = kl / target - 1
        hint = " — the error e is clipped to [−0.2, 0.2] before use" if abs(e_raw) > 0.2 else ""
        return False, f"you said {float(answer):.6f}; the controller gives {ctl.value:.6f}{hint}"
    return True, f"β = {ctl.value:.6f}: e = clip({kl}/{target} − 1, ±0.2), β ← β·(1 + e·{n_steps}/{horizon:g})"


# ------------------------------------------------------------------ lesson 05: PPO

def _ppo_inputs():
    g = _gen(8)
    logp_old = -torch.rand(4, 5, generator=g) * 3
    logp_new = logp_old + torch.randn(4, 5, generator=g) * 0.4
    adv = torch.randn(4, 5, generator=g)
    mask = torch.ones(4, 5)
    mask[2, 3:], mask[3, 1:] = 0, 0
    return logp_new, logp_old, adv, mask


@_checker("clipped surrogate loss")
def check_clipped_loss(fn: Callable[..., torch.Tensor]) -> tuple[bool, str]:
    """fn(logp_new, logp_old, advantages, mask, clip_range) -> scalar masked mean of max(−A·ρ, −A·clip(ρ))."""
    from ..ppo import policy_loss

    logp_new, logp_old, adv, mask = _ppo_inputs()
    for eps in (0.2, 0.1):
        got = _tensor(_call(fn, logp_new.clone(), logp_old.clone(), adv.clone(), mask.clone(), eps), "the loss")
        if got.numel() != 1:
            return False, f"expected a scalar loss, got shape {tuple(got.shape)}"
        want = policy_loss(logp_new, logp_old, adv, mask, eps)[0]
        ok, why = _close(got.reshape(()), want, f"loss at ε={eps}")
        if not ok:
            ratio = torch.exp(logp_new - logp_old)
            mn = torch.min(-adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps))
            if math.isclose(float(got), float((mn * mask).sum() / mask.sum()), abs_tol=1e-5):
                why += " — on the loss (= −objective) take the max, the pessimistic side, not the min"
            return False, why
    return True, "masked mean of max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) matches policy_loss at ε = 0.2 and 0.1"


@_checker("clip fraction")
def check_clipfrac(fn: Callable[..., float]) -> tuple[bool, str]:
    """fn(logp_new, logp_old, advantages, mask, clip_range) -> share of real tokens whose clipped term is active."""
    from ..ppo import policy_loss

    logp_new, logp_old, adv, mask = _ppo_inputs()
    got = float(_call(fn, logp_new.clone(), logp_old.clone(), adv.clone(), mask.clone(), 0.2))
    want = policy_loss(logp_new, logp_old, adv, mask, 0.2)[1]["policy/clipfrac"]
    if not math.isclose(got, want, abs_tol=1e-6):
        ratio = torch.exp(logp_new - logp_old)
        outside = float((((ratio - 1).abs() > 0.2).float() * mask).sum() / mask.sum())
        hint = (" — that counts every ratio outside [1−ε, 1+ε]; count only tokens where clipping changes the loss"
                " (ratio above 1+ε with A > 0, or below 1−ε with A < 0)") if math.isclose(got, outside, abs_tol=1e-6) else ""
        return False, f"you got {got:.4f}, policy/clipfrac is {want:.4f}{hint}"
    return True, f"{want:.4f} of real tokens had their gradient cut by the clip — as policy/clipfrac"


@_checker("explained variance")
def check_explained_variance(fn: Callable[..., float]) -> tuple[bool, str]:
    """fn(values, returns, mask) -> 1 − Var(R − V)/Var(R) over real tokens."""
    from ..ppo import explained_variance

    _, values, returns, mask = _ppo_inputs()
    values = returns * 0.7 + values * 0.3
    got = float(_call(fn, values.clone(), returns.clone(), mask.clone()))
    want = explained_variance(values, returns, mask)
    if not math.isclose(got, want, abs_tol=1e-4):
        return False, f"you got {got:.4f}, expected {want:.4f} (use the masked, biased variances)"
    perfect = float(_call(fn, returns.clone(), returns.clone(), mask.clone()))
    if not math.isclose(perfect, 1.0, abs_tol=1e-6):
        return False, f"a perfect critic (V = R) should score 1.0, got {perfect:.4f}"
    return True, f"{want:.4f}; 1.0 for a perfect critic, 0 for one that predicts only the mean"


@_checker("Adam's first update")
def check_adam_first_update(fn: Callable[..., torch.Tensor]) -> tuple[bool, str]:
    """fn(g, lr, eps) -> Δw, the change torch.optim.Adam (β1 = 0.9, β2 = 0.999) makes to weights whose first gradient
    is g; compared with a real Adam step over gradients from 1e-9 to 1."""
    g = torch.tensor([1e-9, -1e-7, 3e-6, -1e-5, 4e-5, -1e-3, 0.02, -1.0], dtype=torch.float64)
    lr, eps = 3e-4, 1e-5
    w = torch.zeros_like(g, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr, eps=eps)
    w.grad = g.clone()
    opt.step()
    want = w.detach()
    got = _tensor(_call(fn, g.clone(), lr, eps), "Δw").double()
    if tuple(got.shape) != tuple(want.shape):
        return False, f"Δw has shape {tuple(got.shape)}, expected {tuple(want.shape)} (one change per gradient)"
    if torch.allclose(got, want, rtol=1e-6, atol=1e-12):
        return True, (f"Δw = −lr·g/(|g| + ε): a weight with |g| ≫ ε = {eps:g} moves by lr = {lr:g} whatever its "
                      f"gradient (|g| = 1e-3 and 1 alike), one with |g| ≪ ε by about lr·|g|/ε")
    i = int(((got - want).abs() / want.abs()).nan_to_num(float("inf")).argmax())
    why = f"for g = {float(g[i]):g} you get Δw = {float(got[i]):.3g}, a real Adam step gives {float(want[i]):.3g}"
    hints = {
        "that is plain gradient descent (−lr·g): Adam divides by √v̂ + ε, so the first update does not scale with g":
            -lr * g,
        "the step should go against the gradient (descent): put a minus sign in front": lr * g / (g.abs() + eps),
        "ε is missing: −lr·sign(g) is right only for |g| ≫ ε; a weight with |g| ≪ ε moves by about lr·|g|/ε":
            -lr * torch.sign(g),
        "without the bias correction: m = 0.1·g and √v = 0.0316·|g| after one step; divide m by 1 − β1 and v by "
        "1 − β2 (then m̂ = g and √v̂ = |g|)": -lr * 0.1 * g / ((0.001 * g * g).sqrt() + eps),
    }
    for hint, wrong in hints.items():
        if torch.allclose(got, wrong, rtol=1e-6, atol=1e-12):
            return False, f"{why} — {hint}"
    return False, f"{why} — with one gradient, m̂ = g and √v̂ = |g|, so Δw = −lr·m̂/(√v̂ + ε)"


# ------------------------------------------------------------------ lesson 06: the training loop

def _not_yet(name: str, what: str) -> bool:
    print(f"{TODO} — {name}: {what}")
    return False


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ppo_step's stages in order: the PPOBatch fields and metrics each one decides first, and where to look when they differ
PPO_STEP_STAGES = (
    ("1. rollout", ("ids", "attn", "context_length", "mask"), ("rollout/completion_len", "rollout/eos_frac"),
     "sample(s.policy, s.tokenizer, next_prompts(s), cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, "
     "generator=s.generators['sample'])"),
    ("2. score", (), ("objective/scores", "objective/scores_std"), "s.reward_fn(ro.prompts, ro.completions).float()"),
    ("3. log-probs and values", ("logp_old", "values_old", "ref_logp"), ("policy/entropy", "value/mean"),
     "forward_tokens(model, ids, attn, P, cfg.temperature) under torch.no_grad() for s.policy and s.ref, each "
     "multiplied by the completion mask"),
    ("4. KL penalty", (), ("objective/kl", "objective/non_score_reward", "objective/rlhf_reward", "objective/kl_coef"),
     "kl = kl_estimate(logp_old, ref_logp, cfg.kl_estimator) * mask; per_token_rewards(scores, kl, mask, "
     "s.kl_ctl.value); seq_kl = (kl_k1(logp_old, ref_logp) * mask).sum(1)"),
    ("5. advantages", ("advantages", "returns"), ("value/explained_variance",),
     "compute_gae(rewards, values, mask, cfg.gamma, cfg.lam), then whiten_advantages(advantages, mask)"),
    ("6. PPO epochs", (), None,  # None: every metric ppo_update returns
     "ppo_update(s.policy, s.optimizer, PPOBatch(...), cfg, s.generators['minibatch'])"),
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and bool(torch.equal(torch.nan_to_num(a, nan=1e30), torch.nan_to_num(b, nan=1e30))))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _differ(what: str, got: Any, want: Any) -> str:
    """'<what> = …, the package's …' in the most telling form: the largest gap for tensors of one shape."""
    if isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor) and got.shape == want.shape:
        gap = (got.double() - want.double()).abs().nan_to_num(nan=float("inf"))
        i = int(gap.flatten().argmax())
        return (f"{what} differs from the package's by up to {float(gap.max()):.4g} (entry {i}: "
                f"{float(got.flatten()[i]):.6g} vs {float(want.flatten()[i]):.6g})")
    show = lambda x: (f"a tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor)  # noqa: E731
                      else f"{x:.6g}" if isinstance(x, float) else repr(x))
    return f"{what} is {show(got)}, the package's {show(want)}"


def _run_recording_ppo_batches(fn: Callable, state) -> tuple[Any, list]:
    """Call fn(state) and record every PPOBatch that reaches ppo_update, however the caller imported it."""
    import sys

    from ..ppo import ppo_update

    seen, code = [], ppo_update.__code__

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code is code:
            seen.append(frame.f_locals["batch"])

    old = sys.getprofile()
    sys.setprofile(profiler)
    try:
        out = _call(fn, state)  # a stub that raises NotImplementedError or returns None is 'not attempted'
    finally:
        sys.setprofile(old)
    return out, seen


def _ppo_step_state(cfg=None):
    from ..config import RunConfig
    from ..train import setup

    # two epochs of two minibatches: the general path (no single-pass shortcut), small enough to run in a second; a
    # constant learning rate, so that the seven stages are the whole step (schedule.lr_factor is 1 at every step)
    cfg = cfg or RunConfig(seed=3, batch_size=8, max_new_tokens=8, ppo_epochs=2, num_minibatches=2, kl_coef=0.05,
                           lr_decay="constant", progress=False, device="cpu", log_samples=0)
    return setup(cfg)


@_checker("my_ppo_step")
def check_ppo_step(fn: Callable, steps: int = 2, cfg=None) -> tuple[bool, str]:
    """fn(state) -> metrics (or (metrics, samples)), as train.ppo_step: run both from copies of one state, `steps`
    times, and compare every metric exactly, stage by stage; the first stage that differs is named."""
    import copy

    from ..train import ppo_step

    state = _ppo_step_state(cfg)
    mine, ref = copy.deepcopy(state), copy.deepcopy(state)  # same weights, optimizer, generators, β
    for step in range(1, steps + 1):
        got, got_batches = _run_recording_ppo_batches(fn, mine)
        got = got[0] if isinstance(got, tuple) else got
        (want, _), want_batches = _run_recording_ppo_batches(ppo_step, ref)
        if not isinstance(got, dict):
            return False, f"return the metrics dict (as step_metrics builds it), got {type(got).__name__}"
        where = f"at step {step}"
        missing = sorted(k for k in want if not k.startswith("time/") and k not in got)
        if missing:
            return False, f"{where} your metrics lack {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}: " \
                          "return step_metrics(StepStats(ro, batch, scores, seq_kl, rewards, non_score_reward, " \
                          "entropy, beta, upd, timer))"
        if len(got_batches) != 1:
            return False, f"{where} ppo_update was called {len(got_batches)} times; call it once per step, with the " \
                          "whole PPOBatch (it makes the epochs and minibatches itself)"
        gb, wb = got_batches[0], want_batches[0]
        update_keys = [k for k in want if k not in {m for st in PPO_STEP_STAGES for m in (st[2] or ())}
                       and not k.startswith(("time/", "rollout/", "objective/", "value/mean"))]
        for stage, fields, keys, hint in PPO_STEP_STAGES:
            for f in fields:
                if not _same(getattr(gb, f), getattr(wb, f)):
                    what = _differ("PPOBatch." + f, getattr(gb, f), getattr(wb, f))
                    return False, f"{where}, stage {stage} differs first: {what}. The package does: {hint}"
            for k in (keys if keys is not None else update_keys):
                if not _same(got[k], want[k]):
                    what = _differ(k, got[k], want[k])
                    return False, f"{where}, stage {stage} differs first: {what}. The package does: {hint}"
        diff = [n for (n, p), q in zip(mine.policy.named_parameters(), ref.policy.parameters())
                if not torch.equal(p, q)]
        if diff:
            return False, f"{where}, stage 6. PPO epochs: the weights differ after the update (first: {diff[0]})"
        if (mine.step, mine.kl_ctl.value) != (ref.step, ref.kl_ctl.value):
            return False, (f"{where}, stage 7. adapt β differs: step {mine.step}, β {mine.kl_ctl.value:.6g}; the "
                           f"package's step {ref.step}, β {ref.kl_ctl.value:.6g}. The package does: "
                           "s.kl_ctl.update(float(seq_kl.mean()), cfg.batch_size * cfg.num_generations); s.step += 1")
        for name, g in mine.generators.items():
            if not torch.equal(g.get_state(), ref.generators[name].get_state()):
                return False, f"{where}: the metrics match but the '{name}' random stream was used differently"
    n = sum(1 for k in want if not k.startswith("time/"))
    return True, (f"{steps} steps from the same state and seed: all {n} metrics (time/… aside), the PPO batch, the "
                  "weights, β and every random stream equal ppo_step's exactly — you have written RLHF")


@_checker("the optimum's J*")
def check_j_star(fn: Callable[[torch.Tensor, float], Any]) -> tuple[bool, str]:
    """fn(scores (N,) of base samples of one prompt, beta) -> Ĵ* = β·(logsumexp(r/β) − log N)."""
    from ..optimum import optimum_from_scores

    r = torch.cat([torch.rand(63, generator=_gen(9)) * 2 - 1, torch.ones(1)])  # float32, best score 1
    for beta in (0.5, 0.1, 0.01):  # r/β = 100 overflows a float32 exp: logsumexp does not
        got = float(_call(fn, r.clone(), beta))
        want = optimum_from_scores(r, beta)["J_star"]
        if not math.isclose(got, want, abs_tol=1e-4):
            why = f"at β = {beta} you got {got:.6g}, expected {want:.6g}"
            if math.isclose(got, beta * float(torch.logsumexp(r.double() / beta, 0)), abs_tol=1e-4):
                why += " — subtract log N: J* is β·log of the MEAN of exp(r/β), not of the sum"
            elif not math.isfinite(got):
                why += " — exp(r/β) overflowed; use torch.logsumexp"
            return False, why
    return True, ("β·(logsumexp(r/β) − log N) at β = 0.5, 0.1, 0.01: as β → 0 it tends to max r (all mass on the best "
                  "sample), as β grows to mean r (π* → ρ)")


def _choice(name: str, answer: Any, options: dict[str, str], right: str, why: dict[str, str]) -> tuple[bool, str]:
    if answer is None:
        raise _NotAttempted
    if not isinstance(answer, str) or answer.strip().lower() not in options:
        return False, f"answer with one of {', '.join(repr(k) for k in options)}; got {answer!r}"
    a = answer.strip().lower()
    return a == right, why[a]


CLIPFRAC_OPTIONS = {"a": "raise the learning rate", "b": "lower the learning rate (or run fewer PPO epochs)",
                    "c": "raise clip_range to 0.5", "d": "raise kl_coef"}


@_checker("clipfrac 0.3")
def check_clipfrac_remedy(answer: Any) -> tuple[bool, str]:
    """answer: which change (a-d of CLIPFRAC_OPTIONS) to make when policy/clipfrac sits near 0.3 every step."""
    return _choice("clipfrac 0.3", answer, CLIPFRAC_OPTIONS, "b", {
        "a": "a larger learning rate moves the ratio further from 1 in each PPO epoch: more clipping, not less",
        "b": ("clipfrac 0.3 says a third of the tokens' ratios left [1 − ε, 1 + ε] within one step's epochs: each "
              "update is larger than the trust region PPO relies on. A smaller step size (or fewer epochs over the "
              "same batch) brings it back to a few percent; watch policy/approx_kl fall with it"),
        "c": ("a wider clip range only hides the symptom: clipfrac falls because fewer ratios count as clipped, "
              "while the updates stay as large and off-policy as before"),
        "d": ("β pulls the policy toward the reference over many steps; it does not limit how far one update moves "
              "the ratio π_θ/π_old, which is what clipfrac measures"),
    })


REFRESH_OPTIONS = {"a": "it stays about where the fixed-reference run ends",
                   "b": "it keeps growing: each refresh resets the penalty",
                   "c": "it shrinks, because the penalty is measured more often"}


@_checker("refreshing the reference")
def check_reference_refresh(answer: Any) -> tuple[bool, str]:
    """answer: what KL to the ORIGINAL model does when ρ ← π_θ every few steps (a-c of REFRESH_OPTIONS)."""
    return _choice("refreshing the reference", answer, REFRESH_OPTIONS, "b", {
        "a": ("that holds only for a fixed ρ: the penalty β·KL(π‖ρ) balances the reward against the distance to ONE "
              "anchor, so it settles. Move the anchor and the balance point moves with it"),
        "b": ("after each refresh KL(π_θ‖ρ) is 0 again, so β only limits how far the policy moves between two "
              "refreshes; the distance from the original model adds up without bound, like training with β = 0 "
              "in slow motion. The frontier's KL axis (distance from the model you trust) loses its meaning: this "
              "is the drift the fixed reference exists to prevent"),
        "c": ("measuring more often does not pull the policy back: the penalty is always against the latest copy, "
              "which is where the policy already is"),
    })


# ------------------------------------------------------------------ lesson 07: scale with TRL

def _grpo_variants(s: torch.Tensor, k: int) -> dict[str, tuple[torch.Tensor, str]]:
    """Typical wrong GRPO advantages, each with the reason it is wrong."""
    g = s.view(-1, k)
    centred = g - g.mean(1, keepdim=True)
    return {
        "biased std": ((centred / (g.std(1, unbiased=False, keepdim=True) + 1e-4)).flatten(),
                       "you divided by the population std (÷ k); GRPO (and TRL's nanstd) uses the unbiased one, ÷ (k − 1)"),
        "no std": (centred.flatten(), "you centred the scores but did not divide by the group's std (+ 1e-4)"),
        "batch": (((s - s.mean()) / (s.std() + 1e-4)),
                  f"you standardised over the whole batch; GRPO's baseline is each prompt's own group of {k}"),
        "leave-one-out": (((k * g - g.sum(1, keepdim=True)) / (k - 1)).flatten(),
                          "that is RLOO's raw advantage (minus the mean of the OTHER k − 1), not GRPO's standardisation"),
        "sign": (-(centred / (g.std(1, keepdim=True) + 1e-4)).flatten(),
                 "the sign is flipped: a completion scored above its group's mean gets a POSITIVE advantage"),
    }


def _rloo_variants(s: torch.Tensor, k: int) -> dict[str, tuple[torch.Tensor, str]]:
    """Typical wrong RLOO advantages, each with the reason it is wrong."""
    from ..advantages import group_advantages

    g = s.view(-1, k)
    return {
        "raw": (((k * g - g.sum(1, keepdim=True)) / (k - 1)).flatten(),
                "that is the raw leave-one-out advantage; train.py (and the bridge's normalize_advantages=True) then "
                "whitens it over the batch: (A − mean)/(std + 1e-4)"),
        "grpo": (group_advantages(s, k, "grpo"), "that is GRPO's group standardisation, not RLOO's leave-one-out"),
        "with self": ((g - g.mean(1, keepdim=True)).flatten(),
                      "you subtracted the mean of the whole group, the completion itself included; RLOO leaves it out"),
    }


def check_group_advantage(answer: Any, scores: Sequence[float], num_generations: int, method: str = "grpo") -> bool:
    """Exercise 1: the group-relative advantage of every completion (a list of B numbers, 3 decimals suffice); a wrong
    answer is matched against the usual slips (population std, no std, batch instead of group, RLOO for GRPO, …)."""
    from ..advantages import group_advantages

    name = f"{method} advantages"
    k = num_generations
    s = torch.tensor([float(x) for x in scores])
    want = group_advantages(s, k, method=method)
    if answer is None:
        print(f"{TODO} — {name}: set `answer` to a list of {len(want)} numbers, one per completion")
        return False
    try:
        got = torch.tensor([float(x) for x in answer])
    except (TypeError, ValueError):
        return _verdict(False, name, f"answer with a list of {len(want)} numbers; got {answer!r}")
    if got.numel() != want.numel() or not torch.isfinite(got).all():
        return _verdict(False, name, f"answer with {len(want)} finite numbers, one per completion; got {got.numel()}")
    if method == "grpo":
        how = (f"A_i = (r_i − mean of its group) / (std of its group + 1e-4), std unbiased (÷ k − 1), groups of {k} "
               "consecutive completions")
    else:
        how = "A_i = r_i − mean of the other k − 1 in its group, then whitened over the batch: (A − mean)/(std + 1e-4)"
    close = lambda a, b: bool((a - b).abs().max() < 1e-3)  # noqa: E731
    if close(got, want):
        return _verdict(True, name, f"{how} gives {[round(w, 3) for w in want.tolist()]}; the advantages of each "
                                    "group sum to 0")
    variants = _grpo_variants(s, k) if method == "grpo" else _rloo_variants(s, k)
    why = next((reason for alt, reason in variants.values() if close(got, alt)), None)
    if why is None:
        i = int((got - want).abs().argmax())
        why = (f"completion {i} (group {i // k}) should get {want[i].item():.3f}, you gave {got[i].item():.3f}; "
               f"check each group separately: its mean is {s.view(-1, k)[i // k].mean().item():.3f}")
    return _verdict(False, name, f"{why}. {how}")


def _trl_kl_variants(logp, logp_old, ref_logp, mask, beta: float) -> dict[str, tuple[float, str]]:
    """What the usual slips give for TRL's logged `kl` of one batch, each with the reason it is wrong."""
    from ..kl import kl_k1, kl_k3

    ratio = torch.exp(logp - logp_old)
    k3 = kl_k3(logp, ref_logp)
    n = mask.sum()
    mean = lambda x: float((x * mask).sum() / n)  # noqa: E731
    per_seq = (k3 * ratio * mask).sum(1)
    return {
        "k1": (mean(kl_k1(logp, ref_logp)), "you averaged k1 = log π − log ρ; TRL's GRPO logs k3 = e^Δ − Δ − 1 with "
                                             "Δ = log ρ − log π (never negative, one value per token)"),
        "k3 reversed": (mean(kl_k3(ref_logp, logp) * ratio),
                        "your k3 has Δ the wrong way round: Δ = log ρ − log π (reference minus policy), so the "
                        "exponential grows where the POLICY gave the sampled token less probability than ρ"),
        "no ratio": (mean(k3), "you left out the ratio π_θ/π_old = exp(logp − logp_old): TRL multiplies each k3 by it "
                               "(use_bias_correction_kl=True); it is 1 on the first pass over a rollout, not on later ones"),
        "ratio inverted": (mean(k3 / ratio), "the ratio is π_θ/π_old = exp(logp − logp_old), not its inverse"),
        "per sequence": (float(per_seq.mean()), "you summed over each completion's tokens and averaged over completions "
                                                "(that is kl × mean length, the per-sequence scale); TRL logs the token "
                                                "mean: Σ over all tokens / number of tokens"),
        "sum": (float(per_seq.sum()), "you summed over all tokens; TRL divides that sum by the number of tokens"),
        "mean of means": (float((per_seq / mask.sum(1).clamp(min=1)).mean()),
                          "you took each completion's token mean, then the mean over completions (the 'grpo' "
                          "weighting); TRL's logged kl is ONE mean over all tokens of the batch, so long completions "
                          "weigh more"),
        "no mask": (float((k3 * ratio * mask).sum() / mask.numel()),
                    "you divided by every entry of the (B, T) tensor, padding included; divide by mask.sum(), the "
                    "number of completion tokens"),
        "beta": (beta * mean(k3 * ratio), f"you multiplied by β = {beta:g}: that is the loss term; TRL logs kl without β"),
    }


@_checker("TRL's logged kl")
def check_trl_logged_kl(fn: Callable[..., Any], batches: Sequence[dict], beta: float = 0.05) -> tuple[bool, str]:
    """fn(logp, logp_old, ref_logp, mask) -> float: TRL's logged `kl` for a batch, from rlhf_nb's per-token log-probs
    (all (B, T)). `batches`: LogProbProbe.kit_batches() records, each with kl_logged, the number TRL logged for it."""
    if not batches:
        raise ValueError("pass at least one recorded batch (LogProbProbe.kit_batches())")
    for i, b in enumerate(batches):
        args = (b["logp"].clone(), b["logp_old"].clone(), b["ref_logp"].clone(), b["mask"].clone())
        out = _call(fn, *args)
        if isinstance(out, torch.Tensor) and out.numel() != 1:
            return False, (f"return one number for the batch (a float or a 0-d tensor); you returned a tensor of shape "
                           f"{tuple(out.shape)} — TRL logs one kl per batch")
        got = float(out)
        want = float(b["kl_logged"])
        if abs(got - want) <= 1e-4 * max(1.0, abs(want)):
            continue
        off = bool((b["logp"] - b["logp_old"]).abs().max() > 1e-6)
        where = (f"batch {i} (TRL step {b['step']}, {'a second pass: π_θ ≠ π_old' if off else 'on-policy: π_θ = π_old'})"
                 f": you gave {got:.6g}, TRL logged {want:.6g}")
        for alt, reason in _trl_kl_variants(*args, beta).values():
            if abs(got - alt) <= 1e-4 * max(1.0, abs(alt)) and abs(alt - want) > 1e-4 * max(1.0, abs(want)):
                return False, f"{where} — {reason}"
        return False, (f"{where}. TRL's kl = Σ_tokens mask·(π_θ/π_old)·k3 / Σ mask, k3 = e^Δ − Δ − 1, "
                       f"Δ = log ρ − log π_θ")
    return True, (f"matches TRL's own logged number on all {len(batches)} batches: kl = token mean over the batch of "
                  "(π_θ/π_old)·(e^Δ − Δ − 1), Δ = log ρ − log π_θ. rlhf_nb's forward gives the same per-token "
                  "log-probs as TRL's, so the two systems can be measured with one ruler")


# ------------------------------------------------------------------ lesson 08: reward over-optimisation

def check_kl_bon(answer: Any, n: int = 16) -> bool:
    """KL(best-of-n ‖ base) in nats for this n (3 decimals)."""
    from ..overopt import kl_bon

    name = f"KL of best-of-{n}"
    if answer is None:
        return _not_yet(name, "set `answer` to a number of nats")
    if not _is_number(answer):
        return _verdict(False, name, f"answer with a number; got {answer!r}")
    want = kl_bon(n)
    return _verdict(abs(answer - want) < 1e-3, name,
                    f"KL_bon = log n − (n − 1)/n = log {n} − {n - 1}/{n} = {math.log(n):.3f} − {(n - 1) / n:.3f} "
                    f"= {want:.3f} nats, so d = √KL = {math.sqrt(want):.3f}")


@_checker("peak of the best-of-n form")
def check_bon_peak(fn: Callable[[float, float], float]) -> tuple[bool, str]:
    """fn(alpha, beta) -> the d where R(d) = d(alpha − beta·d) is largest."""
    from ..overopt import GaoFit

    for alpha, beta in ((0.6, 0.18), (1.0, 0.5), (0.3, 0.02)):
        got = float(_call(fn, alpha, beta))
        want = GaoFit("bon", alpha, beta, 0.0, 0, 0.0).peak_d
        if abs(got - want) > 1e-6:
            return False, (f"for alpha = {alpha}, beta = {beta} you gave d = {got:.4f}, expected {want:.4f}: set "
                           f"dR/dd = alpha − 2·beta·d to 0")
    return True, "dR/dd = alpha − 2·beta·d = 0 at d* = alpha/(2·beta), where R(d*) = alpha²/(4·beta)"


def check_later_peak(answer: Any, peak_d: dict[int, float]) -> bool:
    """Which proxy (its number of training pairs) has its gold peak at the largest d, as measured (`peak_d`)?"""
    name = "which proxy peaks later"
    if answer is None:
        return _not_yet(name, f"set `answer` to one of {sorted(peak_d)}")
    if answer not in peak_d:
        return _verdict(False, name, f"answer with one of the proxies' sizes {sorted(peak_d)}; got {answer!r}")
    best = max(peak_d, key=peak_d.get)
    order = ", ".join(f"{k} pairs: d = {peak_d[k]:.2f}" for k in sorted(peak_d))
    gao = ("as Gao et al. report: more preference data, later peak" if best == max(peak_d)
           else "not the largest proxy, against Gao et al.'s trend — a measured disagreement")
    return _verdict(answer == best, name, f"measured peaks: {order}; the latest is the {best}-pair proxy, {gao}")


def check_stop_step(answer: Any, steps: Sequence[int], gold: Sequence[float], tol: float = 0.02) -> bool:
    """The step to stop at: one where the (seed-mean) gold curve is within `tol` of its maximum."""
    name = "the step to stop at"
    if answer is None:
        return _not_yet(name, f"set `answer` to one of the measured steps {list(steps)[:3]} … {list(steps)[-1]}")
    steps, gold = list(steps), [float(g) for g in gold]
    if answer not in steps:
        return _verdict(False, name, f"answer with a measured step ({steps[0]}, {steps[1]}, …); got {answer!r}")
    i = max(range(len(gold)), key=gold.__getitem__)
    got = gold[steps.index(answer)]
    return _verdict(got >= gold[i] - tol, name,
                    f"the gold peaks at step {steps[i]} ({gold[i]:+.3f}); step {answer} has {got:+.3f} — "
                    f"{'within' if got >= gold[i] - tol else 'more than'} {tol} below the peak. Without a gold you "
                    f"would stop at a KL budget or when held-out preference accuracy on policy samples drops")


# ------------------------------------------------------------------ lesson 09: DPO

@_checker("DPO loss")
def check_dpo_loss(fn: Callable[..., torch.Tensor]) -> tuple[bool, str]:
    """fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> scalar mean of −log σ(β·h), all (N,)."""
    from ..dpo import dpo_loss

    g = _gen(9)
    pc, pr = -torch.rand(8, generator=g) * 20, -torch.rand(8, generator=g) * 20  # sequence log-probs, nats
    rc, rr = pc + torch.randn(8, generator=g), pr + torch.randn(8, generator=g)
    beta = 0.3
    got = _tensor(_call(fn, pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta), "the result")
    if got.numel() != 1:
        return False, f"expected a scalar (the mean over pairs), got shape {tuple(got.shape)}"
    want = dpo_loss(pc, pr, rc, rr, beta)
    ok, why = _close(got.reshape(()), want, "loss")
    if not ok:
        h = (pc - rc) - (pr - rr)
        hints = [(-torch.nn.functional.logsigmoid(-beta * h).mean(), "chosen and rejected are swapped"),
                 (-torch.nn.functional.logsigmoid(beta * (pc - pr)).mean(), "the reference is missing: h needs − log ρ"),
                 (-torch.nn.functional.logsigmoid(h).mean(), "β is missing: the loss is −log σ(β·h)")]
        for alt, hint in hints:
            if math.isclose(float(got), float(alt), abs_tol=1e-5):
                return False, why + f" — {hint}"
        return False, why
    big = _tensor(_call(fn, torch.tensor([0.0]), torch.tensor([-2000.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                        beta), "the result")
    small = _tensor(_call(fn, torch.tensor([-2000.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                          beta), "the result")
    if not (torch.isfinite(big).all() and torch.isfinite(small).all()):
        return False, "a margin of ±2000 nats gave inf/nan — use torch.nn.functional.logsigmoid, not log(sigmoid)"
    return True, "−mean log σ(β·[(log π − log ρ)(y_w) − (log π − log ρ)(y_l)]), finite for any margin"


def check_implicit_reward(answer: Any, logp: Sequence[float], ref_logp: Sequence[float], beta: float) -> bool:
    """Exercise 2: the implicit rewards (r̂(y_w), r̂(y_l)) of a pair, from log π and log ρ of (chosen, rejected)."""
    from ..dpo import implicit_reward

    name = "implicit reward of a pair"
    want = implicit_reward(torch.tensor([float(x) for x in logp]), torch.tensor([float(x) for x in ref_logp]),
                           beta).tolist()
    if answer is None:
        return _not_yet(name, "set `answer` to a pair of numbers: (reward of the chosen, reward of the rejected)")
    try:
        got = [float(x) for x in answer]
    except (TypeError, ValueError):
        return _verdict(False, name, f"answer with two numbers (chosen, rejected); got {answer!r}")
    if len(got) != 2:
        return _verdict(False, name, f"answer with two numbers (chosen, rejected); got {len(got)}")
    ok = all(abs(g - w) < 1e-3 for g, w in zip(got, want))
    margin = want[0] - want[1]
    read = ("the pair counts as ranked right" if margin > 0 else "the pair counts as ranked wrong")
    if margin > 0 and max(want) < 0:
        read += " even though both rewards are negative (both log-probs fell below the reference's)"
    return _verdict(ok, name, f"r̂ = β·(log π − log ρ): {beta:g}·({logp[0]:g} − {ref_logp[0]:g}) = {want[0]:.3f} and "
                              f"{beta:g}·({logp[1]:g} − {ref_logp[1]:g}) = {want[1]:.3f}; margin {margin:.3f}: {read}. "
                              f"β·log Z(x) is the same for both completions of a prompt and cancels in the margin")


BETA_LIMITS = ("stays", "drifts")  # the two answers of exercise 3


def check_beta_limits(beta_to_zero: Any, beta_to_infinity: Any) -> bool:
    """Exercise 3: with β → 0 and β → ∞, does the DPO policy stay at the reference ("stays") or drift ("drifts")?"""
    name = "β → 0 and β → ∞"
    if beta_to_zero is None or beta_to_infinity is None:
        return _not_yet(name, f"set both answers to one of {BETA_LIMITS}")
    bad = [a for a in (beta_to_zero, beta_to_infinity) if a not in BETA_LIMITS]
    if bad:
        return _verdict(False, name, f"answer each with one of {BETA_LIMITS}; got {bad[0]!r}")
    ok = (beta_to_zero, beta_to_infinity) == ("drifts", "stays")
    return _verdict(ok, name,
                    "β → 0: a pair's loss −log σ(β·h) is only small once h ≫ 1/β, so the policy must move log-probs by "
                    "ever more nats: it drifts, KL to the reference is free (in lesson 09's sweep the smallest β had "
                    "the largest KL). β → ∞: any h > 0 already gives a loss near 0 and the gradient β·σ(−β·h) dies as "
                    "soon as h ≈ 1/β, so the policy stays at the reference. The same limits as PPO's KL coefficient: "
                    "π* ∝ ρ·exp(r/β)")


# ------------------------------------------------------------------ lesson 10: failure modes

def check_diagnosis(answer: Any, runs: dict | None = None) -> bool:
    """Name the hidden fault of each mystery run: {label: fault name, or "healthy"} for every run of the exercise.

    The answer key is drawn inside rlhf_nb.faults and read only here; with `runs` (faults.mystery_runs()) each run's
    verdict quotes the numbers in its logs that give the fault away."""
    from .. import faults

    name = "diagnosis"
    key = {label: fault for label, (fault, _) in faults._mystery_key().items()}
    allowed = sorted(faults.FAULTS) + [faults.HEALTHY]
    if answer is None:
        return _not_yet(name, f"set `answer` to a dict {{label: fault}} for the runs {', '.join(key)}; "
                              f"a fault is one of {', '.join(allowed)}")
    if not isinstance(answer, dict) or sorted(answer) != sorted(key):
        return _verdict(False, name, f"answer with a dict whose keys are exactly {', '.join(key)}; got {answer!r}")
    unknown = {k: v for k, v in answer.items() if v not in allowed}
    if unknown:
        return _verdict(False, name, f"{unknown} names no fault; choose from {', '.join(allowed)}")
    lines, right = [], 0
    for label, truth in key.items():
        ok = answer[label] == truth
        right += ok
        if runs is not None:
            why = faults.clue(truth, label, runs)
        elif truth == faults.HEALTHY:
            why = "every metric in its usual range"
        else:
            why = f"look at {faults.get(truth).metric}"
        verdict = f"✅ {truth}" if ok else f"❌ not {answer[label]} but {truth}"
        lines.append(f"  run {label} {verdict}: {why}")
    return _verdict(right == len(key), name, f"{right} of {len(key)} right\n" + "\n".join(lines))


@_checker("expected gradient of a KL loss term")
def check_expected_kl_gradient(fn: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]) -> tuple[bool, str]:
    """fn(logits (V,), ref_logits (V,), estimator) -> (V,) E_{y~π}[∇_z kl_est(y)] with y held fixed inside the loss."""
    from ..faults import expected_kl_loss_gradient

    g = _gen(10)
    logits, ref = torch.randn(9, generator=g), torch.randn(9, generator=g)
    for est in ("k1", "k3"):
        got = _tensor(_call(fn, logits.clone(), ref.clone(), est), "the gradient")
        ok, why = _close(got, expected_kl_loss_gradient(logits, ref, est), f"E[∇ {est}]", atol=1e-5)
        if not ok:
            return False, why + " — weight each token's gradient by π(y), detached: the sample does not move"
    return True, ("E[∇ k1] = Σ_y π(y)·∇log π(y) = ∇Σ_y π(y) = 0: k1 in the loss pulls nowhere; "
                  "E[∇ k3] = ∇KL(ρ‖π) ≠ 0 pulls π toward the reference")


# ---- lesson 11: the GRPO family

@_checker("the dr_grpo aggregation")
def check_dr_grpo(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> tuple[bool, str]:
    """fn(per_token (B, T), mask (B, T), max_len) -> the scalar loss of --loss_type dr_grpo (rlhf_nb.ppo.aggregate_loss)."""
    from ..ppo import aggregate_loss

    g = _gen(11)
    per_token = torch.randn(4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]]).float()
    got = _tensor(_call(fn, per_token.clone(), mask.clone(), 8), "the loss")
    if got.numel() != 1:
        return False, f"the loss must be one number, got shape {tuple(got.shape)}"
    want = aggregate_loss(per_token, mask, "dr_grpo", max_len=8)
    if abs(float(got) - float(want)) <= 1e-5:
        return True, ("Σ_it m·ℓ / (B·L_max): the divisor is a constant, so every token weighs the same whatever the "
                      "length of its completion, and no batch's own lengths enter the gradient's scale")
    for other, why in (("bnpo", "you divided by the number of real tokens (Σ m): that is bnpo, one token mean; "
                                "dr_grpo divides by the constant B × max_len instead"),
                       ("grpo", "you took each completion's token mean and then the mean over completions: that is "
                                "grpo, the length bias itself (a token of a long completion weighs 1/|o_i|)")):
        if abs(float(got) - float(aggregate_loss(per_token, mask, other))) <= 1e-5:
            return False, why
    if abs(float(got) - float(per_token.sum() / (4 * 8))) <= 1e-5:
        return False, "you summed the padding too: multiply by the mask before summing"
    return False, f"got {float(got):.5f}, expected {float(want):.5f} = Σ_it m·ℓ / (B·max_len)"


KL_PLACEMENT_NAMES = ("k1 in reward", "k3 in loss × ratio", "k3 in loss", "k1 in loss")


@_checker("which KL placements are biased")
def check_biased_placements(answer: Any) -> tuple[bool, str]:
    """answer: the set of placements (names of KL_PLACEMENT_NAMES) whose expected gradient is NOT ∇KL(π‖π_ref);
    checked by enumerating a small categorical policy (rlhf_nb.course.grpo_lesson.expected_gradient)."""
    from .grpo_lesson import expected_gradient, relative_error, true_kl_gradient

    if answer is None:
        raise _NotAttempted
    if isinstance(answer, str) or not all(isinstance(a, str) for a in answer):
        return False, f"answer with a set of names from {KL_PLACEMENT_NAMES}, e.g. {{'k1 in loss'}}; got {answer!r}"
    unknown = [a for a in answer if a not in KL_PLACEMENT_NAMES]
    if unknown:
        return False, f"{unknown[0]!r} is not a placement; choose from {KL_PLACEMENT_NAMES}"
    g = _gen(12)
    z, z_ref = torch.randn(3, 11, generator=g), torch.randn(3, 11, generator=g)
    truth = true_kl_gradient(z, z_ref)
    errors = {p: relative_error(expected_gradient(z, z_ref, p), truth) for p in KL_PLACEMENT_NAMES}
    biased = {p for p, e in errors.items() if e > 1e-4}
    table = "; ".join(f"{p}: relative error {e:.3f}" for p, e in errors.items())
    if set(answer) == biased:
        return True, (f"enumerated on a 3 × 11 categorical: {table}. k1 in the reward (REINFORCE) and k3 × π/π_old "
                      f"both have E[∇] = Σ π·log(π/ρ)·∇log π = ∇KL(π‖ρ); plain k3 gives ∇KL(ρ‖π) (the forward KL), "
                      f"and k1 differentiated as a loss gives Σ π·∇log π = 0")
    missed, extra = sorted(biased - set(answer)), sorted(set(answer) - biased)
    why = []
    if missed:
        why.append(f"biased but not named: {missed}")
    if extra:
        why.append(f"named but unbiased: {extra}")
    return False, f"{'; '.join(why)} (enumerated: {table})"


# ---- lesson 12: verifiable rewards

@_checker("unbiased pass@k")
def check_pass_at_k(fn: Callable[[int, int, int], float]) -> tuple[bool, str]:
    """fn(n, c, k) -> pass@k estimated from n samples with c correct (rlhf_nb.passk.pass_at_k)."""
    from ..passk import pass_at_k

    cases = [(10, 0, 1), (10, 3, 1), (10, 3, 2), (10, 3, 8), (20, 1, 5), (200, 17, 50), (64, 64, 16), (256, 2, 100)]
    for n, c, k in cases:
        got, want = float(_call(fn, n, c, k)), pass_at_k(n, c, k)
        if abs(got - want) > 1e-6:
            if abs(got - (1 - (1 - c / n) ** k)) < 1e-9:
                return False, (f"n={n}, c={c}, k={k}: you returned 1 - (1 - c/n)^k = {got:.4f}, the plug-in: it is "
                               f"BIASED (E[(1 - c/n)^k] != (1 - p)^k for k > 1; it underestimates pass@k). Count "
                               f"k-subsets instead: 1 - C(n-c, k) / C(n, k) = {want:.4f}")
            return False, f"n={n}, c={c}, k={k}: got {got:.6f}, expected 1 - C(n-c,k)/C(n,k) = {want:.6f}"
    return True, ("1 - C(n-c,k)/C(n,k): the chance that a random k-subset of the n samples holds a correct one; its "
                  "mean over draws of the n samples is exactly 1 - (1-p)^k, for every k <= n")


CHECKER_CASES = (("37+48=", "85"), ("37+48=", "84"), ("37+48=", ""), ("37+48=", "85 "), ("37+48=", " 85"),
                 ("37+48=", "85 86"), ("37+48=", "085"), ("37+48=", "+85"), ("37+48=", "85.0"), ("0+0=", "0"),
                 ("0+0=", "00"), ("99+99=", "198"), ("37+48=", "37+48=85"), ("37+48=", "8 5"))


@_checker("the checker")
def check_checker(fn: Callable[[str, str], str]) -> tuple[bool, str]:
    """fn(prompt, completion) -> 'correct', 'wrong' or 'malformed', as rlhf_nb.tasks.check_answer."""
    from ..tasks import check_answer

    for prompt, completion in CHECKER_CASES:
        got, want = _call(fn, prompt, completion), check_answer(prompt, completion)
        if got != want:
            why = {"malformed": "only one canonical number is well-formed: no spaces, sign, leading zero, decimal "
                                "point or second answer, and an empty completion is no number",
                   "wrong": "it is a well-formed number, just not the sum", "correct": "it is exactly str(a + b)"}
            return False, f"{prompt}{completion!r}: you said {got!r}, it is {want!r}: {why[want]}"
    return True, (f"all {len(CHECKER_CASES)} cases agree, adversarial ones included (extra text, several answers, "
                  f"leading zeros, the empty completion): a reward hacker finds any form you accept")


@_checker("where the curves cross")
def check_crossing(answer: Any, crossing_k: int | None) -> tuple[bool, str]:
    """answer: the smallest k in 1, 2, 4, ..., 256 at which the base model's exact pass@k beats GRPO's (seed mean),
    or None for never; crossing_k: the stored sweep's (rlhf_nb.course.verifiable.crossing)."""
    if answer is ...:
        raise _NotAttempted
    if answer == crossing_k:
        return True, (f"k = {crossing_k}: RL moved probability onto answers it already liked; below k = {crossing_k} "
                      f"that wins, above it the base model's wider spread of answers wins" if crossing_k else
                      "the curves never cross here: RL stays above the base at every k")
    if crossing_k is None:
        return False, f"you said {answer}, but in this sweep GRPO's mean stays above the base at every k"
    return False, (f"you said {answer}; the seed-mean curves cross at k = {crossing_k} (the first k in 1..256 where "
                   f"the base is higher). pass@1 = mean p rises with RL, pass@k for large k counts prompts with any "
                   f"mass on the answer, and that is what narrowing loses")
