"""rlhf_nb.dpo: hand-computed cases, a naive reference for the masked log-probs, TRL's own DPO loss on the same tensors
(and on the same model), the CLI's run layout, bad flags, determinism and exact resume."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

from rlhf_nb.config import ConfigError
from rlhf_nb.dpo import (DPOConfig, collate, config_from_args, dpo_loss, heldout_accuracy, implicit_reward,
                         measure_policy, preference_logits, preference_stats, sequence_logps, sft_loss,
                         tokenize_pairs, train)
from rlhf_nb.runlog import read_jsonl, strip_wall_time

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5

# hand-written pairs: a positive and a negative continuation of each prompt (fast, no sampling)
_WORDS = [("great", "awful"), ("wonderful", "boring"), ("brilliant", "dull"), ("charming", "terrible"),
          ("superb", "weak"), ("lovely", "bland"), ("clever", "lame"), ("stunning", "messy")]
_PROMPTS = ["The acting was", "The plot was", "The dialogue was", "The ending was"]
PAIRS = [{"prompt": p, "chosen": f" {g}.", "rejected": f" {b} and {b}.", "gold_chosen": 0.6, "gold_rejected": -0.5}
         for p in _PROMPTS for g, b in _WORDS[:4]]
PAIRS[3]["gold_rejected"] = 0.6  # one tie: held-out accuracy must skip it


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    for name, rows in (("train_pairs.jsonl", PAIRS), ("eval_pairs.jsonl", PAIRS[:8])):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _cfg(pair_files, tmp_path, **kw) -> DPOConfig:
    base = dict(pairs=str(pair_files / "train_pairs.jsonl"), eval_pairs=str(pair_files / "eval_pairs.jsonl"),
                batch_size=4, epochs=2, eval_samples=8, progress=False, device="cpu", out=str(tmp_path))
    return DPOConfig(**{**base, **kw})


# ---------------------------------------------------------------- hand-computed cases


def test_loss_margin_and_gradient_by_hand():
    """pc=−3, pr=−5, rc=rr=−4: h = (1) − (−1) = 2. β = 0.5: DPO loss = log(1 + e^−1), dL/dpc = −β·σ(−βh)."""
    pc, pr = torch.tensor([-3.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    rc, rr = torch.tensor([-4.0]), torch.tensor([-4.0])
    assert float(preference_logits(pc, pr, rc, rr).detach()) == 2.0
    loss = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert math.isclose(float(loss.detach()), math.log1p(math.exp(-1.0)), abs_tol=1e-6)
    loss.backward()
    s = 1 / (1 + math.e)  # σ(−1)
    assert math.isclose(float(pc.grad), -0.5 * s, abs_tol=1e-6) and math.isclose(float(pr.grad), 0.5 * s, abs_tol=1e-6)
    # IPO with τ = 0.5 wants h = 1/(2τ) = 1: (2 − 1)² = 1, and its gradient pushes h down, not up
    pc.grad = None
    ipo = dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo")
    assert math.isclose(float(ipo.detach()), 1.0, abs_tol=1e-6)
    ipo.backward()
    assert math.isclose(float(pc.grad), 2.0, abs_tol=1e-6)
    # the implicit reward and the statistics
    assert math.isclose(float(implicit_reward(pc.detach(), rc, 0.5)), 0.5, abs_tol=1e-6)
    st = preference_stats(pc, pr, rc, rr, 0.5)
    assert st["rewards/margins"] == 1.0 and st["rewards/accuracies"] == 1.0
    assert (st["rewards/chosen"], st["rewards/rejected"], st["logps/chosen"]) == (0.5, -0.5, -3.0)


def test_loss_is_finite_for_huge_margins_and_rejects_unknown_types():
    big = torch.tensor([500.0])
    zero = torch.zeros(1)
    assert float(dpo_loss(big, zero, zero, zero, 1.0)) == 0.0
    assert math.isclose(float(dpo_loss(-big, zero, zero, zero, 1.0)), 500.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(zero, zero, zero, zero, 1.0, "hinge")


def test_sft_loss_is_the_token_mean_nll_of_the_chosen():
    pc = torch.tensor([-2.0, -6.0])  # sums over 1 and 3 tokens
    assert math.isclose(float(sft_loss(pc, torch.tensor([1.0, 3.0]))), 8.0 / 4.0)


# ---------------------------------------------------------------- tokens and log-probs


def test_tokenize_and_collate_layout(policy_and_tokenizer):
    _, tok = policy_and_tokenizer
    enc = tokenize_pairs(tok, PAIRS[:2])
    for r, (p, c, j) in zip(PAIRS[:2], enc):
        assert p + c[:-1] == tok(r["prompt"] + r["chosen"])["input_ids"] and c[-1] == tok.eos_token_id
        assert p + j[:-1] == tok(r["prompt"] + r["rejected"])["input_ids"] and j[-1] == tok.eos_token_id
    b = collate(enc, tok.pad_token_id)
    assert b.ids.shape[0] == 4 and b.n_pairs == 2  # chosen rows, then rejected rows
    assert b.mask.tolist()[0] == [1.0] * len(enc[0][1]) + [0.0] * (b.mask.size(1) - len(enc[0][1]))
    assert (b.attention_mask[:, b.context_length:] == b.mask).all()  # padding only after the completion
    assert (b.ids[2, b.context_length:b.context_length + len(enc[0][2])] == torch.tensor(enc[0][2])).all()


def test_sequence_logps_match_one_unpadded_forward_per_row(policy_and_tokenizer):
    """Prompt tokens and padding never count: each padded row equals a plain forward over its own tokens."""
    model, tok = policy_and_tokenizer
    enc = tokenize_pairs(tok, [PAIRS[0], PAIRS[9], PAIRS[14]])
    batch = collate(enc, tok.pad_token_id)
    with torch.no_grad():
        got, _ = sequence_logps(model, batch)
        want = []
        for p, comp in [(e[0], e[i]) for i in (1, 2) for e in enc]:
            logits = model(input_ids=torch.tensor([p + comp])).logits[0]  # (L, V)
            lp = F.log_softmax(logits.float(), -1)
            want.append(sum(float(lp[len(p) - 1 + t, comp[t]]) for t in range(len(comp))))
    torch.testing.assert_close(got, torch.tensor(want), atol=ATOL, rtol=0)


def test_heldout_accuracy_counts_untied_pairs_against_the_gold(policy_and_tokenizer):
    model, tok = policy_and_tokenizer
    from rlhf_nb.policy import make_reference

    out = heldout_accuracy(model, make_reference(model), tok, PAIRS[:8])
    assert out["n_untied"] == 7  # PAIRS[3] is a tie
    assert out["label_accuracy"] == 0.0  # π = ρ: every implicit reward is 0, no pair is ordered


def test_measured_kl_is_zero_when_the_policy_is_the_reference(policy_and_tokenizer):
    model, tok = policy_and_tokenizer
    from rlhf_nb.policy import make_reference

    m = measure_policy(model, make_reference(model), tok, ["The acting was"] * 4, seed=0)
    assert m["kl"] == 0.0 and -1.0 <= m["gold"] <= 1.0 and len(m["completions"]) == 4


# ---------------------------------------------------------------- against TRL's DPOTrainer


@pytest.fixture(scope="module")
def trl_trainer(pair_files, tmp_path_factory):
    pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")
    from rlhf_nb.bridges.trl import make_trl_dpo_trainer

    cfg = DPOConfig(pairs=str(pair_files / "train_pairs.jsonl"), eval_pairs=None, batch_size=4, progress=False,
                    device="cpu")
    tr = make_trl_dpo_trainer(cfg, output_dir=str(tmp_path_factory.mktemp("trl")))
    tr.model.train()
    return tr


class _Fake:
    """Stands in for a model with TRL's fused LM head: returns crafted per-token log-probs."""

    def __init__(self, logps):
        self.logps = logps

    def __call__(self, input_ids=None, labels=None, **kw):
        from types import SimpleNamespace

        z = torch.zeros(self.logps.shape, dtype=torch.float32)
        return SimpleNamespace(log_probs=self.logps, entropy=z, mean_logits=z, is_top1=z.bool())


