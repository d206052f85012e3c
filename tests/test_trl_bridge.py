"""The TRL bridge: a RunConfig becomes an equivalent GRPOTrainer/RLOOTrainer that trains on CPU and logs our reward."""
from __future__ import annotations

import builtins
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from rlhf_nb.config import RunConfig


def _cfg(model_dir: str, algo: str, **kw) -> RunConfig:
    base = dict(model=model_dir, advantage=algo, batch_size=2, num_generations=4, max_new_tokens=6,
                steps_per_epoch=2, ppo_epochs=2, num_minibatches=2, kl_coef=0.05, learning_rate=1e-3,
                temperature=0.9, clip_range=0.15, adam_eps=1e-6, seed=3, progress=False)
    return RunConfig(**{**base, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_trainer_runs_logs_reward_and_maps_config(model_dir, tmp_path, algo):
    pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")
    from rlhf_nb.bridges.trl import StepTimer, make_trl_trainer, mapped_values

    cfg = _cfg(model_dir, algo)
    timer = StepTimer.make()
    trainer = make_trl_trainer(cfg, algo=algo, output_dir=str(tmp_path), callbacks=[timer])
    for name, (ours, theirs) in mapped_values(cfg, trainer).items():
        assert ours == pytest.approx(theirs), f"{name}: ours {ours!r} != TRL {theirs!r}"
    a = trainer.args
    assert a.per_device_train_batch_size == cfg.batch_size * cfg.num_generations // cfg.num_minibatches
    assert a.max_steps == cfg.total_steps * cfg.ppo_epochs * cfg.num_minibatches
    assert a.use_cpu and not a.bf16 and a.lr_scheduler_type == "linear" and a.save_strategy == "no"
    assert not a.gradient_checkpointing and not getattr(a, "activation_checkpointing", False)  # TRL defaults it on
    trainer.train()
    assert trainer.state.global_step == a.max_steps
    rewards = [log["reward"] for log in timer.logs if "reward" in log]
    assert len(rewards) == cfg.total_steps  # one reward per generation = one per rlhf_nb step
    assert all(-1.0 <= r <= 1.0 for r in rewards)  # VADER compound scores
    assert f"rewards/rlhf_nb_{cfg.reward}/mean" in timer.logs[0]
    assert len(timer.step_s) == a.max_steps
    assert not any(p.name.startswith("checkpoint") for p in tmp_path.iterdir())  # nothing saved


@pytest.mark.slow
def test_the_arithmetic_task_runs_in_trl_with_its_model_prompts_and_checker(tmp_path):
    """--task arithmetic (lesson 12) in TRL: the task's model, its training split only, and the checker's reward."""
    pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")
    from transformers import AutoTokenizer

    from rlhf_nb.bridges.trl import StepTimer, make_trl_trainer
    from rlhf_nb.tasks import ARITH_MODEL_DIR, arith_split

    cfg = RunConfig(task="arithmetic", advantage="grpo", batch_size=4, num_generations=4, max_new_tokens=6,
                    steps_per_epoch=2, seed=0, progress=False)
    timer = StepTimer.make()
    trainer = make_trl_trainer(cfg, output_dir=str(tmp_path), callbacks=[timer])
    train, held_out = arith_split()
    prompts = trainer.train_dataset["prompt"]
    assert len(prompts) == len(train) and set(prompts) == set(train) and not set(prompts) & set(held_out)
    arith_vocab = len(AutoTokenizer.from_pretrained(ARITH_MODEL_DIR))  # the task's tokenizer, not the review model's
    assert len(trainer.processing_class) == arith_vocab == trainer.model.config.vocab_size
    check = trainer.reward_funcs[0]
    assert check(["37+48=", "37+48=", "37+48="], ["85", "84", "85 "]) == [1.0, 0.0, 0.0]  # right, wrong, malformed
    trainer.train()
    rewards = [log["rewards/rlhf_nb_arithmetic/mean"] for log in timer.logs if "rewards/rlhf_nb_arithmetic/mean" in log]
    assert len(rewards) == cfg.total_steps and all(0.0 <= r <= 1.0 for r in rewards)


def test_config_kwargs_without_trl(model_dir):
    """The knob mapping is plain Python: checked without importing TRL."""
    from rlhf_nb.bridges.trl import KNOB_MAP, UNMAPPED, trl_config_kwargs

    cfg = _cfg(model_dir, "grpo", batch_size=4, num_minibatches=4, ppo_epochs=3, steps_per_epoch=5)
    kw = trl_config_kwargs(cfg, "grpo", "unused", world_size=2)
    assert kw["generation_batch_size"] == 16 and kw["per_device_train_batch_size"] == 2
    assert kw["generation_batch_size"] // (kw["per_device_train_batch_size"] * 2) == 4  # = TRL steps_per_generation
    assert kw["num_iterations"] == 3 and kw["max_steps"] == 5 * 3 * 4
    assert kw["beta"] == cfg.kl_coef and kw["epsilon"] == cfg.clip_range and kw["loss_type"] == "bnpo"
    assert {"gamma", "lam", "vf_coef", "clip_range_value", "whiten_rewards"} <= set(UNMAPPED)
    assert "kl_coef" in KNOB_MAP
    assert (kw["lr_scheduler_type"], kw["warmup_steps"]) == ("linear", 0)  # RunConfig's default --lr_decay


def test_every_run_config_field_is_mapped_or_says_why_not():
    import dataclasses

    from rlhf_nb.bridges.trl import KNOB_MAP, UNMAPPED
    named = {part.strip().split("=")[0] for key in [*KNOB_MAP, *UNMAPPED] for part in key.split(",")}
    assert [f.name for f in dataclasses.fields(RunConfig) if f.name not in named] == []


@pytest.mark.parametrize("decay, warmup, expected", [("constant", 0, ("constant", 0)),
                                                     ("constant", 3, ("constant_with_warmup", 12)),
                                                     ("linear", 2, ("linear", 8)), ("cosine", 0, ("cosine", 0))])
def test_the_learning_rate_schedule_goes_to_trl(model_dir, decay, warmup, expected):
    from rlhf_nb.bridges.trl import trl_config_kwargs
    cfg = _cfg(model_dir, "grpo", batch_size=4, num_minibatches=2, ppo_epochs=2, steps_per_epoch=5, lr_decay=decay,
               lr_warmup_steps=warmup)
    kw = trl_config_kwargs(cfg, "grpo", "unused", world_size=1)
    assert (kw["lr_scheduler_type"], kw["warmup_steps"]) == expected  # warm-up in optimizer steps: × 2 × 2
    with pytest.raises(ValueError, match="num_minibatches"):
        trl_config_kwargs(cfg, "grpo", "unused", world_size=3)
    with pytest.raises(ValueError, match="algo"):
        trl_config_kwargs(cfg, "ppo", "unused")


def test_reward_wrapper_and_missing_eos_penalty():
    from rlhf_nb.bridges.trl import TRLReward

    fn = TRLReward(lambda p, c: torch.tensor([0.5, -0.25]), "rlhf_nb_x", missing_eos_penalty=1.0, eos_token_id=0)
    assert fn.__name__ == "rlhf_nb_x"
    out = fn(prompts=["a", "b"], completions=["c", "d"], completion_ids=[[5, 0], [5, 6]], trainer_state=None)
    assert out == [0.5, -1.25] and all(isinstance(x, float) for x in out)


def test_missing_extra_names_it(monkeypatch, model_dir):
    from rlhf_nb.bridges import trl as bridge

    real_import = builtins.__import__

    def no_trl(name, *args, **kwargs):
        if name == "trl" or name.startswith("trl."):
            raise ImportError("No module named 'trl'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_trl)
    with pytest.raises(ImportError, match=r"pip install -e \.\[trl\]"):
        bridge.make_trl_trainer(_cfg(model_dir, "grpo"), algo="grpo")


def test_position_fix_makes_trl_forward_agree_with_rlhf_nb_on_left_padding():
    """TRL calls model(input_ids, attention_mask) with no position_ids; on a left-padded row GPT-2 then scores
    tokens at shifted positions. The bridge's patch makes that call agree with rlhf_nb's masked forward."""
    from rlhf_nb.bridges.trl import positions_from_mask
    from rlhf_nb.policy import forward_tokens, load_policy, sample

    model, tok = load_policy()
    ro = sample(model, tok, ["The cast", "Honestly, I thought the acting in this film was"], 6,
                generator=torch.Generator().manual_seed(0))
    ids, attn, P = ro.query_responses, ro.attention_mask, ro.context_length
    with torch.no_grad():
        ours, _, _ = forward_tokens(model, ids, attn, P)
        plain = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits[:, P - 1:-1], -1)
        positions_from_mask(model)
        fixed = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits[:, P - 1:-1], -1)
    tgt = ids[:, P:, None]
    m = ro.completion_mask.bool()
    plain_lp, fixed_lp = plain.gather(-1, tgt).squeeze(-1), fixed.gather(-1, tgt).squeeze(-1)
    assert (plain_lp[0] - ours[0])[m[0]].abs().max() > 1e-3  # the padded row is off without the fix
    assert torch.allclose(fixed_lp[m], ours[m], atol=1e-5)


# ---- checks before anything is made, and no temp folder left behind ----

def _ours(root: Path) -> list[Path]:
    """The bridge's temp folders under `root` (torch may keep a cache of its own there)."""
    return [p for p in root.iterdir() if p.name.startswith("rlhf_nb_trl")]


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    """tempfile's folder, so a test sees every temp folder the bridge makes."""
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_device_cuda_without_a_gpu_is_refused_not_run_on_the_cpu(monkeypatch, model_dir):
    from rlhf_nb.bridges.trl import trl_config_kwargs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda"):
        trl_config_kwargs(_cfg(model_dir, "grpo", device="cuda"), "grpo", "unused")
    assert trl_config_kwargs(_cfg(model_dir, "grpo", device="auto"), "grpo", "unused")["use_cpu"] is True


def test_check_output_dir(tmp_path):
    from rlhf_nb.bridges.trl import check_output_dir

    assert check_output_dir(str(tmp_path)) is None  # existed: nothing created
    assert check_output_dir(str(tmp_path / "a" / "b")) == tmp_path / "a"  # the outermost folder it made
    (tmp_path / "f").write_text("x")
    for bad, why in [(tmp_path / "f", "is a file"), (tmp_path / "f" / "sub", "is a file"), ("", "empty")]:
        with pytest.raises(ValueError, match=why):
            check_output_dir(str(bad))
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="not writable"):
            check_output_dir(str(ro / "x"))
        assert not (ro / "x").exists()


