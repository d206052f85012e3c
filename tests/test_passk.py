"""pass@k: the unbiased estimator (Chen et al. 2021) and the exact value from the policy's probabilities."""
from __future__ import annotations

import math

import numpy as np
import pytest

import rlhf_nb
from rlhf_nb.passk import correct_probs, estimated_pass_at_k, exact_pass_at_k, pass_at_k, sample_counts


def test_the_estimator_on_hand_computed_values():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    assert pass_at_k(10, 3, 8) == 1.0  # every 8 of 10 holds one of the 3
    assert rlhf_nb.pass_at_k(200, 17, 50) == pytest.approx(1 - math.comb(183, 50) / math.comb(200, 50))


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, 1, 0), (5, 1, 6), (5, -1, 1), (5.0, 1, 1), (5, True, 1)])
def test_the_estimator_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize("p", [0.02, 0.3, 0.9])
@pytest.mark.parametrize("k", [1, 4, 16])
def test_the_estimator_is_unbiased_for_a_known_p(p, k):
    n = 16
    # exactly: its mean over c ~ Binomial(n, p) is 1 - (1 - p)^k
    mean = sum(math.comb(n, c) * p**c * (1 - p) ** (n - c) * pass_at_k(n, c, k) for c in range(n + 1))
    assert mean == pytest.approx(1 - (1 - p) ** k, abs=1e-12)
    # and by sampling: 20 000 draws of n samples
    c = np.random.default_rng(0).binomial(n, p, size=20_000)
    est = np.array([pass_at_k(n, int(x), k) for x in c])
    assert abs(est.mean() - (1 - (1 - p) ** k)) < 4 * est.std() / math.sqrt(len(est)) + 1e-9


def test_exact_pass_at_k():
    np.testing.assert_allclose(exact_pass_at_k([0.0, 0.5, 1.0], [1, 2, 1000]), [0.5, (0 + 0.75 + 1) / 3, 2 / 3])
    assert exact_pass_at_k([1e-9], [1])[0] == pytest.approx(1e-9)  # log1p: no underflow to 0


@pytest.fixture(scope="module")
def arith():
    from rlhf_nb.policy import load_policy
    from rlhf_nb.tasks import ARITH_MODEL_DIR, answer_of, arith_split
    model, tok = load_policy(str(ARITH_MODEL_DIR))
    held = arith_split()[1][:6]
    return model, tok, held, [answer_of(p) for p in held]


def test_the_search_is_complete_and_its_remainder_bounds_what_it_cut(arith):
    model, tok, prompts, answers = arith
    full, rest0 = correct_probs(model, tok, prompts, answers, 6, prune=0.0)
    assert rest0.max() == 0.0
    cut, rest = correct_probs(model, tok, prompts, answers, 6, prune=1e-4)
    assert np.all(cut <= full + 1e-12) and np.all(full <= cut + rest + 1e-12) and rest.max() > 0
    # the answer's digits then EOS alone: a lower bound; the search adds the paths with PAD drawn on the way
    import torch
    for i, (p, a) in enumerate(zip(prompts, answers)):
        ids = tok(p + a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        P = len(tok(p, add_special_tokens=False)["input_ids"])
        direct = math.exp(sum(logp[t - 1, ids[t]].item() for t in range(P, len(ids))))
        assert direct <= full[i] * (1 + 1e-5)  # float32 logits: equal up to rounding, or more
        assert full[i] == pytest.approx(direct, rel=1e-3)


def test_exact_p_matches_the_sampler(arith):
    from rlhf_nb.tasks import check_answer
    model, tok, prompts, answers = arith
    p, _ = correct_probs(model, tok, prompts, answers, 6)
    n = 1000
    c = sample_counts(model, tok, prompts, n, 6, lambda q, x: check_answer(q, x) == "correct", seed=0)
    z = (c / n - p) / np.sqrt(p * (1 - p) / n + 1e-12)
    assert np.abs(z).max() < 4.5, (c / n, p)
    est = estimated_pass_at_k(c, n, [1, 8])
    np.testing.assert_allclose(est, exact_pass_at_k(p, [1, 8]), atol=0.03)
