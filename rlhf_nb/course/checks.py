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
            if got.shape == want.shape and torch.allclose(got * mask, want, atol=1e-5):
                why += " — the padding entries must be 0"
            else:
                why += " — remember V after the last real token is 0 and δ_t = r_t + γ·V_{t+1} − V_t"
            return False, why
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
    from ..masking import masked_whiten

    _, x, mask = _gae_inputs()
    x = x * 3 + 1
    got = _tensor(_call(fn, x.clone(), mask.clone()), "the result")
    want = masked_whiten(x, mask)
    ok, why = _close(got, want, "whitened values", atol=1e-4)
    if not ok and got.shape == want.shape:
        if torch.allclose(got, (x - x.mean()) / x.std(), atol=1e-4):
            why += " — the padding entries entered μ and σ; use only the masked entries"
        elif torch.allclose(got * mask, want, atol=1e-4):
            why += " — the padding entries must be 0"
    return ok, why if not ok else "mean 0, std 1 over real tokens, padding 0 — as masked_whiten"


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

NO_COUNTERPART = "none"  # the answer for a knob TRL's GRPO/RLOO have no field for


def check_group_advantage(answer: Any, scores: Sequence[float], num_generations: int, method: str = "grpo") -> bool:
    """Exercise 1: the group-relative advantage of every completion (a list of B numbers, 3 decimals suffice)."""
    from ..advantages import group_advantages

    name = f"{method} advantages"
    s = torch.tensor([float(x) for x in scores])
    want = group_advantages(s, num_generations, method=method).tolist()
    if answer is None:
        print(f"{TODO} — {name}: set `answer` to a list of {len(want)} numbers, one per completion")
        return False
    try:
        got = [float(x) for x in answer]
    except (TypeError, ValueError):
        return _verdict(False, name, f"answer with a list of {len(want)} numbers; got {answer!r}")
    if len(got) != len(want) or not all(math.isfinite(x) for x in got):
        return _verdict(False, name, f"answer with {len(want)} finite numbers, one per completion; got {len(got)}")
    if method == "grpo":
        how = ("A_i = (r_i − mean of its group) / (std of its group + 1e-4), std unbiased (divide by k − 1), "
               f"groups of {num_generations} consecutive completions")
    else:
        how = ("A_i = r_i − mean of the other k − 1 in its group, then whitened over the batch: "
               "(A − mean)/(std + 1e-4)")
    ok = all(abs(g - w) < 1e-3 for g, w in zip(got, want))
    return _verdict(ok, name, f"{how} gives {[round(w, 3) for w in want]}")


def check_knob(name: str, answer: Any) -> bool:
    """Exercise 2: the TRL config field that rlhf_nb's RunConfig knob `name` maps to (or "none" if TRL has none)."""
    from ..bridges.trl import KNOB_MAP, UNMAPPED

    title = f"where `{name}` goes in TRL"
    key = next((k for k in KNOB_MAP if name in [x.strip() for x in k.split(",")]), None)
    if key is None and name not in UNMAPPED:
        raise ValueError(f"{name!r} is neither in KNOB_MAP nor in UNMAPPED (rlhf_nb/bridges/trl.py)")
    if answer is None:
        print(f"{TODO} — {title}: set `answer` to a TRL field name as a string, or {NO_COUNTERPART!r}")
        return False
    if not isinstance(answer, str):
        return _verdict(False, title, f"answer with a string (a GRPOConfig field name); got {answer!r}")
    got = answer.strip().lower()
    if key is None:
        return _verdict(got == NO_COUNTERPART, title, f"TRL's GRPO/RLOO have no counterpart: {UNMAPPED[name]}")
    fields, how = KNOB_MAP[key]
    want = [f.strip().lower() for f in fields.split(",")]
    return _verdict(got in want, title, f"`{fields}`: {how}")


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

def check_diagnosis(answer: Any) -> bool:
    """Name the hidden fault of each mystery run: {label: fault name, or "healthy"} for every run of the exercise."""
    from ..faults import FAULTS, HEALTHY, MYSTERY

    name = "diagnosis"
    allowed = sorted(FAULTS) + [HEALTHY]
    if answer is None:
        return _not_yet(name, f"set `answer` to a dict {{label: fault}} for the runs {', '.join(MYSTERY)}; "
                              f"a fault is one of {', '.join(allowed)}")
    if not isinstance(answer, dict) or sorted(answer) != sorted(MYSTERY):
        return _verdict(False, name, f"answer with a dict whose keys are exactly {', '.join(MYSTERY)}; got {answer!r}")
    unknown = {k: v for k, v in answer.items() if v not in allowed}
    if unknown:
        return _verdict(False, name, f"{unknown} names no fault; choose from {', '.join(allowed)}")
    wrong = []
    for label, (truth, _) in MYSTERY.items():
        if answer[label] != truth:
            look = ("a healthy run: every metric in its usual range" if truth == HEALTHY
                    else f"look again at {FAULTS[truth].metric}")
            wrong.append(f"run {label} is not {answer[label]} ({look})")
    if wrong:
        return _verdict(False, name, f"{len(MYSTERY) - len(wrong)} of {len(MYSTERY)} right; " + "; ".join(wrong))
    return _verdict(True, name, "; ".join(f"{label}: {truth}" + ("" if truth == HEALTHY else
                                                                  f", given away by {FAULTS[truth].metric}")
                                          for label, (truth, _) in MYSTERY.items()))


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