def test_a_failed_build_removes_the_folders_it_made(monkeypatch, model_dir, tmp_root, tmp_path):
    trl = pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")
    from rlhf_nb.bridges.trl import make_trl_trainer
    from rlhf_nb.policy import load_policy

    def boom(*a, **k):
        raise RuntimeError("TRL failed while building")

    monkeypatch.setattr(trl, "GRPOTrainer", boom)
    model, tok = load_policy()
    with pytest.raises(RuntimeError, match="TRL failed"):  # a model object: a temp model copy + a temp output folder
        make_trl_trainer(_cfg(model_dir, "grpo"), algo="grpo", model=model, tokenizer=tok)
    with pytest.raises(RuntimeError, match="TRL failed"):  # a new output folder, two levels deep
        make_trl_trainer(_cfg(model_dir, "grpo"), algo="grpo", output_dir=str(tmp_path / "new" / "out"))
    assert not _ours(tmp_root) and not (tmp_path / "new").exists()


@pytest.mark.slow
def test_no_temp_folder_outlives_the_build(model_dir, tmp_root):
    """TRL has loaded both models once the trainer exists and writes nothing with save_strategy='no': the model copy
    and the empty output folder go at once, so even a killed process (nbval kills its kernels) leaves nothing."""
    pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")
    from rlhf_nb.bridges.trl import make_trl_trainer
    from rlhf_nb.policy import load_policy

    model, tok = load_policy()
    cfg = _cfg(model_dir, "grpo", steps_per_epoch=1, ppo_epochs=1, num_minibatches=1)
    trainer = make_trl_trainer(cfg, algo="grpo", model=model, tokenizer=tok)
    assert _ours(tmp_root) == []
    trainer.train()  # trains without them
    assert _ours(tmp_root) == [] and trainer.state.global_step == 1
    trainer.save_model()  # saving makes the output folder again, and what it saved stays
    assert _ours(tmp_root) and (Path(trainer.args.output_dir) / "model.safetensors").exists()