def _crafted(seed: int, B: int = 5, P: int = 2, T: int = 6):
    """Per-token log-probs (2B, T) for policy and reference, with ragged completions after a P-token prompt."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (2 * B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()  # (2B, T)
    lp = -torch.rand(2 * B, T, generator=g) * 3
    ref = lp + 0.5 * torch.randn(2 * B, T, generator=g)
    return mask, lp, ref, P


def _trl_loss(tr, mask, lp, ref, P, beta, loss_type):
    """TRL's _compute_loss on our tensors: the sequence is prompt (P) + completion (T), right-padded, as its collator."""
    L = P + mask.size(1)
    completion_mask = torch.cat([torch.zeros(mask.size(0), P), mask], 1).long()  # (2B, L)
    leaf = lp.clone().requires_grad_(True)

    def place(x):  # TRL's log_probs[:, j] scores token j + 1; 0 where the label is -100 (prompt, padding)
        return torch.cat([torch.zeros(x.size(0), P - 1), x * mask], 1)

    saved = tr.ref_model, tr.precompute_ref_logps, tr.beta, tr.loss_types, tr.loss_weights
    tr.ref_model, tr.precompute_ref_logps = _Fake(place(ref)), False
    tr.beta, tr.loss_types, tr.loss_weights = beta, [loss_type], [1.0]
    inputs = {"input_ids": torch.zeros(mask.size(0), L, dtype=torch.long),
              "attention_mask": torch.cat([torch.ones(mask.size(0), P), mask], 1).long(),
              "completion_mask": completion_mask}
    try:
        loss = tr._compute_loss(_Fake(place(leaf)), inputs, False)
    finally:
        tr.ref_model, tr.precompute_ref_logps, tr.beta, tr.loss_types, tr.loss_weights = saved
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def _our_loss(mask, lp, ref, beta, loss_type, per_token: bool = False):
    from rlhf_nb.masking import masked_sum

    leaf = lp.clone().requires_grad_(True)
    seq, ref_seq = masked_sum(leaf, mask, 1), masked_sum(ref, mask, 1)  # (2B,)
    if per_token:  # TRL's IPO: log-ratios averaged over each completion's tokens
        n = mask.sum(1)
        seq, ref_seq = seq / n, ref_seq / n
    B = mask.size(0) // 2
    if loss_type == "sft":
        loss = sft_loss(seq[:B], mask[:B].sum())
    else:
        loss = dpo_loss(seq[:B], seq[B:], ref_seq[:B], ref_seq[B:], beta, loss_type)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


