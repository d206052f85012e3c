"""The KL-regularised optimum against the closed form on small categoricals, where π* is known exactly."""
import math

import pytest
import torch

from rlhf_nb.optimum import objective, optimum_by_prompt, optimum_from_scores

RHO = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03], dtype=torch.float64)
R = torch.tensor([-0.5, 0.0, 0.3, 0.8, 1.0], dtype=torch.float64)


def exact(rho, r, beta):
    """π* = ρ·exp(r/β)/Z by enumerating the outcomes: (E_π*[r], KL(π*‖ρ), β·log Z)."""
    p = rho * torch.exp(r / beta)
    z = p.sum()
    p = p / z
    return float((p * r).sum()), float((p * (p / rho).log()).sum()), beta * math.log(float(z))


def draw(rho, r, n, seed):
    g = torch.Generator().manual_seed(seed)
    return r[torch.multinomial(rho, n, replacement=True, generator=g)]


@pytest.mark.parametrize("beta", [0.1, 0.3, 1.0])
def test_sampled_estimate_converges_to_the_closed_form(beta):
    score, kl, j = exact(RHO, R, beta)
    est = optimum_from_scores(draw(RHO, R, 200_000, seed=1), beta)
    assert est["n"] == 200_000
    assert est["score"] == pytest.approx(score, abs=5e-3)
    assert est["kl"] == pytest.approx(kl, abs=1e-2)
    assert est["J_star"] == pytest.approx(j, abs=5e-3)


def test_estimate_satisfies_j_equals_score_minus_beta_kl():
    est = optimum_from_scores(draw(RHO, R, 500, seed=2), 0.2)
    assert est["J_star"] == pytest.approx(objective(est["score"], est["kl"], 0.2), abs=1e-12)


def test_estimate_is_biased_low_at_small_n():
    beta = 0.1
    _, _, j = exact(RHO, R, beta)
    small = [optimum_from_scores(draw(RHO, R, 8, seed=s), beta)["J_star"] for s in range(400)]
    assert sum(small) / len(small) < j - 0.01  # log of a sample mean: Jensen
    big = optimum_from_scores(draw(RHO, R, 100_000, seed=3), beta)["J_star"]
    assert abs(big - j) < abs(sum(small) / len(small) - j)


def test_beta_zero_is_the_best_sample():
    r = torch.tensor([0.1, 0.9, 0.9, -1.0])
    est = optimum_from_scores(r, 0.0)
    assert est["score"] == pytest.approx(0.9) and est["J_star"] == pytest.approx(0.9)
    assert est["kl"] == pytest.approx(math.log(4 / 2))  # two tied best samples share the mass


def test_optimum_by_prompt_averages_the_per_prompt_optima():
    rho2 = torch.tensor([0.1, 0.1, 0.2, 0.3, 0.3], dtype=torch.float64)
    beta = 0.25
    a, b = exact(RHO, R, beta), exact(rho2, R, beta)
    sa, sb = draw(RHO, R, 100_000, seed=4), draw(rho2, R, 100_000, seed=5)
    est = optimum_by_prompt(torch.cat([sa, sb]), ["x"] * len(sa) + ["y"] * len(sb), beta)
    assert est["prompts"] == 2 and est["n"] == 100_000
    assert est["J_star"] == pytest.approx((a[2] + b[2]) / 2, abs=5e-3)
    assert est["kl"] == pytest.approx((a[1] + b[1]) / 2, abs=1e-2)
    # pooling the two prompts would let π* prefer the better prompt: a larger, wrong J*
    pooled = optimum_from_scores(torch.cat([sa, sb]), beta)["J_star"]
    assert pooled > est["J_star"] + 1e-3


@pytest.mark.parametrize("beta", [-0.1, float("nan"), float("inf")])
def test_bad_beta_is_one_clear_error(beta):
    with pytest.raises(ValueError, match="beta must be"):
        optimum_from_scores(R, beta)


def test_mismatched_prompts_is_one_clear_error():
    with pytest.raises(ValueError, match="prompts must hold one prompt per score"):
        optimum_by_prompt(R, ["a", "b"], 0.1)


def test_score_base_samples_cover_every_prompt_and_reproduce():
    from rlhf_nb.corpus import PROMPTS
    from rlhf_nb.optimum import score_base_samples, kl_regularised_optimum

    r, prompts = score_base_samples(1, max_new_tokens=4, seed=5)
    assert len(r) == len(PROMPTS) and sorted(prompts) == sorted(PROMPTS)
    assert torch.equal(r, score_base_samples(1, max_new_tokens=4, seed=5)[0])
    with pytest.raises(ValueError, match="n_per_prompt"):
        score_base_samples(0)
    out = kl_regularised_optimum(betas=(0.05,), n=len(PROMPTS), max_new_tokens=4, seed=5)
    assert out["n"] == len(PROMPTS) and out["n_per_prompt"] == 1
    # one sample per prompt: pi* can only be that sample, so no KL and J* = its mean score
    assert out["betas"][0.05] == {"score": pytest.approx(float(r.mean())), "kl": pytest.approx(0.0, abs=1e-12),
                                  "J_star": pytest.approx(float(r.mean())), "n": 1}
