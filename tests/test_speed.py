"""The speed-ups give the plain code's numbers: the same to 1e-5 (the LM head on fewer columns and the lean decoding
loop round differently, a last-bit matter), the same samples and the same logs to 1e-4 after a few steps; threads: 0
means all cores, and the same seed at the same thread count (2 here) writes the same JSONL."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rlhf_nb import decoding
from rlhf_nb import policy as policy_mod
from rlhf_nb.config import ConfigError, RunConfig
from rlhf_nb.corpus import PROMPTS
from rlhf_nb.masking import masked_mean
from rlhf_nb.policy import PolicyWithValue, forward_tokens, make_reference, position_ids_from_mask, sample
from rlhf_nb.ppo import PPOBatch, minibatch_indices, policy_loss, ppo_update, value_loss
from rlhf_nb.runlog import read_jsonl, strip_wall_time
from rlhf_nb.seeding import all_cores, seed_everything
from rlhf_nb.train import train

TINY = dict(batch_size=8, max_new_tokens=8, steps_per_epoch=3, progress=False)


def plain_forward_tokens(model, ids, attn, P, temperature=1.0):
    """forward_tokens without the speed-ups: LM head on every column, always divide, the entropy from the logits."""
    lm = model.lm if isinstance(model, PolicyWithValue) else model
    out = lm(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn), output_hidden_states=True)
    logits, values = out.logits, None
    if isinstance(model, PolicyWithValue):
        values = model.value_head(out.hidden_states[-1])[:, P - 1:-1]
    logits = logits[:, P - 1:-1, :].float() / temperature
    logp = torch.gather(F.log_softmax(logits, dim=-1), -1, ids[:, P:, None]).squeeze(-1)
    p = torch.softmax(logits, dim=-1)
    return logp, torch.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1), values


def _full_columns(lm, ids, attn, T, position_ids=True):
    """scored_columns as a model outside PLAIN_HEAD_MODELS runs it: the whole forward, LM head on every column."""
    out = lm(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn), output_hidden_states=True)
    return out.hidden_states[-1][:, -(T + 1):-1], out.logits[:, -(T + 1):-1]


@pytest.fixture
def plain_paths(monkeypatch):
    """Switch the package's speed-ups off: the model's own forward (LM head on every column) and its own cached
    decoding, the entropy from the logits, logits always divided by T."""
    monkeypatch.setattr(policy_mod, "scored_columns", _full_columns)
    monkeypatch.setattr(policy_mod, "next_token_logits", lambda lm, b, n: decoding.HFStep(lm))
    monkeypatch.setattr(policy_mod, "entropy_from_logprobs", lambda logp, grad=True: policy_mod.entropy_from_logits(logp))
    monkeypatch.setattr(policy_mod, "_scaled", lambda logits, t: logits / t)


def _rollout(policy, tok, n, max_new, seed):
    g = torch.Generator().manual_seed(seed)
    prompts = [PROMPTS[(7 * i + seed) % len(PROMPTS)] for i in range(n)]
    return sample(policy, tok, prompts, max_new, generator=g)


@pytest.mark.parametrize("n, max_new, temperature", [(1, 4, 1.0), (3, 8, 1.0), (16, 12, 1.0), (8, 12, 0.7)])
@pytest.mark.parametrize("grad", [False, True])
def test_forward_tokens_equals_the_plain_forward(policy_and_tokenizer, n, max_new, temperature, grad):
    lm, tok = policy_and_tokenizer
    model = PolicyWithValue(lm)
    torch.nn.init.normal_(model.value_head.summary.weight)  # a value head that is not all zeros
    ro = _rollout(model, tok, n, max_new, seed=n)
    args = (ro.query_responses, ro.attention_mask, ro.context_length, temperature)
    with torch.set_grad_enabled(grad):
        fast, plain = forward_tokens(model, *args), plain_forward_tokens(model, *args)
        ref_fast = forward_tokens(lm, *args, entropy=False)
    # log-probs and values to 1e-5; the entropy to 1e-4: −Σ p·log p (all terms ≥ 0) and logsumexp − Σ p·z (a
    # difference of two numbers of a few nats) round differently near H = 0
    for a, b, tol in zip(fast, plain, (1e-5, 1e-4, 1e-5)):
        assert torch.allclose(a, b, atol=tol, rtol=0), float((a - b).abs().max())
    assert ref_fast[1] is None and ref_fast[2] is None and torch.allclose(ref_fast[0], plain[0], atol=1e-5, rtol=0)


def test_sampling_draws_the_same_tokens_as_the_plain_path(policy_and_tokenizer, request):
    lm, tok = policy_and_tokenizer
    fast = [_rollout(lm, tok, 16, 12, seed=s).query_responses for s in range(3)]
    request.getfixturevalue("plain_paths")
    for s, ids in enumerate(fast):
        assert torch.equal(ids, _rollout(lm, tok, 16, 12, seed=s).query_responses)


def _plain_update(policy, opt, batch, cfg, gen):
    """ppo_update's minibatch loop as it was, with the `- ent_coef * H` term always in the loss."""
    B = batch.ids.size(0)
    for _ in range(cfg.ppo_epochs):
        for mb in minibatch_indices(B, B // cfg.num_minibatches, gen):
            m = batch.mask[mb]
            logp, ent, values = plain_forward_tokens(policy, batch.ids[mb], batch.attn[mb], batch.context_length)
            pg, _ = policy_loss(logp, batch.logp_old[mb], batch.advantages[mb], m, cfg.clip_range)
            vl, _ = value_loss(values, batch.values_old[mb], batch.returns[mb], m, cfg.clip_range_value)
            loss = pg - cfg.ent_coef * masked_mean(ent, m) + cfg.vf_coef * vl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            opt.step()


def test_ppo_update_without_entropy_bonus_equals_the_plain_update(policy_and_tokenizer):
    lm, tok = policy_and_tokenizer
    cfg = RunConfig(ppo_epochs=2, num_minibatches=2, progress=False)
    torch.manual_seed(0)
    base = PolicyWithValue(make_reference(lm))
    for p in base.parameters():
        p.requires_grad_(True)
    ro = _rollout(base, tok, 8, 10, seed=1)
    ids, attn, P = ro.query_responses, ro.attention_mask, ro.context_length
    with torch.no_grad():
        logp_old, _, values = forward_tokens(base, ids, attn, P)
    mask = ro.completion_mask.float()
    adv, ret = torch.randn(mask.shape), torch.randn(mask.shape)
    batch = PPOBatch(ids, attn, P, mask, logp_old * mask, adv * mask, values * mask, ret * mask)
    runs = []
    for update in (lambda pol, opt, g: ppo_update(pol, opt, batch, cfg, g),
                   lambda pol, opt, g: _plain_update(pol, opt, batch, cfg, g)):
        pol = PolicyWithValue(make_reference(lm))
        pol.load_state_dict(base.state_dict())
        for p in pol.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam(pol.parameters(), lr=1e-3, eps=1e-5)
        update(pol, opt, torch.Generator().manual_seed(3))
        runs.append(pol.state_dict())
    moved = [k for k in runs[0] if not torch.equal(runs[0][k], base.state_dict()[k])]
    assert moved, "the update changed nothing: the comparison would prove nothing"
    step = {k: float((runs[0][k] - base.state_dict()[k]).abs().max()) for k in moved}
    off = {k: float((runs[0][k] - runs[1][k]).abs().max()) for k in runs[0]}
    assert all(off[k] <= 1e-3 * step[k] + 1e-7 for k in moved), off  # the same update to 0.1 % of its size


@pytest.mark.parametrize("extra", [{}, dict(num_generations=4, advantage="grpo", ppo_epochs=1, num_minibatches=1,
                                            kl_in_loss=True), dict(temperature=0.7, ent_coef=0.01)])
def test_a_run_with_the_speed_ups_logs_what_the_plain_run_logs(extra, request):
    cfg = RunConfig(seed=3, **{**TINY, **extra})
    fast = [strip_wall_time(r) for r in train(cfg, write_run=False).history]
    request.getfixturevalue("plain_paths")
    plain = [strip_wall_time(r) for r in train(cfg, write_run=False).history]
    assert [sorted(r) for r in fast] == [sorted(r) for r in plain]
    for a, b in zip(fast, plain):
        for k, v in a.items():
            if k.startswith("time/"):
                continue
            assert v == pytest.approx(b[k], rel=1e-4, abs=1e-5, nan_ok=True), (a.get("step"), k)


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_threads_zero_means_every_core_and_negative_is_refused(restore_threads):
    assert RunConfig(threads=0).threads == 0
    seed_everything(0, threads=0)
    assert torch.get_num_threads() == all_cores() >= 1
    with pytest.raises(ConfigError, match="--threads must be in \\[0, 256\\]"):
        RunConfig(threads=-1)


def test_same_seed_at_two_threads_writes_the_same_jsonl(tmp_path, restore_threads):
    runs = [train(RunConfig(seed=11, threads=2, out=str(tmp_path / n), **TINY)).run_dir for n in "ab"]
    rows = [[strip_wall_time(r) for r in read_jsonl(d / "logs" / "train.jsonl")] for d in runs]
    assert len(rows[0]) == TINY["steps_per_epoch"]
    assert json.dumps(rows[0]) == json.dumps(rows[1])
