"""PPO losses at the clip boundaries, value clipping, entropy, explained variance, minibatches."""
import math

import pytest
import torch

from rlhf_nb.policy import entropy_from_logits
from rlhf_nb.ppo import explained_variance, minibatch_indices, policy_loss, value_loss

EPS = 0.2


def _policy_case(ratio, adv):
    logp_old = torch.zeros(1, 1)
    logp_new = torch.full((1, 1), math.log(ratio), requires_grad=True)
    loss, stats = policy_loss(logp_new, logp_old, torch.full((1, 1), adv), torch.ones(1, 1), EPS)
    loss.backward()
    return loss.item(), logp_new.grad.item(), stats


@pytest.mark.parametrize(
    "ratio,adv,clipped",
    [
        (1.0, 1.0, False),
        (1.1, 1.0, False),
        (1.5, 1.0, True),  # A > 0: gain capped at 1+ε
        (0.5, 1.0, False),  # A > 0, ratio fell: unclipped (pessimistic side), gradient flows
        (0.5, -1.0, True),  # A < 0: gain capped at 1−ε
        (1.5, -1.0, False),  # A < 0, ratio rose: unclipped, gradient flows
    ],
)
def test_policy_loss_clipping_cases(ratio, adv, clipped):
    loss, grad, stats = _policy_case(ratio, adv)
    expect = max(-adv * ratio, -adv * min(max(ratio, 1 - EPS), 1 + EPS))
    assert math.isclose(loss, expect, rel_tol=1e-6)
    assert stats["policy/clipfrac"] == (1.0 if clipped else 0.0)
    if clipped:
        assert grad == 0.0  # beneficial side is clipped: no push further
    else:
        assert math.isclose(grad, -adv * ratio, rel_tol=1e-5)  # d(−A·e^x)/dx


@pytest.mark.parametrize("ratio,adv", [(1 + EPS, 1.0), (1 - EPS, -1.0)])
def test_policy_loss_exactly_at_boundary(ratio, adv):
    logp_new = torch.log(torch.tensor([[ratio]], dtype=torch.float64)).requires_grad_()
    loss, stats = policy_loss(logp_new, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([[adv]], dtype=torch.float64), torch.ones(1, 1), EPS)
    assert math.isclose(loss.item(), -adv * ratio, rel_tol=1e-9)
    assert stats["policy/clipfrac"] == 0.0  # equal terms do not count as clipped


def test_policy_loss_masking_and_stats():
    g = torch.Generator().manual_seed(0)
    logp_old = torch.randn(3, 5, generator=g)
    logp_new = logp_old + 0.3 * torch.randn(3, 5, generator=g)
    adv = torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]).float()
    garbage_new = torch.where(mask.bool(), logp_new, torch.tensor(50.0))
    loss, stats = policy_loss(garbage_new, logp_old, adv, mask)
    sel = mask.bool()
    ratio = torch.exp(logp_new - logp_old)[sel]
    a = adv[sel]
    ref = torch.max(-a * ratio, -a * ratio.clamp(0.8, 1.2)).mean()
    assert torch.allclose(loss, ref)
    lr = (logp_new - logp_old)[sel]
    assert math.isclose(stats["policy/ratio"], ratio.mean().item(), rel_tol=1e-5)
    assert math.isclose(stats["policy/approx_kl"], ((ratio - 1) - lr).mean().item(), rel_tol=1e-4)
    assert math.isclose(stats["policy/approx_kl_k2"], (0.5 * lr**2).mean().item(), rel_tol=1e-4)
    assert all(isinstance(v, float) for v in stats.values())


def test_value_loss_clipping():
    v_old = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    v_new = torch.tensor([[0.5, 0.1, -0.5, 9.0]], requires_grad=True)
    ret = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, stats = value_loss(v_new, v_old, ret, mask, clip_range_value=0.2)
    # token 0: unclipped (0.5−1)²=0.25, clipped (0.2−1)²=0.64 → 0.64, clipped term wins
    # token 1: inside the range, both 0.81
    # token 2: unclipped (−0.5−1)²=2.25, clipped (−0.2−1)²=1.44 → 2.25
    assert math.isclose(loss.item(), 0.5 * (0.64 + 0.81 + 2.25) / 3, rel_tol=1e-6)
    assert math.isclose(stats["value/clipfrac"], 1 / 3, rel_tol=1e-6)
    loss.backward()
    assert v_new.grad[0, 0] == 0.0  # clipped: no gradient
    assert v_new.grad[0, 3] == 0.0  # padding