@pytest.mark.parametrize("seed, beta", [(0, 0.1), (1, 0.5), (2, 2.0)])
def test_sigmoid_loss_and_gradient_match_trl(trl_trainer, seed, beta):
    mask, lp, ref, P = _crafted(seed)
    trl_loss, trl_grad = _trl_loss(trl_trainer, mask, lp, ref, P, beta, "sigmoid")
    ours, our_grad = _our_loss(mask, lp, ref, beta, "sigmoid")
    torch.testing.assert_close(trl_loss, ours, atol=ATOL, rtol=0)
    torch.testing.assert_close(trl_grad, our_grad, atol=ATOL, rtol=0)
    B = mask.size(0) // 2
    from rlhf_nb.masking import masked_sum

    st = preference_stats(*masked_sum(lp, mask, 1).chunk(2), *masked_sum(ref, mask, 1).chunk(2), beta)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                 "logps/rejected"):
        assert abs(trl_trainer._metrics["train"][name][-1] - st[name]) < ATOL, name
    assert B == 5


@pytest.mark.parametrize("seed", [3, 4])
def test_ipo_differs_by_per_token_averaging(trl_trainer, seed):
    """Difference D2: TRL's IPO averages each completion's log-ratio over its tokens before taking h; rlhf_nb's IPO
    is the paper's, on sequence sums. Ours fed per-token means reproduces TRL exactly; on sums it differs."""
    mask, lp, ref, P = _crafted(seed)
    trl_loss, trl_grad = _trl_loss(trl_trainer, mask, lp, ref, P, 0.5, "ipo")
    ours, our_grad = _our_loss(mask, lp, ref, 0.5, "ipo", per_token=True)
    torch.testing.assert_close(trl_loss, ours, atol=ATOL, rtol=0)
    torch.testing.assert_close(trl_grad, our_grad, atol=ATOL, rtol=0)
    paper, _ = _our_loss(mask, lp, ref, 0.5, "ipo")
    assert abs(float(paper - trl_loss)) > 1e-3


def test_sft_loss_and_gradient_match_trl(trl_trainer):
    mask, lp, ref, P = _crafted(5)
    trl_loss, trl_grad = _trl_loss(trl_trainer, mask, lp, ref, P, 0.1, "sft")
    ours, our_grad = _our_loss(mask, lp, ref, 0.1, "sft")
    torch.testing.assert_close(trl_loss, ours, atol=ATOL, rtol=0)
    torch.testing.assert_close(trl_grad, our_grad, atol=ATOL, rtol=0)


