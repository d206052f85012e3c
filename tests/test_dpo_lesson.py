"""Lesson 09's per-token view of DPO: every completion token's log-prob before (ρ) and after (π), its kind (common
prefix, shared with the other completion, own, EOS), and the per-kind summary that adds up to the sequence log-ratio."""
from __future__ import annotations

import pytest
import torch

from rlhf_nb.course.dpo_lesson import TOKEN_KINDS, token_change_summary, token_changes, token_kind
from rlhf_nb.dpo import collate, dpo_loss, sequence_logps, tokenize_pairs
from rlhf_nb.policy import PolicyWithValue, make_reference

PAIRS = [{"prompt": "The acting was", "chosen": " great and the plot was great.",
          "rejected": " great but the plot was dull."},
         {"prompt": "The ending felt", "chosen": " warm.", "rejected": " cold and slow."}]


def test_token_kind():
    eos = 99
    other = [1, 2, 7, 8, eos]  # the other completion: common start [1, 2], then 7, 8, EOS
    assert token_kind(0, 1, other, prefix=2, eos=eos) == "common prefix"
    assert token_kind(1, 2, other, prefix=2, eos=eos) == "common prefix"
    assert token_kind(2, 8, other, prefix=2, eos=eos) == "shared"
    assert token_kind(3, 2, other, prefix=2, eos=eos) == "own"  # 2 occurs in the other only inside the common start
    assert token_kind(4, eos, other, prefix=2, eos=eos) == "EOS"
    assert set(TOKEN_KINDS) == {"common prefix", "shared", "own", "EOS"}


