"""The sampling loop's speed paths, each against its plain reference: the inverse-CDF draw against the categorical
distribution, GPT2Step against the model's own forward, the fused GELU against GPT-2's six-op one, and the LM head
on scored columns only against the full forward."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from rlhf_nb import decoding, policy
from rlhf_nb.policy import draw, forward_tokens, sample


def test_draw_matches_the_categorical_distribution():
    """16k draws from a 6-way distribution, each bucket within 5 standard errors of its probability."""
    p = torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0])
    n = 16_000
    toks = draw(p.expand(n, -1), torch.Generator().manual_seed(0))
    freq = torch.bincount(toks, minlength=6).double() / n
    se = (p.double() * (1 - p.double()) / n).sqrt()
    assert torch.all((freq - p.double()).abs() <= 5 * se + 1e-12), freq
    assert int((toks == 5).sum()) == 0  # probability 0 is never drawn


def test_draw_is_the_inverse_cdf_of_its_uniform():
    """The drawn index is the first whose cumulative probability exceeds u·total, u the generator's next uniform."""
    probs = torch.rand(32, 50, generator=torch.Generator().manual_seed(1))
    probs[:, ::3] = 0.0  # zeros, as top_k / top_p leave them
    probs = probs / probs.sum(-1, keepdim=True)
    toks = draw(probs, torch.Generator().manual_seed(2))
    u = torch.rand(32, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for row, t, ui in zip(probs.double(), toks, u[:, 0]):
        cdf = [float(row[: i + 1].sum()) for i in range(50)]
        want = next(i for i, c in enumerate(cdf) if c > float(ui) * cdf[-1])
        assert int(t) == want and float(row[want]) > 0


def test_draw_never_returns_an_index_past_the_vocabulary():
    probs = torch.zeros(4, 7)
    probs[:, -1] = 1.0  # all the mass on the last token: u·total < total always lands on it
    assert draw(probs, torch.Generator().manual_seed(0)).tolist() == [6] * 4


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_gpt2_step_equals_the_models_own_cached_forward(policy_and_tokenizer, temperature):
    """GPT2Step and HFStep give the same logits, prompt and every new token, on left-padded prompts (rows that have
    ended are not compared: their next token is padding whatever the logits say)."""
    lm, tok = policy_and_tokenizer
    assert decoding.GPT2Step.fits(lm)
    enc = tok(["The acting was", "Honestly, I thought the plot of this film", "A"], return_tensors="pt",
              padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    lean, hf = decoding.GPT2Step(lm, 3, ids.size(1) + 6), decoding.HFStep(lm)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(6):
            a, b = lean(ids, mask), hf(ids, mask)
            live = mask[:, -1].bool()
            assert live.any() and torch.allclose(a[live], b[live], atol=1e-5), float((a - b)[live].abs().max())
            nxt = draw((a / temperature).softmax(-1), g)[:, None]
            alive = live & (nxt[:, 0] != tok.eos_token_id)
            ids, mask = nxt, torch.cat([mask, alive.long()[:, None]], 1)


def test_gpt2_step_matches_the_full_forward_of_the_sampled_text(policy_and_tokenizer):
    """Log-probs of sampled completions under the cached loop's logits equal those of one forward over the text."""
    lm, tok = policy_and_tokenizer
    ro = sample(lm, tok, ["The soundtrack", "I loved how the director", "Worst"], 10,
                generator=torch.Generator().manual_seed(4))
    step = decoding.GPT2Step(lm, 3, ro.query_responses.size(1))
    P = ro.context_length
    cols = []
    with torch.no_grad():
        cols.append(step(ro.query_responses[:, :P], ro.attention_mask[:, :P]))
        for t in range(P, ro.query_responses.size(1) - 1):
            cols.append(step(ro.query_responses[:, t:t + 1], ro.attention_mask[:, :t + 1]))
        lp_loop = torch.stack(cols, 1).log_softmax(-1).gather(-1, ro.responses[..., None]).squeeze(-1)
        lp_full, _, _ = forward_tokens(lm, ro.query_responses, ro.attention_mask, P)
    m = ro.completion_mask.bool()
    assert torch.allclose(lp_loop[m], lp_full[m], atol=1e-5)


def test_a_model_gpt2step_does_not_fit_uses_its_own_forward(policy_and_tokenizer, monkeypatch):
    lm, tok = policy_and_tokenizer
    monkeypatch.setattr(lm.config, "reorder_and_upcast_attn", True)
    assert isinstance(decoding.next_token_logits(lm, 2, 8), decoding.HFStep)


def test_sampling_with_either_step_gives_the_same_completions(policy_and_tokenizer, monkeypatch):
    lm, tok = policy_and_tokenizer
    prompts = ["The acting was", "I thought the plot", "The soundtrack", "Honestly"] * 4
    lean = sample(lm, tok, prompts, 12, generator=torch.Generator().manual_seed(7))
    monkeypatch.setattr(policy, "next_token_logits", lambda lm, b, n: decoding.HFStep(lm))
    plain = sample(lm, tok, prompts, 12, generator=torch.Generator().manual_seed(7))
    assert torch.equal(lean.query_responses, plain.query_responses) and lean.completions == plain.completions


def test_the_fused_gelu_is_gpt2s_gelu(policy_and_tokenizer):
    lm, _ = policy_and_tokenizer
    assert lm.config.activation_function == "gelu_new"  # the config still names what the model was trained with
    acts = [m.act for m in (b.mlp for b in lm.transformer.h)]
    assert all(isinstance(a, type(ACT2FN["gelu_pytorch_tanh"])) for a in acts)
    x = torch.linspace(-8, 8, 10_001)
    assert torch.allclose(acts[0](x), ACT2FN["gelu_new"](x), atol=1e-6)
    assert torch.allclose(acts[0](x), 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
                          atol=1e-6)


def test_scored_columns_equal_the_full_forward_with_and_without_grad(policy_and_tokenizer):
    """The trunk-then-head path gives the full forward's log-probs, entropies and gradient."""
    lm, tok = policy_and_tokenizer
    ro = sample(lm, tok, ["The cast", "Honestly, I thought the acting in this film was"], 8,
                generator=torch.Generator().manual_seed(5))
    ids, attn, P = ro.query_responses, ro.attention_mask, ro.context_length
    T = ids.size(1) - P
    logp, ent, _ = forward_tokens(lm, ids, attn, P, temperature=0.9)
    logits = lm(input_ids=ids, attention_mask=attn, position_ids=policy.position_ids_from_mask(attn)).logits
    logits = logits[:, P - 1:-1] / 0.9
    ref = F.log_softmax(logits, -1).gather(-1, ids[:, P:, None]).squeeze(-1)
    assert logp.shape == (2, T)
    assert torch.allclose(logp, ref, atol=1e-5)
    assert torch.allclose(ent, torch.distributions.Categorical(logits=logits).entropy(), atol=1e-4)
    w = lm.get_output_embeddings().weight
    g1, = torch.autograd.grad(logp.sum(), w)
    g2, = torch.autograd.grad(ref.sum(), w)
    assert torch.allclose(g1, g2, atol=1e-5)
    _, ent_logged, _ = forward_tokens(lm, ids, attn, P, temperature=0.9, entropy_grad=False)
    assert ent.requires_grad and not ent_logged.requires_grad
    assert torch.equal(ent_logged, ent.detach())
