"""Live checks on each step's logged metrics: one warning line, once per kind, naming the likely cause.

    diag = Diagnostics(cfg)
    for line in diag.update(step, metrics):   # train() does this after every step
        print(line, file=sys.stderr)

Each rule reads only metrics that the loop already logs (docs/metrics.md) and fires when a tell-tale sign has
lasted a few steps. The thresholds were set on the kit's own runs: none fires on the healthy runs of lessons 00,
06 and 07, and each fires on the failures of `rlhf_nb.faults` that show it (tests/test_diagnostics.py). The line
points at the section of docs/troubleshooting.md that explains the symptom and its fixes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

DOC = "docs/troubleshooting.md"
PREFIX = "rlhf_nb warning"

# thresholds (see docs/troubleshooting.md for the healthy ranges they were set against)
NEG_KL_STEPS, NEG_KL_NATS = 3, 0.2  # objective/kl below 0 for this many steps, with a mean below -this
EOS_STEPS, EOS_FRAC = 3, 0.05  # rollout/eos_frac at or below this for this many steps, completions at max length
# one healthy step can spike (lesson 00's run: approx_kl 0.73, ratio 1.55 at step 5, then back): ask for 2 in a row
LARGE_STEPS = 2
APPROX_KL_MAX, CLIPFRAC_MAX = 0.5, 0.3  # healthy runs stay below ~0.05 and ~0.2 (tiny batches: one step to 0.3)
RATIO_DEV_MAX = 0.5  # |policy/ratio - 1|; healthy runs stay within a few percent
FIRST_STEP_KL = 1e-4  # |objective/kl| at step 1, where the policy is still an exact copy of the reference
ENTROPY_FRACTION = 0.2  # policy/entropy below this fraction of its first value
STD_FRACTION, STD_STEPS = 0.5, 2  # objective/scores_std below this fraction of its start (mean of 3 steps), for this many steps
# ...while the KL per token is above this. A falling spread alone is what nearing the optimum looks like: on the
# sentiment task π* has a score std of 0.10 at β = 0.02, 0.11 at β = 0.05 and 0.22 at β = 0.2, against the base
# model's 0.42, at 0.2-0.6 nats per token, and lesson 06's runs at β = 0.02 (J/J* 0.77-0.96) overshoot it to 1.6;
# reward hacking pays far more (lesson 10's run: 11 nats per token when the spread collapses; lesson 06's β = 0: 10-14)
HACK_KL_PER_TOKEN = 2.0
KL_PER_TOKEN_MAX, KL_STEPS = 4.0, 3  # objective/kl / rollout/completion_len; healthy lesson runs stay below ~2
GRAD_STEPS, GRAD_ZERO = 2, 1e-8  # policy/grad_norm at or below this for this many steps
KL_LOSS_MAX = 5.0  # loss/kl (token mean of k3, only with --kl_in_loss); healthy runs stay below ~0.1


@dataclass(frozen=True)
class Rule:
    """One tell-tale sign: its kind, the doc section, the likely causes, and a check on the history so far."""

    kind: str
    section: str  # anchor in docs/troubleshooting.md
    cause: str  # the likely causes, in one line
    check: Callable[[list[dict], dict], str | None]  # (history, context) -> what was seen, or None


def _last(h: list[dict], key: str, n: int) -> list[float] | None:
    """The last n values of `key`, or None when fewer than n steps logged it (or one was None/nan)."""
    vals = [r.get(key) for r in h[-n:]]
    if len(vals) < n or any(v is None or v != v for v in vals):
        return None
    return vals


def _negative_kl(h, ctx):
    kl = _last(h, "objective/kl", NEG_KL_STEPS)
    if kl and max(kl) < 0 and sum(kl) / len(kl) < -NEG_KL_NATS:
        return f"objective/kl has been below 0 for {NEG_KL_STEPS} steps (mean {sum(kl) / len(kl):.2f} nats)"
    return None


def _never_stops(h, ctx):
    eos, length = _last(h, "rollout/eos_frac", EOS_STEPS), _last(h, "rollout/completion_len", EOS_STEPS)
    max_len = ctx.get("max_new_tokens")
    if eos and length and max_len and max(eos) <= EOS_FRAC and min(length) >= max_len - 0.5:
        return (f"rollout/eos_frac has been <= {EOS_FRAC} for {EOS_STEPS} steps with completions at "
                f"max_new_tokens={max_len}")
    return None


def _update_too_large(h, ctx):
    akl, cf = _last(h, "policy/approx_kl", LARGE_STEPS), _last(h, "policy/clipfrac", LARGE_STEPS)
    if akl and min(akl) > APPROX_KL_MAX:
        return f"policy/approx_kl = {akl[-1]:.3g} for {LARGE_STEPS} steps (healthy: below ~0.05)"
    if cf and min(cf) > CLIPFRAC_MAX:
        return f"policy/clipfrac = {cf[-1]:.2f} for {LARGE_STEPS} steps (healthy: a few percent up to ~0.2)"
    return None


def _ratio_off(h, ctx):
    ratio = _last(h, "policy/ratio", LARGE_STEPS)
    if ratio and min(abs(x - 1.0) for x in ratio) > RATIO_DEV_MAX:
        return f"policy/ratio = {ratio[-1]:.3g} for {LARGE_STEPS} steps (healthy: within a few percent of 1)"
    return None


def _kl_at_first_step(h, ctx):
    r = h[-1]
    if r.get("step") == 1 and r.get("objective/kl") is not None and abs(r["objective/kl"]) > FIRST_STEP_KL:
        return f"objective/kl = {r['objective/kl']:.3g} at step 1, before any update (it must be exactly 0)"
    return None


def _kl_loss_spike(h, ctx):
    v = h[-1].get("loss/kl")
    if v is not None and v > KL_LOSS_MAX:
        return f"loss/kl = {v:.4g} nats per token (healthy: below ~0.1)"
    return None


def _entropy_collapse(h, ctx):
    first, now = h[0].get("policy/entropy"), h[-1].get("policy/entropy")
    if first and now is not None and now < ENTROPY_FRACTION * first:
        return f"policy/entropy fell from {first:.2f} to {now:.3f} nats"
    return None


def _kl_per_token(h: list[dict], n: int) -> list[float] | None:
    """objective/kl / rollout/completion_len over the last n steps (None until both exist for n steps)."""
    kl, length = _last(h, "objective/kl", n), _last(h, "rollout/completion_len", n)
    return [k / max(t, 1.0) for k, t in zip(kl, length)] if kl and length else None


def _kl_runaway(h, ctx):
    per_token = _kl_per_token(h, KL_STEPS)
    if per_token and min(per_token) > KL_PER_TOKEN_MAX:
        return f"objective/kl = {h[-1]['objective/kl']:.3g} nats ({per_token[-1]:.1f} per token) for {KL_STEPS} steps"
    return None


def _scores_std_collapse(h, ctx):
    if len(h) < 3 + STD_STEPS:
        return None
    std0 = sum(r["objective/scores_std"] for r in h[:3]) / 3
    mean0 = sum(r["objective/scores"] for r in h[:3]) / 3
    std, score = _last(h, "objective/scores_std", STD_STEPS), _last(h, "objective/scores", STD_STEPS)
    per_token = _kl_per_token(h, STD_STEPS)
    if not (std0 > 0 and std and score and per_token):
        return None
    if max(std) < STD_FRACTION * std0 and min(score) > mean0 and min(per_token) > HACK_KL_PER_TOKEN:
        return (f"objective/scores rose ({mean0:.3f} -> {score[-1]:.3f}) while objective/scores_std fell "
                f"({std0:.3f} -> {std[-1]:.3f})")
    return None


def _no_gradient(h, ctx):
    g = _last(h, "policy/grad_norm", GRAD_STEPS)
    if g and max(g) <= GRAD_ZERO:
        return f"policy/grad_norm has been 0 for {GRAD_STEPS} steps"
    return None


RULES: tuple[Rule, ...] = (
    Rule("kl_at_first_step", "policy-and-reference-disagree-at-step-1",
         "dropout left on in the policy (model.train()), or a reference that is not a copy of the initial policy",
         _kl_at_first_step),
    Rule("negative_kl", "negative-kl",
         "the sampler is not the scorer: top-k/top-p/min-length sampling, dropout left on, or missing position ids",
         _negative_kl),
    Rule("kl_spike", "kl-spike",
         "the KL is scored on other inputs than the samples were drawn with: missing position ids on left-padded "
         "prompts (TRL 1.16's GRPO), or an update far too large", _kl_loss_spike),
    Rule("kl_runaway", "kl-runaway",
         "nothing holds the policy near the reference: --kl_coef too small (or 0) for the learning rate, or a KL "
         "term without gradient (k1 in the loss); often reward hacking, so read the samples", _kl_runaway),
    Rule("ratio_off", "ratio-far-from-1",
         "log-probs differ between rollout and update for the same weights: dropout left on, or a scoring bug",
         _ratio_off),
    Rule("update_too_large", "update-too-large",
         "the learning rate is too high for this batch (or too many PPO epochs over it)", _update_too_large),
    Rule("entropy_collapse", "entropy-collapse",
         "the policy turned deterministic: learning rate too high, or nothing (KL penalty, entropy bonus) holds it",
         _entropy_collapse),
    Rule("scores_std_collapse", "reward-hacking",
         "reward hacking: every sample found the same trick; raise --kl_coef, and read the samples",
         _scores_std_collapse),
    Rule("never_stops", "completions-never-stop",
         "nothing teaches stopping: EOS masked out of the loss (pad = EOS), or no --missing_eos_penalty",
         _never_stops),
    Rule("no_gradient", "zero-advantages",
         "every advantage is zero: all completions of a group scored alike (GRPO), or the reward ignores them",
         _no_gradient),
)


class Diagnostics:
    """Feed it each step's metrics; it returns the new warning lines (each kind at most once per run)."""

    def __init__(self, cfg=None, rules: tuple[Rule, ...] = RULES):
        self.context = {"max_new_tokens": getattr(cfg, "max_new_tokens", None)}
        self.rules, self.history, self.fired = rules, [], set()

    def update(self, step: int, metrics: dict[str, float]) -> list[str]:
        """Record one step; return a warning line for each rule that fires for the first time."""
        self.history.append({"step": step, **metrics})
        lines = []
        for rule in self.rules:
            if rule.kind in self.fired:
                continue
            seen = rule.check(self.history, self.context)
            if seen:
                self.fired.add(rule.kind)
                lines.append(f"{PREFIX} [{rule.kind}] step {step}: {seen}; likely cause: {rule.cause} "
                             f"(see {DOC}#{rule.section})")
        return lines