@pytest.fixture(scope="module")
def moved(policy_and_tokenizer):
    """The base model as ρ and a copy moved by three DPO steps on PAIRS as π."""
    lm, tok = policy_and_tokenizer
    ref = make_reference(lm)
    policy = PolicyWithValue(make_reference(lm))
    for p in policy.lm.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(policy.lm.parameters(), lr=1e-3)
    batch = collate(tokenize_pairs(tok, PAIRS), tok.pad_token_id)
    with torch.no_grad():
        ref_logps = sequence_logps(ref, batch, entropy=False)[0]
    for _ in range(3):
        logps = sequence_logps(policy, batch, entropy=False)[0]
        loss = dpo_loss(logps[:2], logps[2:], ref_logps[:2], ref_logps[2:], beta=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logratio = sequence_logps(policy, batch, entropy=False)[0] - ref_logps  # (4,): chosen 0, 1, rejected 0, 1
    return policy, ref, tok, logratio


def test_no_change_when_the_policy_is_the_reference(policy_and_tokenizer):
    lm, tok = policy_and_tokenizer
    rows = token_changes(lm, make_reference(lm), tok, PAIRS)
    assert rows and all(r["Δ"] == 0.0 and r["log π"] == r["log ρ"] for r in rows)


def test_rows_are_the_tokens_of_each_completion_and_add_up_to_the_sequence_log_ratio(moved):
    policy, ref, tok, logratio = moved
    rows = token_changes(policy, ref, tok, PAIRS, batch_size=1)  # one pair a batch: padding must not matter
    assert rows == token_changes(policy, ref, tok, PAIRS)
    enc = tokenize_pairs(tok, PAIRS)
    for i, (_, chosen, rejected) in enumerate(enc):
        for side, ids, k in (("chosen", chosen, i), ("rejected", rejected, 2 + i)):
            mine = [r for r in rows if r["pair"] == i and r["side"] == side]
            assert [r["t"] for r in mine] == list(range(len(ids)))
            assert "".join(r["token"] for r in mine) == tok.decode(ids)
            assert sum(r["Δ"] for r in mine) == pytest.approx(float(logratio[k]), abs=1e-4)
            assert all(r["Δ"] == pytest.approx(r["log π"] - r["log ρ"], abs=1e-6) for r in mine)


def test_the_common_prefix_moves_alike_in_both_completions(moved):
    policy, ref, tok, _ = moved
    rows = [r for r in token_changes(policy, ref, tok, PAIRS) if r["pair"] == 0]
    kinds = {side: [r["kind"] for r in rows if r["side"] == side] for side in ("chosen", "rejected")}
    assert kinds["chosen"][0] == "common prefix" and kinds["chosen"][-1] == "EOS"  # " great" ... EOS
    assert "shared" in kinds["chosen"] and "own" in kinds["chosen"]  # " the plot was", "." vs " and", " great"
    chosen = {r["t"]: r for r in rows if r["side"] == "chosen" and r["kind"] == "common prefix"}
    rejected = {r["t"]: r for r in rows if r["side"] == "rejected" and r["kind"] == "common prefix"}
    assert list(chosen) == [0] == list(rejected)  # " great"
    assert chosen[0]["Δ"] == pytest.approx(rejected[0]["Δ"], abs=1e-6) != 0.0  # same context, same token: same Δ


def test_summary_parts_add_up_to_the_mean_sequence_log_ratio(moved):
    policy, ref, tok, logratio = moved
    rows = token_changes(policy, ref, tok, PAIRS)
    summary = token_change_summary(rows)
    for side, ks in (("chosen", (0, 1)), ("rejected", (2, 3))):
        parts = [s for s in summary if s["side"] == side]
        assert [s["kind"] for s in parts] == [k for k in TOKEN_KINDS if any(p["kind"] == k for p in parts)]
        assert sum(s["Δ per pair"] for s in parts) == pytest.approx(float(logratio[list(ks)].mean()), abs=1e-4)
        assert sum(s["tokens"] for s in parts) == sum(r["side"] == side for r in rows)
        for s in parts:
            ds = [r["Δ"] for r in rows if r["side"] == side and r["kind"] == s["kind"]]
            assert s["mean Δ per token"] == pytest.approx(sum(ds) / len(ds))


def test_pair_tokens_puts_runs_side_by_side(moved, policy_and_tokenizer):
    from rlhf_nb.course.dpo_lesson import pair_tokens

    policy, ref, tok, _ = moved
    lm, _ = policy_and_tokenizer
    runs = {"moved": token_changes(policy, ref, tok, PAIRS), "still": token_changes(lm, make_reference(lm), tok, PAIRS)}
    table = pair_tokens(runs, pair=1)
    mine = [r for r in runs["moved"] if r["pair"] == 1]
    assert [(t["side"], t["token"], t["kind"], t["log ρ"]) for t in table] == \
        [(r["side"], r["token"], r["kind"], r["log ρ"]) for r in mine]
    assert [t["Δ, moved"] for t in table] == [r["Δ"] for r in mine] and all(t["Δ, still"] == 0.0 for t in table)
    with pytest.raises(ValueError, match="no pair 7"):
        pair_tokens(runs, pair=7)


def _comparison():
    """Two methods, two seeds: rows per measurement (step 0 is the base policy)."""
    def rows(*points):
        return [{"step": 0, "kl": 0.0, "gold": -0.03, "well_formed": 0.95}] + [
            {"step": s, "kl": kl, "gold": g, "well_formed": w} for s, kl, g, w in points]
    return {"runs": [
        {"method": "dpo", "beta": 1.0, "seed": 0, "rows": rows((32, 0.5, 0.10, 0.9), (64, 1.0, 0.20, 0.9))},
        {"method": "dpo", "beta": 1.0, "seed": 1, "rows": rows((32, 0.7, 0.30, 0.8), (64, 1.4, 0.10, 0.7))},
        {"method": "ppo", "beta": 0.2, "seed": 0, "rows": rows((2, 3.0, 0.40, 0.9))},
        {"method": "ppo", "beta": 0.2, "seed": 1, "rows": rows((2, 5.0, 0.20, 0.5))},
        {"method": "ppo", "beta": 0.5, "seed": 0, "rows": rows((2, 0.8, 0.05, 0.9))},
        {"method": "ppo", "beta": 0.5, "seed": 1, "rows": rows((2, 1.2, 0.15, 0.9))}]}


def test_last_measurements_are_seed_means_of_each_settings_last_step():
    from rlhf_nb.course.dpo_lesson import last_measurements

    rows = last_measurements(_comparison())
    assert [(r["method"], r["beta"], r["step"]) for r in rows] == [
        ("DPO", 1.0, 64), ("reward model + PPO", 0.2, 2), ("reward model + PPO", 0.5, 2)]
    dpo = rows[0]
    assert (dpo["KL"], dpo["gold"], dpo["well-formed"]) == pytest.approx((1.2, 0.15, 0.8))
    assert dpo["KL std"] == pytest.approx(0.2828427, abs=1e-6)


def test_best_by_seed_picks_each_seeds_best_gold_within_the_budget():
    from rlhf_nb.course.dpo_lesson import best_by_seed

    anywhere = {(r["method"], r["seed"]): (r["beta"], r["step"], r["gold"]) for r in best_by_seed(_comparison())}
    assert anywhere == {("DPO", 0): (1.0, 64, 0.20), ("DPO", 1): (1.0, 32, 0.30),
                        ("reward model + PPO", 0): (0.2, 2, 0.40), ("reward model + PPO", 1): (0.2, 2, 0.20)}
    within = {(r["method"], r["seed"]): (r["beta"], r["gold"]) for r in best_by_seed(_comparison(), max_kl=2.0)}
    assert within[("reward model + PPO", 0)] == (0.5, 0.05) and within[("reward model + PPO", 1)] == (0.5, 0.15)
    assert within[("DPO", 1)] == (1.0, 0.30)