def test_trl_has_no_ppo_any_more():
    """docs/trl_bridge.md and UNMAPPED say TRL 1.16 has no PPO (deleted in TRL PR 7020): fail if that stops being true."""
    trl = pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")
    import importlib.util

    from rlhf_nb.bridges.trl import UNMAPPED

    assert not hasattr(trl, "PPOTrainer") and not hasattr(trl, "AutoModelForCausalLMWithValueHead")
    assert importlib.util.find_spec("trl.experimental.ppo") is None
    assert "no PPO" in UNMAPPED["advantage=gae"] and "experimental.ppo" not in UNMAPPED["advantage=gae"]


# ---- lesson 07's ruler: sampler = scorer, TRL's logged kl from per-token log-probs, TRL facts in the installed source ----

def _generate_vs_forward(model, tok, prompts):
    """max |log-prob generate() sampled each token from − rlhf_nb's forward_tokens on the same ids| over real tokens."""
    from rlhf_nb.policy import forward_tokens

    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=5, do_sample=True, top_k=0, return_dict_in_generate=True,
                         output_scores=True, pad_token_id=tok.pad_token_id)
    P = enc["input_ids"].size(1)
    new = out.sequences[:, P:]
    sampled = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, new[..., None]).squeeze(-1)
    attn = torch.cat([enc["attention_mask"], torch.ones_like(new)], 1)  # 5 tokens, no EOS needed for the comparison
    with torch.no_grad():
        scored = forward_tokens(model, out.sequences, attn, P, entropy=False)[0]
    return float((sampled - scored).abs().max())