def test_same_model_same_pairs_same_loss_and_weight_gradients_as_trl(trl_trainer, policy_and_tokenizer):
    """End to end on the real model: TRL's tokenization, collator, precomputed reference log-probs, fused LM head and
    loss against ours — the loss value and the gradient of every weight agree."""
    from rlhf_nb.dpo import reference_logps
    from rlhf_nb.policy import PolicyWithValue, make_reference

    tr = trl_trainer
    assert tr.precompute_ref_logps and tr.loss_types == ["sigmoid"]  # as the bridge builds it
    model, tok = policy_and_tokenizer
    ref = make_reference(model)
    policy = make_reference(model)  # nudged off the reference, so that h != 0 and the gradient is not the trivial one
    with torch.no_grad():
        for i, p in enumerate(policy.parameters()):
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    tr.model.load_state_dict(policy.state_dict())
    batch = tr.data_collator([tr.train_dataset[i] for i in range(4)])
    tr.model.zero_grad()
    trl_loss = tr._compute_loss(tr.model, batch, False)
    trl_loss.backward()
    assert tr.train_dataset["prompt"][:4] == [r["prompt"] for r in PAIRS[:4]]
    ours = PolicyWithValue(policy)
    for p in ours.parameters():
        p.requires_grad_(True)
    enc = tokenize_pairs(tok, PAIRS[:4])
    logps, _ = sequence_logps(ours, collate(enc, tok.pad_token_id))
    r = reference_logps(ref, enc, tok.pad_token_id)
    torch.testing.assert_close(r, torch.stack([batch["ref_chosen_logps"], batch["ref_rejected_logps"]], 1),
                               atol=ATOL, rtol=0)
    loss = dpo_loss(logps[:4], logps[4:], r[:, 0], r[:, 1], tr.beta)
    loss.backward()
    assert abs(float(loss) - 0.6931) > 1e-3  # the policy really is off the reference
    torch.testing.assert_close(trl_loss.detach(), loss.detach(), atol=ATOL, rtol=0)
    assert abs(tr._metrics["train"]["logps/chosen"][-1] - float(logps[:4].mean())) < 1e-4
    for (name, a), b in zip(tr.model.named_parameters(), ours.lm.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=ATOL, rtol=0, msg=name)


def test_bridge_carries_every_mapped_knob(trl_trainer, pair_files):
    from rlhf_nb.bridges.trl import DPO_KNOB_MAP, DPO_UNMAPPED, dpo_mapped_values
    from dataclasses import fields

    cfg = DPOConfig(pairs=str(pair_files / "train_pairs.jsonl"), eval_pairs=None, batch_size=4, progress=False,
                    device="cpu")
    for ours, theirs in dpo_mapped_values(cfg, trl_trainer).values():
        assert ours == theirs
    named = {x.strip() for k in DPO_KNOB_MAP for x in k.split(",")} | set(DPO_UNMAPPED)
    assert {f.name for f in fields(DPOConfig)} == named


# ---------------------------------------------------------------- the trainer and its CLI


