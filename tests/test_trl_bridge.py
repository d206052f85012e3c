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
