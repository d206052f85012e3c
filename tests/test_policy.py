"""Sampling, per-token log-probs and entropy, left padding, the value head, and loading by name."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from rlhf_nb.policy import (PolicyWithValue, filter_logits, forward_tokens, load_policy, make_reference,
                            model_context_length, pick_device, resolve_model_path, sample)


def test_embedded_model_loads_with_from_pretrained(policy_and_tokenizer):
    model, tok = policy_and_tokenizer
    assert tok.padding_side == "left" and tok.pad_token_id is not None and tok.eos_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id
    assert not model.training
    assert model_context_length(None) == model.config.n_positions


def test_embedded_model_loads_fast():
    t0 = time.perf_counter()
    load_policy()
    assert time.perf_counter() - t0 < 10  # the target (< 2 s) is measured in docs; this only catches a blow-up


def test_unknown_model_names_the_embedded_default():
    with pytest.raises(OSError, match="embedded"):
        load_policy("/nonexistent/folder/of/a/model")
    assert resolve_model_path("gpt2") == "gpt2"


def test_sampling_is_reproducible_under_a_seed(policy_and_tokenizer):
    model, tok = policy_and_tokenizer
    prompts = ["The acting was", "I thought the plot", "The soundtrack"]
    a = sample(model, tok, prompts, 10, generator=torch.Generator().manual_seed(3))
    b = sample(model, tok, prompts, 10, generator=torch.Generator().manual_seed(3))
    c = sample(model, tok, prompts, 10, generator=torch.Generator().manual_seed(4))
    assert a.completions == b.completions and torch.equal(a.query_responses, b.query_responses)
    assert a.completions != c.completions


def test_completion_mask_stops_after_first_eos(policy_and_tokenizer):
    model, tok = policy_and_tokenizer
    ro = sample(model, tok, ["The acting was"] * 16, 20, generator=torch.Generator().manual_seed(0))
    eos = tok.eos_token_id
    for row, m, ended in zip(ro.responses, ro.completion_mask, ro.ended_with_eos):
        n = int(m.sum())
        assert torch.all(m[:n] == 1) and torch.all(m[n:] == 0)  # one contiguous run from the start
        hits = (row[:n] == eos).nonzero()
        if ended:
            assert hits.numel() == 1 and int(hits[0]) == n - 1  # EOS is the last real token
        else:
            assert hits.numel() == 0
        assert torch.all(row[n:] == tok.pad_token_id)
    assert ro.ended_with_eos.any()


def test_logprobs_match_a_plain_forward_without_padding(policy_and_tokenizer):
    model, tok = policy_and_tokenizer
    ro = sample(model, tok, ["I thought the plot"], 8, generator=torch.Generator().manual_seed(1))
    ids = ro.query_responses
    with torch.no_grad():
        logp, ent, _ = forward_tokens(model, ids, ro.attention_mask, ro.context_length, temperature=0.7)
        logits = model(ids).logits[0] / 0.7  # no padding: HF's own forward is the reference
    P = ro.context_length
    n = int(ro.completion_mask.sum())
    ref = F.log_softmax(logits[P - 1:P - 1 + n], -1).gather(-1, ids[0, P:P + n, None]).squeeze(-1)
    assert torch.allclose(logp[0, :n], ref, atol=1e-5)
    ref_ent = torch.distributions.Categorical(logits=logits[P - 1:P - 1 + n]).entropy()
    assert torch.allclose(ent[0, :n], ref_ent, atol=1e-4)


def test_left_padding_does_not_change_logprobs(policy_and_tokenizer):
    model, tok = policy_and_tokenizer
    short, long_ = "The cast", "Honestly, I thought the acting in this film was"
    g = torch.Generator().manual_seed(5)
    both = sample(model, tok, [short, long_], 8, generator=g)
    n = int(both.completion_mask[0].sum())
    alone_ids = torch.cat([tok(short, return_tensors="pt")["input_ids"], both.responses[:1, :n]], 1)
    with torch.no_grad():
        lp_batch, _, _ = forward_tokens(model, both.query_responses, both.attention_mask, both.context_length)
        P = alone_ids.size(1) - n
        lp_alone, _, _ = forward_tokens(model, alone_ids, torch.ones_like(alone_ids), P)
    assert torch.allclose(lp_batch[0, :n], lp_alone[0], atol=1e-5)


def test_filter_logits_top_k_and_top_p():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)[0, :2]).all()
    assert torch.isfinite(filter_logits(logits, top_k=2)[0, 2:]).all()
    p = logits.softmax(-1)[0]  # ~[.03, .09, .24, .64]
    kept = torch.isfinite(filter_logits(logits, top_p=0.7)[0])
    assert kept.tolist() == [False, False, True, True]  # 0.64 < 0.7, so the crossing token is kept too
    assert float(p[2:].sum()) >= 0.7


def test_value_head_starts_at_zero_and_reference_is_frozen(policy_and_tokenizer):
    model, tok = policy_and_tokenizer
    pv = PolicyWithValue(make_reference(model))
    ids = tok(["The plot was"], return_tensors="pt")["input_ids"]
    _, values = pv(ids, torch.ones_like(ids))
    assert values.shape == ids.shape and torch.all(values == 0)
    ref = make_reference(model)
    assert all(not p.requires_grad for p in ref.parameters())


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="--device cuda"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


def test_hub_id_without_a_hub_fails_fast_naming_the_embedded_default():
    from rlhf_nb.policy import _hub_reachable

    if _hub_reachable():
        pytest.skip("a hub is reachable here: 'gpt2' would load")
    t0 = time.perf_counter()
    with pytest.raises(OSError, match="--model embedded"):
        load_policy("gpt2")
    assert time.perf_counter() - t0 < 30  # no minute of retries against an unreachable hub


def test_sample_with_kl_is_k1_summed_over_each_completion(policy_and_tokenizer):
    """The one 'sample from π, measure KL to ρ' helper (bench, DPO and lesson 08 all use it) against a plain recomputation."""
    from rlhf_nb.policy import make_reference, sample_with_kl

    model, tok = policy_and_tokenizer
    ref = make_reference(model)
    prompts = ["The acting was", "I thought the plot"]
    ro, kl = sample_with_kl(model, ref, tok, prompts, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kl, torch.zeros(2))  # the policy is its own reference
    again = sample(model, tok, prompts, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ro.query_responses, again.query_responses)  # the same draws as a plain sample()
    with torch.no_grad():
        p = model.transformer.h[0].mlp.c_fc.weight
        p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    try:
        ro, kl = sample_with_kl(model, ref, tok, prompts, 8, generator=torch.Generator().manual_seed(0))
        args = (ro.query_responses, ro.attention_mask, ro.context_length)
        want = ((forward_tokens(model, *args)[0] - forward_tokens(ref, *args)[0]) * ro.completion_mask).sum(1)
        assert torch.allclose(kl, want) and not torch.equal(kl, torch.zeros(2))
    finally:
        model.load_state_dict(ref.state_dict())


def test_hf_hub_offline_set_after_import_still_means_no_network(monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE once, when it is imported; a notebook or test that sets it later must
    still get local files only, not a minute of retries against an unreachable hub."""
    import huggingface_hub  # noqa: F401  (imported before the variable is set, as in a long-lived kernel)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(OSError, match="--model embedded"):
        load_policy("gpt2")
    assert time.perf_counter() - t0 < 30