def test_position_fix_keeps_the_signature_so_generate_samples_where_training_scores():
    """generate() builds mask-derived position_ids only for a forward whose signature names them, and passes a KV cache
    from its first call: a bare (*args, **kwargs) wrapper made TRL sample left-padded rows at shifted positions while
    the patched training forward scored them at the right ones (per-token k3 up to 2e7 in lesson 07's runs)."""
    import inspect

    from rlhf_nb.bridges.trl import positions_from_mask
    from rlhf_nb.policy import load_policy

    prompts = ["The cast", "Honestly, I thought the acting in this film was"]
    model, tok = load_policy()
    positions_from_mask(model)
    assert "position_ids" in inspect.signature(model.forward).parameters
    assert _generate_vs_forward(model, tok, prompts) < 1e-4

    bare, tok = load_policy()  # the old wrapper: same body, signature hidden
    orig = bare.forward
    bare.forward = lambda *a, **k: orig(*a, **k)
    assert _generate_vs_forward(bare, tok, prompts) > 0.1  # the padded row is sampled at shifted positions


def test_per_sequence_kl_and_trl_logged_kl():
    from rlhf_nb.bridges.trl import per_sequence_kl, trl_logged_kl
    from rlhf_nb.kl import kl_k3

    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -3.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, -2.0, -4.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert per_sequence_kl(logp, ref, mask, "k1").tolist() == pytest.approx([0.5 - 1.0, 0.0 - 1.0 + 3.0])
    k3 = kl_k3(logp, ref) * mask
    assert per_sequence_kl(logp, ref, mask, "k3").tolist() == pytest.approx(k3.sum(1).tolist())
    assert trl_logged_kl(logp, ref, mask) == pytest.approx(float(k3.sum() / 5))  # token mean: 5 tokens
    old = logp - 0.2 * mask
    assert trl_logged_kl(logp, ref, mask, old) == pytest.approx(float((k3 * torch.exp(logp - old)).sum() / 5))
    # the token mean times the mean length is the mean over sequences of Σ_t k3
    assert trl_logged_kl(logp, ref, mask) * float(mask.sum(1).mean()) == pytest.approx(
        float(per_sequence_kl(logp, ref, mask, "k3").mean()))


def test_measure_kl_is_zero_against_itself_and_one_ruler_for_both():
    from rlhf_nb.bridges.trl import measure_kl
    from rlhf_nb.policy import load_policy, make_reference

    model, tok = load_policy()
    ref = make_reference(model)
    m = measure_kl(model, ref, tok, ["The plot was", "This film"] * 2, 6, generator=torch.Generator().manual_seed(0))
    assert m["k1"].abs().max() == 0 and m["k3"].abs().max() == 0 and m["length"].min() >= 1
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    m = measure_kl(model, ref, tok, ["The plot was", "This film"] * 2, 6, generator=torch.Generator().manual_seed(0))
    assert (m["k3"] >= 0).all() and m["k1"].shape == (4,)


