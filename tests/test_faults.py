"""Each failure switch against the healthy run with the same seed: the flagging metric moves the documented way.

Tiny runs (8 prompts, 8 new tokens, a few steps); the healthy twin is the same RunConfig without the fault.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from rlhf_nb import faults, policy, ppo
from rlhf_nb import train as train_mod

ROOT = Path(__file__).resolve().parents[1]


def pair(name: str, **overrides):
    cfg = faults.demo_config(name, **overrides)
    return faults.run(cfg), faults.run(cfg, name)


def test_every_fault_is_documented_and_breaks_only_its_own_state():
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    modules = (train_mod.sample, train_mod.setup, train_mod.forward_tokens, ppo.forward_tokens, ppo.kl_penalty_loss,
               policy.position_ids_from_mask, policy.forward_tokens)
    healthy = train_mod.setup(faults.demo_config("lr_x30"))
    parts = ("sampler", "forward", "kl_loss", "reward_fn", "kl_ctl", "cfg")
    for name, f in faults.FAULTS.items():
        assert f"`{name}`" in text, f"{name} is not in docs/troubleshooting.md"
        assert f.reference and f.metric
        cfg = faults.demo_config(name)
        s, broken = train_mod.setup(cfg), faults.broken_setup(cfg, name)
        changed = [p for p in parts if getattr(broken, p) is not getattr(s, p)]
        changed += ["policy mode"] * (broken.policy.training != s.policy.training)
        changed += ["lr"] * (broken.optimizer.param_groups[0]["lr"] != s.optimizer.param_groups[0]["lr"])
        assert changed, f"{name} changed nothing in the state"
    assert modules == (train_mod.sample, train_mod.setup, train_mod.forward_tokens, ppo.forward_tokens,
                       ppo.kl_penalty_loss, policy.position_ids_from_mask, policy.forward_tokens)  # nothing patched
    assert (healthy.sampler, healthy.forward, healthy.kl_loss) == (policy.sample, policy.forward_tokens,
                                                                   ppo.kl_penalty_loss)
    with pytest.raises(ValueError, match="fault must be one of"):
        faults.get("nope")


def test_run_takes_a_reward_fn_and_the_fault_sees_it():
    cfg = faults.demo_config("grpo_same_scores", steps_per_epoch=1)
    calls = []

    def constant(prompts, completions):
        calls.append(len(completions))
        return torch.full((len(completions),), 0.5)

    r = faults.run(cfg, reward_fn=constant)
    assert calls == [cfg.batch_size * cfg.num_generations]
    assert r.history[0]["objective/scores"] == 0.5
    assert faults.run(cfg, "grpo_same_scores", reward_fn=constant).history[0]["objective/scores"] == 0.5


def test_topk_sampling_makes_the_logged_kl_something_else():
    # exact: a policy that spread its mass reads negative under top-k, a sharpened one reads too high
    ref = torch.randn(30, generator=torch.Generator().manual_seed(0)) * 2
    flat, sharp = ref / 1.5, ref * 1.5
    assert faults.logged_kl(flat, ref) > 0 and faults.logged_kl(sharp, ref) > 0  # the true KL(π‖ρ)
    assert faults.logged_kl(flat, ref, top_k=5) < 0
    assert faults.logged_kl(sharp, ref, top_k=5) > faults.logged_kl(sharp, ref)
    # in the loop: every sampled token is one of the policy's 5 most likely, and the logged KL is another number
    healthy, broken = pair("topk_logprob_mismatch")
    assert healthy.column("objective/kl")[0] == broken.column("objective/kl")[0] == 0.0  # π = ρ at step 1
    assert broken.column("objective/kl")[1:] != healthy.column("objective/kl")[1:]
    s = faults.broken_setup(faults.demo_config("topk_logprob_mismatch"), "topk_logprob_mismatch")
    ro = s.sampler(s.policy, s.tokenizer, train_mod.next_prompts(s), 8, generator=s.generators["sample"])
    with torch.no_grad():
        logits = policy.scored_columns(s.policy.lm, ro.query_responses, ro.attention_mask, ro.responses.size(1))[1]
    top5 = logits.topk(5, dim=-1).indices
    m = ro.completion_mask.bool()
    assert (top5 == ro.responses[..., None]).any(-1)[m].all()


def test_pad_is_eos_takes_the_eos_out_of_the_loss():
    healthy, broken = pair("pad_is_eos", steps_per_epoch=1)
    h, b = healthy.history[0], broken.history[0]
    assert h["rollout/eos_frac"] == b["rollout/eos_frac"] > 0  # the same samples ...
    # ... but every completion that stopped has one token fewer in the mask: its EOS gets no gradient
    assert b["rollout/completion_len"] == pytest.approx(h["rollout/completion_len"] - h["rollout/eos_frac"])
    # ... and the logged entropy rises: the EOS (entropy ~0) leaves the token mean, H -> H·L/(L - f)
    assert b["policy/entropy"] == pytest.approx(faults.entropy_without_eos(h), rel=1e-4)
    assert b["objective/scores"] == h["objective/scores"]  # same samples at step 1: the twin clue


def test_mask_out_eos_keeps_a_bare_eos():
    eos, pad = 0, 1
    ro = policy.Rollout(torch.tensor([[5, 7, eos, pad], [5, eos, pad, pad]]), torch.ones(2, 4, dtype=torch.long), 1,
                        torch.tensor([[1, 1, 0], [1, 0, 0]]), ["a", "b"], ["x", ""], torch.tensor([True, True]))
    out = faults._mask_out_eos(ro, eos)
    assert out.completion_mask.tolist() == [[1, 0, 0], [1, 0, 0]]  # row 2 is a bare EOS: it keeps its one token


def test_missing_position_ids_spike_the_k3_kl_and_turn_k1_negative():
    healthy, broken = pair("no_position_ids", steps_per_epoch=4)
    assert max(healthy.column("loss/kl")) < 0.1
    assert max(broken.column("loss/kl")) > 50  # TRL's GRPO logs this k3 mean: the 953-nat spike the kit found
    assert min(healthy.column("objective/kl")) > -0.1
    assert statistics.mean(broken.column("objective/kl")[1:]) < -0.3
    assert any("[kl_spike]" in w for w in broken.warnings) and not healthy.warnings


def test_dropout_moves_the_ratio_before_any_learning():
    healthy, broken = pair("dropout_on", steps_per_epoch=2)  # learning_rate 1e-8: the weights barely move
    h, b = healthy.history[0], broken.history[0]
    assert h["objective/kl"] == 0.0 and h["policy/clipfrac"] == 0.0 and h["policy/ratio"] == pytest.approx(1, abs=1e-4)
    assert abs(b["objective/kl"]) > 0.1 and b["policy/clipfrac"] > 0.05 and abs(b["policy/ratio"] - 1) > 0.01
    assert any("[kl_at_first_step]" in w for w in broken.warnings) and not healthy.warnings


def test_k1_in_the_loss_has_no_expected_gradient_and_the_kl_drifts():
    g = torch.Generator().manual_seed(1)
    ref, z = torch.randn(12, generator=g), torch.randn(12, generator=g)
    assert faults.expected_kl_loss_gradient(z, ref, "k1").abs().max() < 1e-6
    assert faults.expected_kl_loss_gradient(z, ref, "k3").abs().max() > 1e-2
    healthy, broken = pair("k1_in_loss")  # GRPO with beta = 2 in the loss: k3 (as TRL) vs k1
    last = lambda r: statistics.mean(r.column("objective/kl")[-5:])  # noqa: E731
    assert last(broken) > 5 * max(last(healthy), 0.1)
    # the logs tell the terms apart: k1's token mean is the logged k1 per token, k3's is another number, never < 0
    assert max(abs(g) for g in faults.k1_identity_gap(broken)) < 1e-5
    assert max(abs(g) for g in faults.k1_identity_gap(healthy)) > 1e-3
    assert min(healthy.column("loss/kl")) >= 0.0


def test_lr_x30_explodes_approx_kl_and_clipfrac_then_collapses_entropy():
    healthy, broken = pair("lr_x30", steps_per_epoch=4)
    assert broken.history[0]["policy/approx_kl"] > 30 * healthy.history[0]["policy/approx_kl"]
    assert broken.history[0]["policy/clipfrac"] > healthy.history[0]["policy/clipfrac"] + 0.1
    assert broken.history[-1]["policy/entropy"] < 0.2 * healthy.history[-1]["policy/entropy"]
    assert {"[update_too_large]", "[entropy_collapse]"} <= {w.split()[2] for w in broken.warnings}
    assert not healthy.warnings


def test_reward_hacking_raises_the_score_and_collapses_its_spread():
    healthy, broken = pair("reward_hacking")  # length reward; healthy: beta = 0.3, broken: beta = 0
    first = lambda r, k: statistics.mean(r.column(k)[:3])  # noqa: E731
    last = lambda r, k: statistics.mean(r.column(k)[-2:])  # noqa: E731
    assert last(broken, "objective/scores") > last(healthy, "objective/scores") + 0.2
    assert last(broken, "objective/scores_std") < 0.5 * first(broken, "objective/scores_std")
    assert last(broken, "objective/kl") > 10 * last(healthy, "objective/kl")
    assert any("[kl_runaway]" in w for w in broken.warnings)
    distinct = lambda r: statistics.mean(len(set(c.split())) / max(len(c.split()), 1)  # noqa: E731
                                         for c in r.samples["completions"])
    assert distinct(broken) < distinct(healthy) - 0.1  # the samples repeat words to reach the target length


def test_same_score_in_a_group_zeroes_every_advantage():
    healthy, broken = pair("grpo_same_scores", steps_per_epoch=2)
    for r in broken.history:
        assert r["loss/policy"] == 0.0 and r["policy/grad_norm"] == 0.0
    for r in healthy.history:
        assert abs(r["loss/policy"]) < 0.2 and r["policy/grad_norm"] > 0.5  # loss ~0 in healthy GRPO too
    assert any("[no_gradient]" in w for w in broken.warnings) and not healthy.warnings


def test_lesson_10_checkers(capsys):
    from rlhf_nb.course import checks

    key = {label: name for label, (name, _) in faults._mystery_key().items()}
    assert checks.check_diagnosis(key) is True
    assert "✅ correct" in capsys.readouterr().out
    a, b = list(key)[:2]
    swapped = {**key, a: key[b], b: key[a]}
    assert checks.check_diagnosis(swapped) is False
    out = capsys.readouterr().out
    assert "❌ wrong" in out and f"run {a} ❌ not {key[b]} but {key[a]}" in out and "4 of 6 right" in out
    assert checks.check_diagnosis(None) is False and "⏳" in capsys.readouterr().out
    assert checks.check_diagnosis({**key, a: "gremlins"}) is False and "names no fault" in capsys.readouterr().out
    assert checks.check_diagnosis({"A": "healthy"}) is False and "keys are exactly" in capsys.readouterr().out
    assert checks.check_expected_kl_gradient(faults.expected_kl_loss_gradient) is True
    assert checks.check_expected_kl_gradient(lambda z, r, est: torch.zeros_like(z)) is False  # right for k1 only
    assert checks.check_expected_kl_gradient(lambda z, r, est: None) is False
    assert "⏳" in capsys.readouterr().out.splitlines()[-1]


def test_the_mystery_key_is_hidden_shuffled_and_pairs_pad_is_eos_with_a_healthy_twin():
    key = faults._mystery_key()
    assert key == faults._mystery_key() and tuple(key) == faults.MYSTERY_LABELS  # drawn the same way every time
    names = [name for name, _ in key.values()]
    assert sorted(names) == sorted(name for name, _ in faults._MYSTERY_CASES)
    assert names != [name for name, _ in faults._MYSTERY_CASES]  # shuffled
    seeds = {name: cfg.seed for name, cfg in key.values()}
    assert not {0, 1, 2} & set(seeds.values())  # none of the lesson's seeds
    assert seeds["pad_is_eos"] == seeds[faults.HEALTHY] and len(set(seeds.values())) == len(seeds) - 1
    cfgs = {name: cfg for name, cfg in key.values()}
    assert cfgs["pad_is_eos"] == cfgs[faults.HEALTHY]  # twins: same config, same seed


def test_the_mystery_runs_show_their_clues_and_the_solution_finds_every_fault(capsys):
    """The blind exercise works on the drawn seeds: each run's clue is in its logs, and faults.diagnose reads them."""
    from rlhf_nb.course import checks

    runs = faults.mystery_runs()
    key = {label: name for label, (name, _) in faults._mystery_key().items()}
    assert all(r.warnings == [] and r.state is None for r in runs.values())  # nothing names the fault
    assert faults.diagnose(runs) == key
    by_name = {name: label for label, name in key.items()}
    pad, twin = by_name["pad_is_eos"], by_name[faults.HEALTHY]
    assert faults.twin(pad, runs) == twin and faults.twin(twin, runs) == pad
    assert all(faults.twin(label, runs) is None for label in key if label not in (pad, twin))
    h, b = runs[twin].history[0], runs[pad].history[0]
    assert b["rollout/completion_len"] == pytest.approx(h["rollout/completion_len"] - h["rollout/eos_frac"])
    assert b["policy/entropy"] == pytest.approx(faults.entropy_without_eos(h), rel=1e-4)
    assert max(abs(g) for g in faults.k1_identity_gap(runs[by_name["k1_in_loss"]])) < 1e-5
    assert checks.check_diagnosis(faults.diagnose(runs), runs) is True
    out = capsys.readouterr().out
    assert "6 of 6 right" in out and f"it sampled what run {twin} sampled at step 1" in out
    assert all(f"run {label} ✅ {name}: " in out for label, name in key.items())


