"""Masked reductions against torch's own reductions on the unmasked part."""
import pytest
import torch

from rlhf_nb.masking import masked_mean, masked_sum, masked_var, masked_whiten


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 7, generator=g)
    mask = torch.zeros(4, 7)
    mask[0, :7] = 1  # full row
    mask[1, :3] = 1  # right padding
    mask[2, 4:] = 1  # left padding
    mask[3, 2:5] = 1  # both sides
    return x, mask


@pytest.mark.parametrize("as_bool", [False, True])
def test_masked_mean_sum_match_torch_on_selected(as_bool):
    x, mask = _data()
    m = mask.bool() if as_bool else mask
    sel = x[mask.bool()]
    assert torch.allclose(masked_mean(x, m), torch.mean(sel))
    assert torch.allclose(masked_sum(x, m), torch.sum(sel))
    rows = torch.stack([x[i][mask[i].bool()].mean() for i in range(4)])
    assert torch.allclose(masked_mean(x, m, dim=1), rows)
    assert torch.allclose(masked_sum(x, m, dim=1), torch.stack([x[i][mask[i].bool()].sum() for i in range(4)]))


def test_padding_garbage_is_ignored():
    x, mask = _data()
    x_bad = torch.where(mask.bool(), x, torch.tensor(float("-inf")))
    assert torch.isfinite(masked_mean(x_bad, mask))
    assert torch.allclose(masked_mean(x_bad, mask), masked_mean(x, mask))
    assert torch.allclose(masked_var(x_bad, mask), masked_var(x, mask))


def test_masked_var_matches_torch_var():
    x, mask = _data(1)
    sel = x[mask.bool()]
    assert torch.allclose(masked_var(x, mask), torch.var(sel, unbiased=True))
    assert torch.allclose(masked_var(x, mask, unbiased=False), torch.var(sel, unbiased=False))


def test_masked_whiten():
    x, mask = _data(2)
    w = masked_whiten(x, mask)
    sel = x[mask.bool()]
    ref = (sel - sel.mean()) / torch.sqrt(sel.var() + 1e-8)
    assert torch.allclose(w[mask.bool()], ref, atol=1e-6)
    assert torch.all(w[~mask.bool()] == 0)
    assert abs(masked_mean(w, mask).item()) < 1e-6
    w2 = masked_whiten(x, mask, shift_mean=False)
    assert torch.allclose(w2[mask.bool()], ref + sel.mean(), atol=1e-6)
    assert torch.all(w2[~mask.bool()] == 0)


def test_bad_masks():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="mask"):
        masked_mean(x, torch.ones(2, 4))
    with pytest.raises(ValueError, match="empty"):
        masked_var(x, torch.zeros(2, 3))
    one = torch.zeros(2, 3)
    one[0, 0] = 1
    with pytest.raises(ValueError, match="single"):
        masked_var(x, one)
    assert masked_var(x, one, unbiased=False).item() == 0.0
    assert torch.isnan(masked_mean(x, torch.zeros(2, 3)))
