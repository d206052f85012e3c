"""Per-token rewards, GAE and group baselines against plain Python loops."""
import pytest
import torch

from rlhf_nb.advantages import (
    compute_gae,
    group_advantages,
    last_token_index,
    per_token_rewards,
    whiten_advantages,
    whiten_rewards,
)


def _mask(lengths, T, side):
    m = torch.zeros(len(lengths), T)
    for i, n in enumerate(lengths):
        if side == "right":
            m[i, :n] = 1
        else:
            m[i, T - n:] = 1
    return m


def _gae_reference(rewards, values, mask, gamma, lam):
    """Plain double loop: for each row, run GAE over its real tokens only, V after the last one = 0."""
    B, T = rewards.shape
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        idx = [t for t in range(T) if mask[b, t] > 0]
        a_next, v_next = 0.0, 0.0
        for t in reversed(idx):
            delta = float(rewards[b, t]) + gamma * v_next - float(values[b, t])
            a_next = delta + gamma * lam * a_next
            adv[b][t] = a_next
            v_next = float(values[b, t])
    adv = torch.tensor(adv, dtype=rewards.dtype)
    return adv, (adv + values) * mask


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_double_loop(side, gamma, lam):
    g = torch.Generator().manual_seed(0)
    lengths, T = [7, 3, 1, 5, 6], 7
    mask = _mask(lengths, T, side)
    rewards = torch.randn(5, T, generator=g, dtype=torch.float64)
    values = torch.randn(5, T, generator=g, dtype=torch.float64)
    adv, ret = compute_gae(rewards, values, mask, gamma, lam)
    adv_ref, ret_ref = _gae_reference(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv, adv_ref) and torch.allclose(ret, ret_ref)
    assert torch.all(adv[mask == 0] == 0) and torch.all(ret[mask == 0] == 0)


def test_gae_ignores_padding_content_and_lambda1_is_monte_carlo():
    mask = _mask([3, 2], 4, "right")
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0], [0.5, 2.0, 9.0, 9.0]])
    values = torch.tensor([[0.3, 0.2, 0.1, 7.0], [0.0, 1.0, 7.0, 7.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # λ = 1, γ = 1: the return is the undiscounted reward-to-go, whatever V is
    assert torch.allclose(ret, torch.tensor([[1.0, 1.0, 1.0, 0.0], [2.5, 2.0, 0.0, 0.0]]))


@pytest.mark.parametrize("side", ["right", "left"])
def test_per_token_rewards_score_at_last_real_token(side):
    lengths, T = [4, 2, 1], 4
    mask = _mask(lengths, T, side)
    kl = torch.arange(12.0).view(3, 4) / 10
    scores = torch.tensor([1.0, -2.0, 3.0])
    beta = 0.5
    rewards, nsr = per_token_rewards(scores, kl, mask, beta)
    for b in range(3):
        last = max(t for t in range(T) if mask[b, t] > 0)  # the plain way
        for t in range(T):
            expect_nsr = -beta * float(kl[b, t]) if mask[b, t] > 0 else 0.0
            assert abs(float(nsr[b, t]) - expect_nsr) < 1e-6
            expect_r = expect_nsr + (float(scores[b]) if t == last else 0.0)
            assert abs(float(rewards[b, t]) - expect_r) < 1e-6
    assert torch.allclose(rewards.sum(1), scores + nsr.sum(1))


def test_per_token_rewards_rejects_empty_rows():
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="mask"):
        per_token_rewards(torch.zeros(2), torch.zeros(2, 2), mask, 0.1)
    with pytest.raises(ValueError, match="mask"):
        last_token_index(mask)


def test_whitening_helpers():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, generator=g) * 3 + 2
    mask = _mask([5, 2, 4], 5, "left")
    w = whiten_advantages(x, mask)
    sel = w[mask.bool()]
    assert abs(sel.mean().item()) < 1e-5 and abs(sel.std().item() - 1) < 1e-4
    wr = whiten_rewards(x, mask)
    assert torch.allclose(wr[mask.bool()].mean(), x[mask.bool()].mean(), atol=1e-5)


def _group_reference(scores, k, method, scale):
    s = scores.tolist()
    out = []
    for start in range(0, len(s), k):
        grp = s[start:start + k]
        mean = sum(grp) / k
        std = (sum((v - mean) ** 2 for v in grp) / (k - 1)) ** 0.5
        for i, v in enumerate(grp):
            if method == "grpo":
                out.append((v - mean) / (std + 1e-4) if scale else v - mean)
            else:
                others = [grp[j] for j in range(k) if j != i]
                out.append(v - sum(others) / (k - 1))
    if method == "rloo" and scale:
        m = sum(out) / len(out)
        sd = (sum((v - m) ** 2 for v in out) / (len(out) - 1)) ** 0.5
        out = [(v - m) / (sd + 1e-4) for v in out]
    return torch.tensor(out, dtype=scores.dtype)


@pytest.mark.parametrize("method", ["grpo", "rloo"])
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("k", [2, 4])
def test_group_advantages_match_loop(method, scale, k):
    g = torch.Generator().manual_seed(k)
    scores = torch.randn(8, generator=g, dtype=torch.float64)
    scores[:k] = 1.5  # a group with zero spread: GRPO gives 0, not nan
    adv = group_advantages(scores, k, method, scale)
    assert torch.allclose(adv, _group_reference(scores, k, method, scale))
    assert torch.all(torch.isfinite(adv))


def test_group_advantages_groups_are_contiguous():
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])  # prompts [0,0,0,1,1,1] as TRL's RepeatSampler lays them
    adv = group_advantages(scores, 3, "grpo", scale=False)
    assert torch.allclose(adv, torch.tensor([-1.0, 0.0, 1.0, -10.0, 0.0, 10.0]))


def test_group_advantages_validation():
    s = torch.zeros(6)
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(s, 4)
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(s, 1)
    with pytest.raises(ValueError, match="method"):
        group_advantages(s, 3, method="ppo")
    with pytest.raises(ValueError, match="scores"):
        group_advantages(torch.zeros(2, 3), 3)