def test_top_k3_tokens_finds_the_largest_term():
    from rlhf_nb.bridges.trl import top_k3_tokens
    from rlhf_nb.policy import load_policy

    _, tok = load_policy()
    ids = tok(["The plot was great", "The film"], add_special_tokens=False)["input_ids"]
    rec = {"step": 3, "prompt_ids": torch.tensor([[1] + ids[1][:1], ids[1][:2]]), "prompt_mask": torch.tensor([[0, 1], [1, 1]]),
           "completion_ids": torch.tensor([ids[0][:2], ids[0][2:4]]), "mask": torch.ones(2, 2),
           "logp": torch.tensor([[-1.0, -6.0], [-0.5, -0.1]]), "logp_old": None,
           "ref_logp": torch.tensor([[-1.0, -1.0], [-0.6, -0.1]])}
    top = top_k3_tokens([rec], tok, n=2)
    assert top[0]["step"] == 3 and top[0]["log π"] == -6.0 and top[0]["log ρ"] == -1.0
    assert top[0]["k3"] == pytest.approx(float(torch.tensor(5.0).exp()) - 5 - 1)
    assert top[0]["token"] == tok.decode(ids[0][1:2]) and len(top) == 2
    assert 0.99 < top[0]["share of step's kl"] < 1.0


def test_source_lines_point_at_the_installed_code():
    from rlhf_nb.bridges.trl import source_lines

    lines = source_lines(torch.nn.functional.log_softmax, "def log_softmax")
    assert len(lines) == 1 and lines[0].startswith("torch/nn/functional.py:")


def test_every_trl_fact_is_in_the_installed_source():
    """TRL_FACTS (quoted by lesson 07 and docs/trl_bridge.md) name fragments of TRL/transformers code: fail when an
    upgrade moves one, so a claim never outlives the code that showed it."""
    trl = pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")
    from rlhf_nb.bridges.trl import config_defaults, trl_evidence

    rows = trl_evidence()
    assert rows and [r for r in rows if r["file:line"] == "NOT FOUND"] == []
    d = config_defaults(trl.GRPOConfig, ["loss_type", "beta", "learning_rate", "bf16", "use_bias_correction_kl"])
    assert d == {"loss_type": "dapo", "beta": 0.0, "learning_rate": 1e-6, "bf16": True, "use_bias_correction_kl": True}


@pytest.mark.slow
def test_probe_recomputes_trl_logged_kl_from_per_token_logprobs(model_dir, tmp_path):
    """LogProbProbe on a real GRPOTrainer, two passes per rollout: TRL's logged kl is the package's trl_logged_kl of
    TRL's recorded tensors and of rlhf_nb's forward on the same ids; generate() sampled from the scored distribution."""
    pytest.importorskip("trl", reason="needs the TRL extra: pip install -e .[trl]")
    from rlhf_nb.bridges.trl import LogProbProbe, StepTimer, make_trl_trainer, per_sequence_kl, trl_logged_kl, trl_rows
    from rlhf_nb.course.checks import check_trl_logged_kl

    cfg = _cfg(model_dir, "grpo", num_minibatches=1, ppo_epochs=2, kl_coef=0.05, learning_rate=3e-3)
    timer = StepTimer.make()
    trainer = make_trl_trainer(cfg, algo="grpo", output_dir=str(tmp_path), callbacks=[timer])
    probe = LogProbProbe(trainer)
    trainer.train()
    recs = probe.records
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert [log["kl"] for log in timer.logs if "kl" in log] == [r["kl_logged"] for r in recs]
    for r in recs:
        m = r["mask"].bool()
        assert trl_logged_kl(r["logp"], r["ref_logp"], r["mask"], r["logp_old"]) == pytest.approx(r["kl_logged"], abs=1e-6)
        assert torch.allclose(r["kit_logp"][m], r["logp"][m], atol=1e-4)
        assert torch.allclose(r["kit_ref_logp"][m], r["ref_logp"][m], atol=1e-4)
        assert torch.allclose(r["logp_sampled"][m], (r["logp"] if r["logp_old"] is None else r["logp_old"])[m], atol=1e-4)
    assert torch.equal(recs[1]["kit_logp_old"], recs[0]["kit_logp"])  # pass 2 reuses pass 1's batch: π_old
    assert not torch.allclose(recs[1]["kit_logp"], recs[1]["kit_logp_old"])  # the weights moved in between
    assert check_trl_logged_kl(lambda lp, old, ref, mask: trl_logged_kl(lp, ref, mask, old), probe.kit_batches())
    rows = trl_rows(timer, cfg, probe)
    first = recs[0]
    assert rows[0]["kl_k1_seq"] == pytest.approx(float(per_sequence_kl(first["logp_old"], first["ref_logp"],
                                                                       first["mask"]).mean()))
    assert rows[0]["kl_k3_seq"] == rows[0]["kl_seq"]
