"""KL estimators against the exact KL of small categoricals; the β controllers against hand-computed steps."""
import math

import pytest
import torch

from rlhf_nb.kl import AdaptiveKLController, FixedKLController, kl_estimate, kl_k1, kl_k2, kl_k3


def _dists():
    pi = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    rho = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    return pi, rho


def test_estimators_converge_to_exact_kl():
    pi, rho = _dists()
    exact = float((pi * (pi.log() - rho.log())).sum())  # KL(π‖ρ) analytically
    g = torch.Generator().manual_seed(0)
    y = torch.multinomial(pi, 200_000, replacement=True, generator=g).view(400, 500)  # (B, T) tokens from π
    logp, ref_logp = pi.log()[y], rho.log()[y]
    k1, k2, k3 = kl_k1(logp, ref_logp), kl_k2(logp, ref_logp), kl_k3(logp, ref_logp)
    assert k1.shape == (400, 500)
    assert abs(k1.mean().item() - exact) < 0.01  # unbiased
    assert abs(k3.mean().item() - exact) < 0.01  # unbiased
    assert (k1 < 0).any()  # a single k1 sample can be negative
    assert (k2 >= 0).all() and (k3 >= 0).all()
    assert k3.var() < k1.var()  # the point of k3: lower variance


def test_estimator_formulas_and_dispatch():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    d = logp - ref
    r = torch.exp(ref - logp)
    assert torch.allclose(kl_estimate(logp, ref), d)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * d**2)
    assert torch.allclose(kl_estimate(logp, ref, "k3"), (r - 1) - torch.log(r))
    assert kl_k3(logp, ref)[0, 2] == 0  # identical policies: zero
    with pytest.raises(ValueError, match=r"estimator.*k1.*k2.*k3"):
        kl_estimate(logp, ref, "k4")


def test_fixed_controller():
    c = FixedKLController(0.05)
    c.update(10.0, 64)
    assert c.value == 0.05
    c2 = FixedKLController(1.0)
    c2.load_state_dict(c.state_dict())
    assert c2.value == 0.05
    with pytest.raises(ValueError, match="kl_coef"):
        FixedKLController(-0.1)


def test_adaptive_controller_hand_computed():
    c = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10_000)
    expected = 0.2
    # (kl, n_steps, clipped error)
    for kl, n, e in [(9.0, 512, 0.2), (6.6, 256, 0.1), (3.0, 512, -0.2), (6.0, 100, 0.0), (0.0, 1000, -0.2), (100.0, 10, 0.2)]:
        c.update(kl, n)
        expected *= 1 + e * n / 10_000
        assert math.isclose(c.value, expected, rel_tol=1e-12)
    # the first three steps by hand: 0.2·1.01024·1.00256·0.98976
    c3 = AdaptiveKLController(0.2, 6.0, 10_000)
    for kl, n in [(9.0, 512), (6.6, 256), (3.0, 512)]:
        c3.update(kl, n)
    assert math.isclose(c3.value, 0.2 * 1.01024 * 1.00256 * 0.98976, rel_tol=1e-12)


def test_adaptive_state_dict_roundtrip_and_validation():
    c = AdaptiveKLController(0.1, 6.0, 10_000)
    c.update(12.0, 64)
    s = c.state_dict()
    assert all(type(v) is float for v in s.values())
    c2 = AdaptiveKLController(0.5, 1.0, 1.0)
    c2.load_state_dict(s)
    assert c2.state_dict() == s
    c.update(1.0, 32)
    c2.update(1.0, 32)
    assert c.value == c2.value
    with pytest.raises(ValueError, match="init_kl_coef"):
        AdaptiveKLController(-1.0, 6.0, 10)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, 0.0, 10)
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(0.1, 6.0, 0)