def test_k1_identity_gap_reads_the_logged_metrics():
    row = {"objective/kl": 0.6, "rollout/completion_len": 6.0}
    steps = [{**row, "loss/kl": 0.1}, {**row, "loss/kl": 0.15}, row, {**row, "loss/kl": float("nan")}]
    r = faults.FaultRun(steps, [], {})
    assert faults.k1_identity_gap(r) == [pytest.approx(0.0), pytest.approx(0.05), None, None]  # None: no loss/kl
    assert faults.table({"r": r}, {"gap": (faults.k1_identity_gap, "absmax", 1, None)})["r"]["gap"] == 0.05


def test_entropy_without_eos_is_the_same_sum_over_fewer_tokens():
    # two completions: 3 tokens of entropy 1 then an EOS of entropy 0, and 2 tokens of entropy 2 cut at the limit
    m = {"policy/entropy": (3 * 1 + 0 + 2 * 2) / 6, "rollout/completion_len": 6 / 2, "rollout/eos_frac": 0.5}
    assert faults.entropy_without_eos(m) == pytest.approx((3 * 1 + 2 * 2) / 5)


def test_kl_at_first_token_is_the_exact_logged_k1_and_kl():
    from types import SimpleNamespace

    ref_logits = torch.randn(40, generator=torch.Generator().manual_seed(3)) * 2

    class LM(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, ids):
            return SimpleNamespace(logits=(ref_logits * self.scale).expand(1, ids.size(1), -1))

    tok = lambda p, **kw: {"input_ids": torch.tensor([[1, 2, 3]])}  # noqa: E731
    for scale in (1 / 1.5, 1.5):
        state = SimpleNamespace(policy=SimpleNamespace(lm=LM(scale)), ref=LM(1.0), tokenizer=tok, device="cpu")
        out = faults.kl_at_first_token(state, ["a", "b"], top_k=5)
        z = ref_logits * scale
        assert out["logged k1"] == [pytest.approx(faults.logged_kl(z, ref_logits, top_k=5))] * 2
        assert out["KL(π‖ρ)"] == [pytest.approx(faults.logged_kl(z, ref_logits))] * 2
    assert out["logged k1"][0] > out["KL(π‖ρ)"][0] > 0  # sharpened (the last scale): top-k reads too high


def test_run_takes_a_reward_of_its_own_with_or_without_a_fault():
    """faults.run(cfg, reward_fn=...) trains on that reward (it used to patch a name train.py no longer imports)."""
    cfg = faults.demo_config("dropout_on")
    constant = lambda prompts, completions: torch.full((len(completions),), 0.25)  # noqa: E731
    for fault in (None, "dropout_on"):
        r = faults.run(cfg, fault, reward_fn=constant)
        assert set(r.column("objective/scores")) == {0.25} and set(r.samples["scores"]) == {0.25}
    assert set(faults.run(cfg).column("objective/scores")) != {0.25}  # the config's own reward otherwise