def test_run_layout_metrics_documented_and_policy_learns(pair_files, tmp_path):
    res = train(_cfg(pair_files, tmp_path, save_every=4, epochs=3))
    run = res.run_dir
    for rel in ("config.json", "logs/train.jsonl", "logs/train.log", "checkpoints/step_4", "checkpoints/step_8",
                "final/model.safetensors", "final/trainer_state.json"):
        assert (run / rel).exists(), rel
    assert list((run / "tb").glob("events.out.tfevents.*"))
    rows = read_jsonl(run / "logs" / "train.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 13))
    glossary = (ROOT / "docs" / "metrics.md").read_text()
    names = {k for r in rows for k in r if k != "step"}
    assert {"loss/dpo", "rewards/margins", "eval/kl", "eval/gold_scores", "eval/accuracy"} <= names
    for name in names:
        assert f"`{name}`" in glossary, f"{name} is logged but not defined in docs/metrics.md"
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"] + 0.1  # the margin grows
    assert rows[-1]["eval/label_accuracy"] > 0.5 and rows[-1]["eval/kl"] > 0
    assert DPOConfig.from_dict(json.loads((run / "config.json").read_text())).batch_size == 4


def test_same_seed_same_jsonl_other_seed_differs(pair_files, tmp_path):
    runs = [train(_cfg(pair_files, tmp_path / n, seed=s)).run_dir for n, s in (("a", 3), ("b", 3), ("c", 4))]
    rows = [[strip_wall_time(r) for r in read_jsonl(d / "logs" / "train.jsonl")] for d in runs]
    assert json.dumps(rows[0]) == json.dumps(rows[1])
    assert rows[0] != rows[2]


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_resume_continues_exactly(pair_files, tmp_path, loss):
    full = train(_cfg(pair_files, tmp_path / "full", save_every=3, loss=loss)).run_dir
    resumed = train(_cfg(pair_files, tmp_path / "res", save_every=3, loss=loss,
                         resume=str(full / "checkpoints" / "step_3"))).run_dir
    want = [strip_wall_time(r) for r in read_jsonl(full / "logs" / "train.jsonl")][3:]
    got = [strip_wall_time(r) for r in read_jsonl(resumed / "logs" / "train.jsonl")]
    assert [r["step"] for r in got] == list(range(4, 9))
    assert json.dumps(got) == json.dumps(want)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rlhf_nb.dpo", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("args, flag", [
    (["--beta", "0"], "--beta"),
    (["--loss", "hinge"], "--loss"),
    (["--batch_size", "0"], "--batch_size"),
    (["--learning_rate", "nan"], "--learning_rate"),
    (["--bet", "0.1"], "--bet"),  # no prefix matching: an abbreviation is an unknown flag, not --beta
    (["--pairs", "/nonexistent.jsonl"], "--pairs"),
    (["--device", "tpu"], "--device"),
])
def test_cli_bad_flag_is_one_line_before_any_work(tmp_path, args, flag):
    p = _cli("--out", str(tmp_path), *args)
    assert p.returncode == 2
    err = [line for line in p.stderr.strip().splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and flag in err[0], p.stderr
    assert not any(tmp_path.iterdir())  # no run folder was created


def test_range_is_stated():
    with pytest.raises(ConfigError, match=r"--beta must be in \[0.001, 100\], got 0"):
        DPOConfig(beta=0)


def test_cli_writes_a_run_and_resume_refuses_another_beta(pair_files, tmp_path, capsys):
    args = ["--pairs", str(pair_files / "train_pairs.jsonl"), "--eval_pairs", "none", "--batch_size", "8",
            "--epochs", "1", "--eval_samples", "0", "--progress", "false", "--out", str(tmp_path)]
    p = _cli(*args)
    assert p.returncode == 0, p.stderr
    run = next(tmp_path.glob("run_*"))
    assert len(read_jsonl(run / "logs" / "train.jsonl")) == 2 and (run / "final").is_dir()
    with pytest.raises(SystemExit) as e:
        config_from_args(["--resume", str(run / "final"), "--beta", "0.5"])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--beta cannot change on --resume" in err[0], err
    cfg = config_from_args(["--resume", str(run / "final"), "--epochs", "2"])
    assert (cfg.epochs, cfg.batch_size, cfg.eval_pairs) == (2, 8, None)


# ---------------------------------------------------------------- lesson 09: checkers and the comparison's summary


def test_lesson09_checkers_accept_the_solution_and_explain_mistakes(capsys):
    from rlhf_nb.course.checks import check_beta_limits, check_dpo_loss, check_implicit_reward

    def stub(*a):
        raise NotImplementedError

    assert not check_dpo_loss(stub) and "not attempted" in capsys.readouterr().out
    assert check_dpo_loss(lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))).mean())
    assert not check_dpo_loss(lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pr - rr) - (pc - rc))).mean())
    assert "swapped" in capsys.readouterr().out
    assert not check_dpo_loss(lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean())
    assert "reference is missing" in capsys.readouterr().out
    assert not check_dpo_loss(lambda pc, pr, rc, rr, b: -torch.log(torch.sigmoid(b * ((pc - rc) - (pr - rr)))).mean())
    assert "logsigmoid" in capsys.readouterr().out
    assert not check_implicit_reward(None, (-12.0, -15.0), (-11.0, -13.5), 0.1)
    assert check_implicit_reward((-0.1, -0.15), (-12.0, -15.0), (-11.0, -13.5), 0.1)
    assert not check_implicit_reward((-1.0, -1.5), (-12.0, -15.0), (-11.0, -13.5), 0.1)
    assert check_beta_limits("drifts", "stays") and not check_beta_limits("stays", "drifts")
    assert not check_beta_limits("far", "stays") and "one of" in capsys.readouterr().out.splitlines()[-1]