def test_entropy_matches_categorical():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g) * 4
    ent = entropy_from_logits(logits)
    assert ent.shape == (2, 3)
    assert torch.allclose(ent, torch.distributions.Categorical(logits=logits).entropy(), atol=1e-5)
    assert torch.allclose(entropy_from_logits(torch.zeros(1, 1, 8)), torch.tensor([[math.log(8)]]))


def test_explained_variance():
    g = torch.Generator().manual_seed(0)
    ret = torch.randn(3, 4, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1]]).float()
    assert math.isclose(explained_variance(ret, ret, mask), 1.0)
    v = torch.full_like(ret, 0.7)
    assert explained_variance(v, ret, mask) <= 1e-6  # a constant predicts nothing: EV = 0
    noisy = ret + 0.1 * torch.randn(3, 4, generator=g)
    sel = mask.bool()
    ref = 1 - torch.var(ret[sel] - noisy[sel]) / torch.var(ret[sel])
    assert math.isclose(explained_variance(noisy, ret, mask), ref.item(), rel_tol=1e-5)
    assert math.isnan(explained_variance(ret, torch.ones(3, 4), mask))


def test_minibatch_indices():
    mbs = minibatch_indices(12, 4, torch.Generator().manual_seed(1))
    assert len(mbs) == 3 and all(mb.dtype == torch.long and len(mb) == 4 for mb in mbs)
    assert sorted(torch.cat(mbs).tolist()) == list(range(12))
    again = minibatch_indices(12, 4, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(mbs, again))
    with pytest.raises(ValueError, match="minibatch_size"):
        minibatch_indices(10, 4)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_indices(0, 4)


def test_clip_range_validation():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="clip_range"):
        policy_loss(x, x, x, torch.ones(1, 2), clip_range=0.0)
    with pytest.raises(ValueError, match="clip_range_value"):
        value_loss(x, x, x, torch.ones(1, 2), clip_range_value=-1.0)


class _Toy(torch.nn.Module):
    """A 'policy' with one logit and one value per (row, token): row r's log-probs are logsigmoid(logit[r])."""

    def __init__(self, B: int, T: int):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.zeros(B, T))
        self.v = torch.nn.Parameter(torch.zeros(B, T))


def _toy_forward(policy, ids, attn, context_length, temperature, entropy=True):
    rows = ids[:, 0]  # column 0 holds the row's index
    return torch.nn.functional.logsigmoid(policy.logit[rows]), None, policy.v[rows]


def _toy_update(on_minibatch=None):
    from rlhf_nb.config import RunConfig
    from rlhf_nb.ppo import PPOBatch, ppo_update

    B, T = 4, 3
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.arange(B)[:, None], torch.zeros(B, T, dtype=torch.long)], 1)
    batch = PPOBatch(ids, torch.ones_like(ids), 1, torch.ones(B, T), torch.full((B, T), math.log(0.5)),
                     torch.randn(B, T, generator=g), values_old=torch.zeros(B, T), returns=torch.randn(B, T, generator=g))
    cfg = RunConfig(batch_size=B, ppo_epochs=3, num_minibatches=2, progress=False)
    policy = _Toy(B, T)
    opt = torch.optim.Adam(policy.parameters(), lr=0.1)
    out = ppo_update(policy, opt, batch, cfg, torch.Generator().manual_seed(1), forward=_toy_forward,
                     on_minibatch=on_minibatch)
    return out, policy, batch


def test_ppo_update_on_minibatch_hook_sees_every_optimizer_step_and_changes_nothing():
    seen = []
    out, policy, batch = _toy_update(seen.append)
    plain, plain_policy, _ = _toy_update()
    assert out == plain and torch.equal(policy.logit, plain_policy.logit) and torch.equal(policy.v, plain_policy.v)
    assert [(s["epoch"], s["minibatch"]) for s in seen] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    for epoch in range(3):  # each epoch's minibatches split the batch's rows
        rows = torch.cat([s["rows"] for s in seen if s["epoch"] == epoch])
        assert sorted(rows.tolist()) == [0, 1, 2, 3]
    first = seen[0]
    assert first["batch"] is batch and not first["logp"].requires_grad and not first["values"].requires_grad
    assert torch.equal(first["logp"], batch.logp_old[first["rows"]])  # the first step sees ratio 1 exactly
    assert first["stats"]["policy/approx_kl"] == 0.0
    assert not torch.equal(seen[2]["logp"], batch.logp_old[seen[2]["rows"]])  # epoch 2 sees epoch 1's moves
    for key, value in out.items():  # ppo_update returns the mean of what the hook saw
        assert value == pytest.approx(sum(s["stats"][key] for s in seen) / len(seen), abs=1e-12)
