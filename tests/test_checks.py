"""Every exercise checker: a right answer passes, a wrong one fails and says why, an empty stub is 'not attempted'."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf_nb.course import checks
from rlhf_nb.advantages import compute_gae
from rlhf_nb.kl import kl_k3
from rlhf_nb.masking import masked_whiten
from rlhf_nb.ppo import explained_variance, policy_loss


def verdict(capsys, ok: bool, *reason: str):
    out = capsys.readouterr().out
    assert out.startswith(checks.OK if ok else checks.BAD), out
    for r in reason:
        assert r in out, out
    return out


def not_implemented(*args):
    raise NotImplementedError


def test_stub_is_not_attempted_and_errors_are_reported(capsys):
    assert checks.check_gae(not_implemented) is False
    assert capsys.readouterr().out.startswith(checks.TODO)
    assert checks.check_gae(lambda *a: None) is False
    assert capsys.readouterr().out.startswith(checks.TODO)
    assert checks.check_gae(lambda *a: 1 / 0) is False
    verdict(capsys, False, "ZeroDivisionError")
    assert checks.check_adaptive_beta(None, 0.1, 1.0, 1.0, 1, 10) is False
    assert capsys.readouterr().out.startswith(checks.TODO)


def test_temperature_softmax(capsys):
    assert checks.check_temperature_softmax(lambda z, T: torch.softmax(z / T, -1))
    verdict(capsys, True)
    assert not checks.check_temperature_softmax(lambda z, T: torch.softmax(z * T, -1))
    verdict(capsys, False, "divide the logits by T")


def test_sequence_logprob(capsys):
    assert checks.check_sequence_logprob(lambda lp, m: (lp * m).sum(1))
    verdict(capsys, True)
    assert not checks.check_sequence_logprob(lambda lp, m: lp.sum(1))
    verdict(capsys, False, "padding")


def test_top_k_support(capsys):
    logits = torch.tensor([3.0, 1.0, 2.0, 0.5, -1.0])
    assert checks.check_top_k_support(3, logits, 3)
    verdict(capsys, True)
    assert not checks.check_top_k_support(5, logits, 3)
    verdict(capsys, False, "3 tokens survive top-3")


def test_composite(capsys):
    from rlhf_nb.rewards import get_reward

    p, c = ["The plot was", "The cast"], [" great fun, highly recommended", " dull and slow."]
    w = {"sentiment": 1.0, "phrase": 0.5, "length": 0.5}
    right = sum(wk * get_reward(k)(p, c) for k, wk in w.items())
    assert checks.check_composite(right, p, c, w)
    verdict(capsys, True)
    assert not checks.check_composite(get_reward("sentiment")(p, c), p, c, w)
    verdict(capsys, False, "composite score differs")


def test_bradley_terry_loss(capsys):
    assert checks.check_bradley_terry_loss(lambda w, l: -F.logsigmoid(w - l).mean())
    verdict(capsys, True)
    assert not checks.check_bradley_terry_loss(lambda w, l: -F.logsigmoid(l - w).mean())
    verdict(capsys, False, "swapped")
    assert not checks.check_bradley_terry_loss(lambda w, l: -torch.log(torch.sigmoid(w - l)).mean())
    verdict(capsys, False, "logsigmoid")


def test_preference_probability(capsys):
    assert checks.check_preference_probability(0.7311, 0.6, 0.45, 0.15)
    verdict(capsys, True)
    assert not checks.check_preference_probability(0.5, 0.6, 0.45, 0.15)
    verdict(capsys, False, "0.7311")


def test_gae(capsys):
    assert checks.check_gae(lambda r, v, m, g, l: compute_gae(r, v, m, g, l)[0])
    verdict(capsys, True)
    assert checks.check_gae(lambda r, v, m, g, l: compute_gae(r, v, m, g, l))  # the (adv, returns) tuple is fine too
    capsys.readouterr()
    assert not checks.check_gae(lambda r, v, m, g, l: compute_gae(r, v, m, g, 1.0)[0])
    verdict(capsys, False, "advantages at")


def test_reward_to_go(capsys):
    assert checks.check_reward_to_go(lambda r, m: (r * m).flip(1).cumsum(1).flip(1) * m)
    verdict(capsys, True)
    assert not checks.check_reward_to_go(lambda r, m: (r * m).cumsum(1) * m)
    verdict(capsys, False, "running sum from the start")


def test_whiten(capsys):
    assert checks.check_whiten(masked_whiten)
    verdict(capsys, True)
    assert not checks.check_whiten(lambda x, m: (x - x.mean()) / x.std())
    verdict(capsys, False, "padding entries entered")


def test_exact_kl(capsys):
    assert checks.check_exact_kl(lambda p, q: (p * (p / q).log()).sum())
    verdict(capsys, True)
    assert not checks.check_exact_kl(lambda p, q: (q * (q / p).log()).sum())
    verdict(capsys, False, "not symmetric")


def test_k3(capsys):
    assert checks.check_k3(kl_k3)
    verdict(capsys, True)
    assert not checks.check_k3(lambda lp, ref: kl_k3(ref, lp))
    verdict(capsys, False, "ρ/π")


def test_adaptive_beta(capsys):
    # e = clip(12/6 - 1, ±0.2) = 0.2 -> beta = 0.1 * (1 + 0.2 * 32 / 10000)
    assert checks.check_adaptive_beta(0.1 * (1 + 0.2 * 32 / 10000), 0.1, 12.0, 6.0, 32, 10000)
    verdict(capsys, True)
    assert not checks.check_adaptive_beta(0.1 * (1 + 1.0 * 32 / 10000), 0.1, 12.0, 6.0, 32, 10000)
    verdict(capsys, False, "clipped")


def test_clipped_loss(capsys):
    assert checks.check_clipped_loss(lambda *a: policy_loss(*a)[0])
    verdict(capsys, True)

    def min_instead(lp, lo, a, m, eps):
        r = torch.exp(lp - lo)
        return (torch.min(-a * r, -a * r.clamp(1 - eps, 1 + eps)) * m).sum() / m.sum()

    assert not checks.check_clipped_loss(min_instead)
    verdict(capsys, False, "max")


def test_clipfrac(capsys):
    assert checks.check_clipfrac(lambda *a: policy_loss(*a)[1]["policy/clipfrac"])
    verdict(capsys, True)

    def outside(lp, lo, a, m, eps):
        return float((((torch.exp(lp - lo) - 1).abs() > eps).float() * m).sum() / m.sum())

    assert not checks.check_clipfrac(outside)
    verdict(capsys, False, "count only tokens")


def test_explained_variance(capsys):
    assert checks.check_explained_variance(explained_variance)
    verdict(capsys, True)
    assert not checks.check_explained_variance(lambda v, r, m: 1 - float(((r - v) * m).var() / (r * m).var()))
    verdict(capsys, False, "expected")


def test_adam_first_update(capsys):
    assert checks.check_adam_first_update(lambda g, lr, eps: -lr * g / (g.abs() + eps))
    verdict(capsys, True, "whatever its gradient")
    wrong = {
        "plain gradient descent": lambda g, lr, eps: -lr * g,
        "minus sign": lambda g, lr, eps: lr * g / (g.abs() + eps),
        "ε is missing": lambda g, lr, eps: -lr * torch.sign(g),
        "bias correction": lambda g, lr, eps: -lr * 0.1 * g / ((0.001 * g * g).sqrt() + eps),
        "m̂ = g and √v̂ = |g|": lambda g, lr, eps: -lr * g / (g.abs() + 2 * eps),
        "shape": lambda g, lr, eps: torch.zeros(3),
    }
    for reason, fn in wrong.items():
        assert not checks.check_adam_first_update(fn)
        verdict(capsys, False, reason)
    assert checks.check_adam_first_update(not_implemented) is False
    assert capsys.readouterr().out.startswith(checks.TODO)