def test_summary_and_matched_kl_on_a_small_comparison():
    from rlhf_nb.course.dpo_lesson import matched_kl, summarize

    base = {"step": 0, "kl": 0.0, "gold": 0.0, "well_formed": 0.9}
    runs = [{"method": "dpo", "beta": 0.1, "seed": s, "rows": [base, {"step": 32, "kl": 1.0 + s, "gold": 0.2 + 0.1 * s,
                                                                          "well_formed": 0.9, "accuracy": 0.6}]}
            for s in (0, 1)]
    runs += [{"method": "ppo", "beta": 0.05, "seed": 0, "rows": [base, {"step": 10, "kl": 3.0, "gold": 0.4,
                                                                           "well_formed": 0.9}]},
             {"method": "sft", "beta": 0.1, "seed": 0, "rows": [base, {"step": 32, "kl": 0.2, "gold": 0.05,
                                                                          "well_formed": 0.9, "accuracy": float("nan")}]}]
    comp = {"runs": runs, "config": {"pairs": "x"}}
    rows = {(r["method"], r["step"]): r for r in summarize(comp)}
    assert rows[("dpo", 32)]["kl"] == 1.5 and math.isclose(rows[("dpo", 32)]["gold_std"], 0.1 / math.sqrt(2), rel_tol=1e-9)
    assert "accuracy" not in rows[("sft", 32)]  # nan is no measurement
    table = {(r["KL budget"], r["method"]): r for r in matched_kl(comp, budgets=(1.0, 2.0, 4.0))}
    assert table[(1.0, "DPO")]["step"] == 0 and table[(2.0, "DPO")]["gold"] == 0.25  # mean KL 1.5 fits only from 2
    assert table[(4.0, "reward model + PPO")]["gold"] == 0.4 and table[(1.0, "SFT on the chosen")]["gold"] == 0.05


# ---------------------------------------------------------------- pairs files: content, not only structure

GOOD = '{"prompt": "The plot was", "chosen": " fine.", "rejected": " dull."}\n'


@pytest.mark.parametrize("line, says", [
    (b'{"prompt": "", "chosen": " a.", "rejected": " b."}', "'prompt' is empty"),
    (b'{"prompt": "   ", "chosen": " a.", "rejected": " b."}', "'prompt' is empty"),
    (b'{"prompt": "x", "chosen": "", "rejected": ""}', "both empty"),
    (b'{"prompt": "x\\ud800", "chosen": " a.", "rejected": " b."}', "lone surrogate"),
    (b'{"prompt": "x", "chosen": 3, "rejected": " b."}', "'chosen' must be a string, got int 3"),
    (b'{"prompt": "x", "chosen": " a."}', "'rejected' must be a string, got missing"),
    (b'["x", " a.", " b."]', "must be a JSON object"),
    (b'{"prompt": "caf\xe9", "chosen": " a.", "rejected": " b."}', "is not UTF-8 (byte 0xe9 at column 16)"),
    (b'{"prompt": "x", ', "is not JSON"),
])
def test_a_bad_pairs_record_is_one_error_naming_the_flag_file_and_line(tmp_path, line, says):
    from rlhf_nb.dpo import load_pairs

    f = tmp_path / "pairs.jsonl"
    f.write_bytes(GOOD.encode() + b"\n" + line + b"\n")
    with pytest.raises(ValueError) as e:
        load_pairs(f)
    assert str(e.value).startswith(f"--pairs {f}: line 3") and says in str(e.value), str(e.value)


def test_duplicates_and_ties_are_kept_as_sampled_data_has_them(tmp_path):
    from rlhf_nb.dpo import load_pairs

    f = tmp_path / "pairs.jsonl"
    tie = '{"prompt": "The plot was", "chosen": " dull.", "rejected": " dull."}\n'
    f.write_text(GOOD + GOOD + tie)
    assert len(load_pairs(f)) == 3


def test_a_bad_pairs_file_fails_the_cli_before_any_folder_is_made(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_bytes(b'{"prompt": "", "chosen": " a.", "rejected": " b."}\n')
    out = tmp_path / "runs"
    p = _cli("--pairs", str(f), "--out", str(out), "--progress", "false")
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "line 1: 'prompt' is empty" in err[0], p.stderr
    assert not out.exists()
