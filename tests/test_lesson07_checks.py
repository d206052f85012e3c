"""Lesson 07's exercise checkers (rlhf_nb/course/checks.py): right answers pass, the usual wrong ones fail with the
reason that points at the slip, None / a NotImplementedError stub is 'not attempted'."""
import pytest
import torch

from rlhf_nb.advantages import group_advantages
from rlhf_nb.bridges.trl import trl_logged_kl
from rlhf_nb.course.checks import OK, TODO, check_group_advantage, check_trl_logged_kl
from rlhf_nb.kl import kl_k1, kl_k3


def _out(capsys) -> str:
    return capsys.readouterr().out


def test_group_advantage_right_wrong_and_unattempted(capsys):
    scores = [0.9, 0.1, 0.1, -0.3]
    right = group_advantages(torch.tensor(scores), 4).tolist()
    assert check_group_advantage(right, scores, 4)
    assert check_group_advantage([round(x, 3) for x in right], scores, 4)  # 3 decimals are enough
    assert _out(capsys).startswith(OK)
    assert not check_group_advantage(right[:3], scores, 4)
    assert not check_group_advantage("0.9", scores, 4)
    assert not check_group_advantage(None, scores, 4)
    assert "not attempted" in _out(capsys)
    assert not check_group_advantage([x * 0.9 for x in right], scores, 4)  # no known slip: says which entry is off
    assert "completion 0 (group 0) should get 1.390" in _out(capsys)


@pytest.mark.parametrize("slip, reason", [
    (lambda g: (g - g.mean(1, keepdim=True)) / (g.std(1, unbiased=False, keepdim=True) + 1e-4), "population std"),
    (lambda g: g - g.mean(1, keepdim=True), "did not divide by the group's std"),
    (lambda g: (g - g.mean()) / (g.std() + 1e-4), "whole batch"),
    (lambda g: (4 * g - g.sum(1, keepdim=True)) / 3, "RLOO's raw advantage"),
    (lambda g: -(g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4), "sign is flipped"),
])
def test_group_advantage_names_the_slip(capsys, slip, reason):
    scores = [0.9, 0.1, 0.1, -0.3, 0.2, -0.5, 0.4, 0.0]
    wrong = slip(torch.tensor(scores).view(2, 4)).flatten().tolist()
    assert not check_group_advantage(wrong, scores, 4)
    assert reason in _out(capsys)


def test_group_advantage_rloo(capsys):
    scores = [0.5, 0.1, -0.2, 0.4, 0.3, 0.3, 0.3, 0.3]
    s = torch.tensor(scores)
    assert check_group_advantage(group_advantages(s, 4, method="rloo").tolist(), scores, 4, method="rloo")
    assert not check_group_advantage(group_advantages(s, 4).tolist(), scores, 4, method="rloo")
    assert "GRPO's group standardisation" in _out(capsys)
    assert not check_group_advantage(group_advantages(s, 4, "rloo", scale=False).tolist(), scores, 4, method="rloo")
    assert "whitens it over the batch" in _out(capsys)


def _batches():
    """Two batches shaped like LogProbProbe.kit_batches(): on-policy (logp_old = logp) and a second pass."""
    g = torch.Generator().manual_seed(0)
    out = []
    for step, off in ((1, 0.0), (2, 0.3)):
        mask = torch.ones(6, 5)
        mask[0, 3:], mask[2, 1:], mask[5, 4:] = 0, 0, 0  # ragged completions
        ref = -torch.rand(6, 5, generator=g) * 4
        logp = (ref + torch.randn(6, 5, generator=g)) * mask  # zeros on padding, as rlhf_nb's forward × mask
        ref = ref * mask
        old = (logp + off * torch.randn(6, 5, generator=g)) * mask
        out.append({"step": step, "logp": logp, "logp_old": old, "ref_logp": ref, "mask": mask,
                    "kl_logged": trl_logged_kl(logp, ref, mask, old)})
    return out


def right(logp, logp_old, ref_logp, mask):
    return float((kl_k3(logp, ref_logp) * torch.exp(logp - logp_old) * mask).sum() / mask.sum())


def test_trl_logged_kl_right_answer_passes(capsys):
    assert check_trl_logged_kl(right, _batches())
    assert _out(capsys).startswith(OK)
    assert check_trl_logged_kl(lambda *a: torch.tensor(right(*a)), _batches())  # a 0-d tensor is fine


def _mean(x, mask):
    return float((x * mask).sum() / mask.sum())


@pytest.mark.parametrize("slip, reason", [
    (lambda lp, old, ref, m: _mean(kl_k1(lp, ref), m), "you averaged k1"),
    (lambda lp, old, ref, m: _mean(kl_k3(ref, lp) * torch.exp(lp - old), m), "Δ the wrong way round"),
    (lambda lp, old, ref, m: _mean(kl_k3(lp, ref), m), "you left out the ratio"),
    (lambda lp, old, ref, m: _mean(kl_k3(lp, ref) * torch.exp(old - lp), m), "not its inverse"),
    (lambda lp, old, ref, m: float((kl_k3(lp, ref) * torch.exp(lp - old) * m).sum(1).mean()), "per-sequence scale"),
    (lambda lp, old, ref, m: float((kl_k3(lp, ref) * torch.exp(lp - old) * m).sum()), "you summed over all tokens"),
    (lambda lp, old, ref, m: float(((kl_k3(lp, ref) * torch.exp(lp - old) * m).sum(1) / m.sum(1)).mean()),
     "each completion's token mean"),
    (lambda lp, old, ref, m: float((kl_k3(lp, ref) * torch.exp(lp - old) * m).sum() / m.numel()), "padding included"),
    (lambda lp, old, ref, m: 0.05 * right(lp, old, ref, m), "that is the loss term"),
])
def test_trl_logged_kl_names_the_slip(capsys, slip, reason):
    assert not check_trl_logged_kl(slip, _batches())
    assert reason in _out(capsys)


def test_trl_logged_kl_forgotten_ratio_fails_only_off_policy(capsys):
    no_ratio = lambda lp, old, ref, m: _mean(kl_k3(lp, ref), m)  # noqa: E731
    assert check_trl_logged_kl(no_ratio, _batches()[:1])  # on-policy the ratio is 1: the value is the same
    assert not check_trl_logged_kl(no_ratio, _batches())
    assert "a second pass" in _out(capsys)


def test_trl_logged_kl_stub_shape_and_unknown(capsys):
    def stub(*a):
        raise NotImplementedError

    assert not check_trl_logged_kl(stub, _batches())
    assert _out(capsys).startswith(TODO)
    assert not check_trl_logged_kl(lambda lp, old, ref, m: kl_k3(lp, ref).sum(1), _batches())
    assert "shape (6,)" in _out(capsys)
    assert not check_trl_logged_kl(lambda *a: 123.0, _batches())
    assert "Σ mask" in _out(capsys)
