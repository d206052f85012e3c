"""rlhf_nb -> TRL: build TRL's GRPOTrainer / RLOOTrainer from a RunConfig, the same model, reward and prompts.

Optional extra: `pip install -e .[trl]` (trl, accelerate, datasets). TRL is imported only when a trainer is built.

    from rlhf_nb.bridges.trl import make_trl_trainer
    trainer = make_trl_trainer(RunConfig(advantage="grpo", num_generations=4), algo="grpo")
    trainer.train()

KNOB_MAP says where each RunConfig field goes; UNMAPPED lists the fields TRL's GRPO/RLOO have no counterpart for.
docs/trl_bridge.md explains every difference between the two implementations. LogProbProbe, trl_logged_kl,
per_sequence_kl, measure_kl and top_k3_tokens measure both systems' KL with one ruler; TRL_FACTS / trl_evidence point
each claim about TRL at the installed source (lesson 07).

There is no PPO here because TRL 1.16 has none: PPOTrainer moved to `trl.experimental.ppo` (TRL PR 4482) and was
deleted with the value-head models (PR 7020, 2026-09). PPO with a value head is rlhf_nb's own `train.py`.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import RunConfig
from ..corpus import PROMPTS, get_prompts
from ..policy import EMBEDDED, model_context_length, pick_device, resolve_model_path
from ..tasks import task_parts

EXTRA_HINT = "pip install -e .[trl]"
ALGOS = ("grpo", "rloo")

# where both bridges put the fields that shape a run rather than the algorithm
_RUN_KNOBS: dict[str, tuple[str, str]] = {
    "device": ("use_cpu", "use_cpu = True unless CUDA is used; bf16 = fp16 = False (rlhf_nb trains in float32)"),
    "threads": ("torch.set_num_threads", "set in this process before the trainer is built"),
    "progress": ("disable_tqdm", "disable_tqdm = not progress"),
    "max_minutes": ("callbacks", "StopAfter callback: stops after the step that crosses the budget"),
    "out, run_name": ("output_dir", "output_dir = out/run_name (or a temp dir); save_strategy='no', report_to='none'"),
}

# RunConfig field -> (TRL config field(s), how the value is carried over)
KNOB_MAP: dict[str, tuple[str, str]] = {
    "seed": ("seed", "same value (TRL also seeds its prompt sampler with it)"),
    "batch_size": ("generation_batch_size", "completions per generation = batch_size * num_generations"),
    "num_generations": ("num_generations", "same value"),
    "num_minibatches": ("steps_per_generation, per_device_train_batch_size",
                        "steps_per_generation = num_minibatches; per_device_train_batch_size = "
                        "batch_size * num_generations / (num_minibatches * world_size); gradient_accumulation_steps = 1"),
    "ppo_epochs": ("num_iterations", "same value (μ in the GRPO paper)"),
    "epochs, steps_per_epoch": ("max_steps", "TRL counts optimizer steps: total_steps * ppo_epochs * num_minibatches"),
    "max_new_tokens": ("max_completion_length", "same value"),
    "temperature": ("temperature", "same value; both divide the logits by it for the log-probs too"),
    "top_k": ("top_k", "same value; 0 means off in both"),
    "top_p": ("top_p", "same value; 1.0 means off in both"),
    "kl_coef": ("beta", "same value; GRPO: β·k3 per token in the loss, RLOO: β·Σk1 in the reward (see docs)"),
    "clip_range": ("epsilon", "same value (the lower clip, epsilon_low)"),
    "clip_range_high": ("epsilon_high", "same value; none: epsilon_high unset, so the clip is symmetric"),
    "loss_type": ("loss_type", "same value (bnpo, dapo, grpo, dr_grpo: rlhf_nb.ppo.aggregate_loss; GRPO only, RLOO "
                               "averages per sequence)"),
    "scale_rewards": ("scale_rewards", "same value (group, batch, none; GRPO only)"),
    "kl_loss_ratio": ("use_bias_correction_kl", "same value (GRPO's k3 in the loss times pi/pi_old)"),
    "learning_rate": ("learning_rate", "same value"),
    "lr_warmup_steps": ("warmup_steps", "× ppo_epochs × num_minibatches (TRL counts optimizer steps); transformers' "
                                        "warm-up starts at 0, rlhf_nb's at lr/N: close, not equal"),
    "lr_decay": ("lr_scheduler_type", "constant -> constant (constant_with_warmup with a warm-up), linear -> linear, "
                                      "cosine -> cosine, all to 0 at max_steps; TRL steps it per optimizer step"),
    "adam_eps": ("adam_epsilon", "same value; optim='adamw_torch' with weight_decay=0 is Adam"),
    "max_grad_norm": ("max_grad_norm", "same value"),
    "ent_coef": ("entropy_coef", "same value (GRPO only; RLOOConfig has no entropy bonus: must be 0)"),
    "advantage": ("trainer class", "grpo -> GRPOTrainer(scale_rewards='group'); rloo -> RLOOTrainer(normalize_advantages=True)"),
    "reward": ("reward_funcs", "our reward wrapped as a TRL reward function (prompts, completions, **kw) -> list[float]"),
    "reward_model": ("reward_funcs", "with --reward learned: that reward model, wrapped like every other reward"),
    "missing_eos_penalty": ("reward_funcs", "applied inside the reward wrapper: score − penalty when no EOS was sampled"),
    "model": ("model", "a local folder or hub id; 'embedded' is the kit's folder; TRL loads policy and reference from it"),
    "task": ("model, train_dataset, reward_funcs", "the task's model, prompts and reward, as rlhf_nb.train picks them: "
                                                   "arithmetic trains tiny-gpt2-arith on the a+b= training split, scored "
                                                   "by the checker (lesson 12)"),
    **_RUN_KNOBS,
    "log_samples": ("log_completions", "log_completions=False (TRL writes parquet tables when on)"),
}

# run fields neither bridge carries over, and why
_RUN_UNMAPPED: dict[str, str] = {
    "save_every": "the bridge never saves (save_strategy='no'); use TRL's save_steps directly if you need it",
    "resume": "TRL resumes with trainer.train(resume_from_checkpoint=...) from its own checkpoints",
}

# RunConfig fields with no counterpart in TRL's GRPO/RLOO, and why
UNMAPPED: dict[str, str] = {
    "gamma": "GAE discount: GRPO/RLOO have no critic and no per-token returns",
    "lam": "GAE λ: no critic",
    "vf_coef": "value-loss weight: no value head in GRPO/RLOO",
    "clip_range_value": "value clip: no value head",
    "whiten_rewards": "per-token reward whitening belongs to the GAE path",
    "kl_estimator": "fixed by TRL: GRPO uses k3 in the loss, RLOO uses k1 in the reward",
    "adaptive_kl": "no adaptive-β controller in GRPOTrainer/RLOOTrainer (β is fixed)",
    "target_kl": "only used by the adaptive controller",
    "kl_horizon": "only used by the adaptive controller",
    "kl_in_loss": "fixed by TRL (see kl_estimator): GRPO is rlhf_nb's --kl_in_loss True, RLOO its False",
    "dynamic_sampling": "TRL 1.16's GRPOTrainer keeps groups whose rewards tie (it logs their share as "
                        "frac_reward_zero_std); the bridge refuses --dynamic_sampling",
    "gold": "rlhf_nb's own extra measure (objective/gold_scores); TRL logs only its reward functions",
    **_RUN_UNMAPPED,
    "advantage=gae": "TRL 1.16 has no PPO (deleted in TRL PR 7020); PPO with a value head is rlhf_nb's own train.py",
}


def _require_trl():
    """Import trl (and datasets), or raise an ImportError that names the extra."""
    try:
        import datasets  # noqa: F401
        import trl
    except ImportError as e:
        raise ImportError(f"rlhf_nb.bridges.trl needs the optional TRL extra: {EXTRA_HINT} "
                          f"(installs trl, accelerate, datasets); import failed with: {e}") from e
    return trl


class TRLReward:
    """An rlhf_nb reward as a TRL reward function: (prompts, completions, **kwargs) -> list[float]."""

    def __init__(self, reward: Callable[[list[str], list[str]], torch.Tensor], name: str,
                 missing_eos_penalty: float | None = None, eos_token_id: int | None = None):
        self.reward, self.missing_eos_penalty, self.eos_token_id = reward, missing_eos_penalty, eos_token_id
        self.__name__ = name  # TRL logs rewards/<__name__>/mean

    def __call__(self, prompts: list[str], completions: list[str], completion_ids=None, **kwargs) -> list[float]:
        scores = self.reward(list(prompts), list(completions)).detach().float().cpu()  # (B,)
        if self.missing_eos_penalty is not None and completion_ids is not None:
            # TRL truncates completion_ids after the first EOS; the EOS itself is kept when one was sampled
            no_eos = torch.tensor([self.eos_token_id not in ids for ids in completion_ids])
            scores = scores - self.missing_eos_penalty * no_eos.float()
        return scores.tolist()


class StepTimer:
    """Factory for a TrainerCallback that records TRL's logs and each optimizer step's time (`clock`: wall seconds by
    default, `time.process_time` for CPU seconds); with a budget, training stops after the step that crosses it."""

    @staticmethod
    def make(time_budget_s: float | None = None, clock: Callable[[], float] = time.perf_counter):
        from transformers import TrainerCallback

        class _Cb(TrainerCallback):
            def __init__(self):
                self.logs: list[dict[str, Any]] = []
                self.step_s: list[float] = []
                self.t_start = None
                self._t0 = None

            def on_train_begin(self, args, state, control, **kw):
                self.t_start = clock()

            def on_step_begin(self, args, state, control, **kw):
                self._t0 = clock()

            def on_step_end(self, args, state, control, **kw):
                self.step_s.append(clock() - self._t0)
                if time_budget_s is not None and clock() - self.t_start > time_budget_s:
                    control.should_training_stop = True

            def on_log(self, args, state, control, logs=None, **kw):
                if logs is not None and "train_runtime" not in logs:  # the end-of-training summary is not a step
                    self.logs.append({"global_step": state.global_step, "elapsed_s": clock() - self.t_start, **logs})

        return _Cb()


def lr_schedule_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """TRL's lr_scheduler_type and warmup_steps for cfg's --lr_decay and --lr_warmup_steps. transformers steps its
    schedule once per optimizer step, rlhf_nb once per PPO step (ppo_epochs × num_minibatches optimizer steps)."""
    warmup = cfg.lr_warmup_steps * cfg.ppo_epochs * cfg.num_minibatches
    kind = {"constant": "constant_with_warmup" if warmup else "constant", "linear": "linear", "cosine": "cosine"}
    return {"lr_scheduler_type": kind[cfg.lr_decay], "warmup_steps": warmup}


def _no_checkpointing() -> dict:
    """Activation checkpointing off, under the name this transformers knows: 5.2x renamed `gradient_checkpointing`
    to `activation_checkpointing` and warns on the old name (which TRL's configs still default to True)."""
    from transformers import TrainingArguments

    new = "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    return {"activation_checkpointing": False} if new else {"gradient_checkpointing": False}


def _prompt_dataset(cfg: RunConfig, prompts: list[str] = PROMPTS):
    """The run's prompts (--task's: the review prompts, or the arithmetic task's training split) as a datasets.Dataset
    with a "prompt" column, long enough for one pass over the run: each prompt once per cycle, cycles shuffled by
    --seed."""
    from datasets import Dataset

    n = max(len(prompts), cfg.batch_size * cfg.total_steps)
    return Dataset.from_dict({"prompt": get_prompts(n, cfg.seed, prompts)})


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def trl_config_kwargs(cfg: RunConfig, algo: str, output_dir: str, world_size: int | None = None) -> dict[str, Any]:
    """The keyword arguments of GRPOConfig / RLOOConfig that KNOB_MAP describes (no TRL import needed)."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    if cfg.num_generations < 2:
        raise ValueError(f"--num_generations must be >= 2 for TRL's {algo} (a group baseline), got {cfg.num_generations}")
    if cfg.dynamic_sampling:
        raise ValueError("--dynamic_sampling: TRL 1.16's trainers keep groups whose rewards tie (no filter); drop it "
                         "to run in TRL")
    if algo == "rloo" and cfg.loss_type != "bnpo":
        raise ValueError(f"--loss_type {cfg.loss_type}: TRL's RLOO clips one ratio per sequence and averages over "
                         f"sequences, with no loss_type; keep the default (bnpo) with --algo rloo")
    if algo == "rloo" and cfg.ent_coef != 0:
        raise ValueError(f"--ent_coef must be 0 with --algo rloo: RLOOConfig has no entropy bonus, got {cfg.ent_coef}")
    ws = world_size or _world_size()
    gen_batch = cfg.batch_size * cfg.num_generations
    if gen_batch % (cfg.num_minibatches * ws):
        raise ValueError(f"batch_size*num_generations = {gen_batch} must divide into num_minibatches*world_size = "
                         f"{cfg.num_minibatches}*{ws} equal per-device minibatches")
    use_cpu = pick_device(cfg.device).type == "cpu"  # --device cuda with no GPU is refused, not run on the CPU
    kw = dict(
        output_dir=output_dir,
        seed=cfg.seed,
        # batch: one generation of batch_size prompts x num_generations, cut into num_minibatches optimizer steps
        num_generations=cfg.num_generations,
        generation_batch_size=gen_batch,
        per_device_train_batch_size=gen_batch // (cfg.num_minibatches * ws),
        gradient_accumulation_steps=1,
        num_iterations=cfg.ppo_epochs,
        max_steps=cfg.total_steps * cfg.ppo_epochs * cfg.num_minibatches,
        # sampling
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        # objective
        beta=cfg.kl_coef,
        epsilon=cfg.clip_range,
        # optimizer: Adam, with rlhf_nb's learning-rate schedule
        learning_rate=cfg.learning_rate,
        adam_epsilon=cfg.adam_eps,
        weight_decay=0.0,
        optim="adamw_torch",
        **lr_schedule_kwargs(cfg),
        max_grad_norm=cfg.max_grad_norm,
        # precision and device: rlhf_nb trains in float32
        use_cpu=use_cpu,
        bf16=False,
        fp16=False,
        **_no_checkpointing(),  # TRL's default (on) costs time and buys nothing on a tiny model
        disable_dropout=True,  # rlhf_nb keeps dropout off in RL too
        # logging and saving
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not cfg.progress,
        log_completions=False,
        dataloader_num_workers=0,
    )
    if cfg.clip_range_high is not None:
        kw["epsilon_high"] = cfg.clip_range_high
    if algo == "grpo":
        kw.update(scale_rewards=cfg.scale_rewards, loss_type=cfg.loss_type, entropy_coef=cfg.ent_coef,
                  use_bias_correction_kl=cfg.kl_loss_ratio)
    else:
        kw.update(normalize_advantages=True)  # = rlhf_nb group_advantages(method="rloo", scale=True)
    return kw


def _save_model(model, tokenizer, folder: str) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def check_model(path: str) -> None:
    """Raise one ValueError/OSError line unless `path` (a folder or hub id) has a readable config and, for a folder,
    every safetensors file has a complete header (a truncated download fails here, not inside TRL)."""
    from safetensors import SafetensorError, safe_open

    model_context_length(path)  # the config alone: OSError naming the model if it is missing or unreachable
    if not Path(path).is_dir():
        return
    for f in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(f), "pt"):  # parses the header, and checks the file holds every byte it lists
                pass
        except (SafetensorError, OSError) as e:
            raise ValueError(f"--model {path}: {f.name} is not a readable safetensors file ({e}); "
                             f"is it truncated? Copy or rebuild it") from None


def _missing_top(folder: Path) -> Path | None:
    """The outermost ancestor of `folder` (or itself) that does not exist yet: what makedirs would create."""
    top = None
    for p in (folder, *folder.parents):
        if p.exists():
            return top
        top = p
    return top


def check_output_dir(output_dir: str) -> Path | None:
    """Create `output_dir` if needed and prove it writable, or raise one ValueError naming it; return the outermost
    folder this created (None if it existed), so a caller can remove it again if building the trainer fails."""
    if not output_dir:
        raise ValueError("--output_dir must be a folder path, got an empty string")
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output_dir {output_dir} exists and is a file, not a folder")
    blocking = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ValueError(f"--output_dir {output_dir}: {blocking} is a file, not a folder")
    created = _missing_top(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        if created is not None:
            _remove_empty_tree(created)
        raise ValueError(f"--output_dir {output_dir} is not writable: {e.strerror or e}") from None
    return created


def _remove_empty_tree(top: Path | str | None) -> None:
    """Remove `top` and the folders under it, bottom-up, as long as they hold no file (what a failed build left)."""
    if top is None or not Path(top).is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            return  # something was written there: keep it


def positions_from_mask(model) -> None:
    """Make `model.forward` derive position_ids from attention_mask when the caller gives none.

    TRL 1.16 scores completions with `model(input_ids, attention_mask)` and no position_ids; GPT-2 then numbers a
    left-padded row's tokens from the first pad, not from its first real token, so the log-probs it trains on
    disagree with the ones it sampled from (difference 10 in docs/trl_bridge.md). rlhf_nb always passes them.

    The wrapper keeps the original signature (functools.wraps): `generate` builds mask-derived position_ids only
    for a forward whose signature names `position_ids`, and passes a KV cache from its first call, so a bare
    (*args, **kwargs) wrapper would make it sample at shifted positions while training scores at the right ones."""
    import functools

    from ..policy import position_ids_from_mask

    orig = model.forward

    @functools.wraps(orig)
    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        no_cache = kwargs.get("cache") is None and kwargs.get("past_key_values") is None
        if kwargs.get("position_ids") is None and no_cache and ids is not None and mask is not None \
                and mask.shape[-1] == ids.shape[-1]:
            kwargs["position_ids"] = position_ids_from_mask(mask)
        return orig(*args, **kwargs)

    model.forward = forward


def make_trl_trainer(cfg: RunConfig, algo: str = "grpo", reward: Callable | None = None, model: Any = None,
                     tokenizer: Any = None, output_dir: str | None = None, callbacks: list | None = None,
                     offline: bool | None = None, fix_position_ids: bool = True):
    """Build TRL's GRPOTrainer or RLOOTrainer equivalent to `cfg`.

    model: None (cfg.model: 'embedded', a folder or a hub id), a path/id string, or a loaded PreTrainedModel
    (then pass its tokenizer; both are saved to a temp folder, because TRL loads the reference from a path).
    reward: an rlhf_nb reward callable(prompts, completions) -> (B,) tensor; None: cfg's reward (and reward model).
    offline: set HF_HUB_OFFLINE=1 (default: when the model is a local folder).
    fix_position_ids: patch the policy and reference so TRL's forward passes get mask-derived position ids
    (see `positions_from_mask`). On by default: without it, left-padded GPT-2 prompts are sampled at one set of
    positions and scored at another, and TRL's logged k3 explodes on the tokens that differ (lesson 07's setting,
    60 steps: up to 256,018 nats per sequence; with it, sampling and training log-probs agree to 1e-5).

    Every check that can fail runs before a folder is made or a model loads: the knobs TRL lacks, the device, the
    model's config and safetensors headers, the output folder; each fails with one ValueError/OSError line. If
    building fails, the folders made here are removed. Once built, the temp model copy (TRL has loaded both models)
    and the still empty temp output folder are removed at once; saving from the trainer makes the folder again.
    """
    cfg.validate()
    trl_config_kwargs(cfg, algo, "")  # refuses knobs TRL's trainer lacks and --device cuda without a GPU
    task_model, task_prompts, task_reward = task_parts(cfg)  # --task: the model, prompts and reward, as rlhf_nb.train
    if task_model not in (None, "", EMBEDDED) and model is None:
        model = task_model
    path = resolve_model_path(model if isinstance(model, str) else None) if not hasattr(model, "save_pretrained") else None
    if path is None and tokenizer is None:
        raise ValueError("pass the tokenizer together with a loaded model object")
    if offline is None:
        offline = path is None or Path(path).is_dir()
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if path is not None:
        check_model(path)
    if output_dir is None and cfg.run_name:
        output_dir = str(Path(cfg.out) / cfg.run_name)
    trl = _require_trl()
    from transformers import AutoTokenizer

    torch.set_num_threads(cfg.threads)
    made: list[str] = []  # folders made here: removed again if building fails
    temp_out = temp_model = None
    try:
        if output_dir is None:
            output_dir = temp_out = tempfile.mkdtemp(prefix="rlhf_nb_trl_")
            made.append(temp_out)
        else:
            created = check_output_dir(output_dir)
            if created is not None:
                made.append(str(created))
        if path is None:  # a loaded model object: save it so TRL can build the reference from the same weights
            path = temp_model = tempfile.mkdtemp(prefix="rlhf_nb_trl_model_")
            _save_model(model, tokenizer, temp_model)
        tok = tokenizer or AutoTokenizer.from_pretrained(path)
        tok.padding_side = "left"  # generate() appends on the right, so prompts must end there
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        reward_name = f"rlhf_nb_{cfg.reward if cfg.task == 'reviews' else cfg.task}"
        trl_reward = TRLReward(reward or task_reward, reward_name, cfg.missing_eos_penalty, tok.eos_token_id)
        kw = trl_config_kwargs(cfg, algo, output_dir)
        Config, Trainer = (trl.GRPOConfig, trl.GRPOTrainer) if algo == "grpo" else (trl.RLOOConfig, trl.RLOOTrainer)
        args = Config(**kw)
        cbs = list(callbacks or [])
        if cfg.max_minutes is not None:
            cbs.append(StepTimer.make(60 * cfg.max_minutes))
        trainer = Trainer(model=path, reward_funcs=trl_reward, args=args, train_dataset=_prompt_dataset(cfg, task_prompts),
                          processing_class=tok, callbacks=cbs)
    except BaseException:
        if temp_model is not None:
            shutil.rmtree(temp_model, ignore_errors=True)
        for folder in made:
            _remove_empty_tree(folder)
        raise
    # TRL has loaded policy and reference, so the model copy has served; Trainer made the output folder but writes
    # nothing there (save_strategy="no") and makes it again if you save: remove both now, so that not even a
    # killed process leaves them behind, and an empty output folder again when the trainer goes
    _cleanup_temp(temp_model, temp_out)
    weakref.finalize(trainer, _remove_empty_tree, temp_out)
    if fix_position_ids:
        for m in (trainer.model, getattr(trainer, "ref_model", None)):
            if m is not None:
                positions_from_mask(m)
    return trainer


def _cleanup_temp(temp_model: str | None, temp_out: str | None) -> None:
    if temp_model is not None:
        shutil.rmtree(temp_model, ignore_errors=True)
    _remove_empty_tree(temp_out)


def mapped_values(cfg: RunConfig, trainer) -> dict[str, tuple[Any, Any]]:
    """{RunConfig field: (our value, the value TRL's trainer holds)} for every one-to-one knob: a self-check."""
    a = trainer.args
    pairs = {
        "seed": (cfg.seed, a.seed),
        "num_generations": (cfg.num_generations, a.num_generations),
        "batch_size": (cfg.batch_size * cfg.num_generations, a.generation_batch_size),
        "num_minibatches": (cfg.num_minibatches, a.steps_per_generation),
        "ppo_epochs": (cfg.ppo_epochs, a.num_iterations),
        "max_new_tokens": (cfg.max_new_tokens, a.max_completion_length),
        "temperature": (cfg.temperature, a.temperature),
        "top_k": (cfg.top_k, a.top_k),
        "top_p": (cfg.top_p, a.top_p),
        "kl_coef": (cfg.kl_coef, trainer.beta),
        "clip_range": (cfg.clip_range, trainer.epsilon_low),
        "clip_range_high": (cfg.clip_range if cfg.clip_range_high is None else cfg.clip_range_high,
                            trainer.epsilon_high),
        "learning_rate": (cfg.learning_rate, a.learning_rate),
        "adam_eps": (cfg.adam_eps, a.adam_epsilon),
        "max_grad_norm": (cfg.max_grad_norm, a.max_grad_norm),
    }
    if hasattr(a, "entropy_coef"):  # GRPO's own knobs
        pairs["ent_coef"] = (cfg.ent_coef, a.entropy_coef)
        pairs["loss_type"] = (cfg.loss_type, trainer.loss_type)
        pairs["scale_rewards"] = (cfg.scale_rewards, trainer.scale_rewards)
        pairs["kl_loss_ratio"] = (cfg.kl_loss_ratio, a.use_bias_correction_kl)
    return pairs


# ---- the two systems' histories in one shape (lesson 07 and `make bench` compare them) ----

def ours_rows(history: list[dict[str, float]], cfg: RunConfig) -> list[dict[str, float]]:
    """rlhf_nb's train() history as benchmark rows: step, reward, kl, kl_seq, step_s, elapsed_s, tokens, plus the
    like-for-like KL columns: kl_k1_seq (Σ_t k1 per sequence of the rollout: `objective/kl`) and, with --kl_in_loss,
    kl_k3_seq (TRL's logged quantity on our rollout: `loss/kl`, a token mean of ratio·k3, times the mean length)."""
    n = cfg.batch_size * cfg.num_generations
    return [{"step": h["step"], "reward": h["objective/scores"], "kl": h["objective/kl"], "kl_seq": h["objective/kl"],
             "kl_k1_seq": h["objective/kl"],
             **({"kl_k3_seq": h["loss/kl"] * h["rollout/completion_len"]} if "loss/kl" in h else {}),
             "step_s": h["time/step_s"], "elapsed_s": h["time/elapsed_s"], "tokens": h["rollout/completion_len"] * n}
            for h in history]


def trl_rows(timer, cfg: RunConfig, probe: LogProbProbe | None = None) -> list[dict[str, float]]:
    """A StepTimer's TRL logs as benchmark rows, one per rollout (= ppo_epochs*num_minibatches TRL global steps).

    kl and kl_seq are TRL's own: its logged token mean of [ratio·]k3, and that times the mean length; kl_k3_seq is
    kl_seq under its like-for-like name. With a LogProbProbe, kl_k1_seq is rlhf_nb's estimator on TRL's rollout
    (Σ_t k1 per sequence under the policy that sampled it), the same quantity as ours_rows' kl_k1_seq."""
    per = cfg.ppo_epochs * cfg.num_minibatches  # TRL optimizer steps per rollout
    n = cfg.batch_size * cfg.num_generations
    k1 = probe.rollout_kl("k1") if probe is not None else {}
    rows = []
    for r in range(len(timer.step_s) // per):
        logs = [log for log in timer.logs if r * per < log["global_step"] <= (r + 1) * per]
        gen = next((log for log in logs if "reward" in log), None)
        if gen is None:
            break
        kl = statistics.fmean(log.get("kl", 0.0) for log in logs)  # token mean of [ratio·]k3, over the update
        length = gen["completions/mean_length"]
        first = r * per + 1  # the rollout's first optimizer step: its samples, scored by the policy that drew them
        rows.append({"step": r + 1, "reward": gen["reward"], "kl": kl, "kl_seq": kl * length, "kl_k3_seq": kl * length,
                     **({"kl_k1_seq": k1[first]} if first in k1 else {}),
                     "step_s": sum(timer.step_s[r * per:(r + 1) * per]), "elapsed_s": logs[-1]["elapsed_s"],
                     "tokens": length * n})
    return rows


def quiet_trainer(trainer):
    """Drop the PrinterCallback that transformers adds when disable_tqdm=True (it prints every log dict to stdout)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


# ---- one ruler for both systems: per-token log-probs, both KL estimators, TRL's own source (lesson 07) ----

def per_sequence_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """(B,) Σ_t kl_t over each sequence's completion tokens, kl_t = k1 (log π − log ρ) or k3 (e^{log ρ − log π} −
    (log ρ − log π) − 1). On the policy's own samples both sums are unbiased for the sequence's KL(π‖ρ)."""
    from ..kl import kl_estimate

    return (kl_estimate(logp, ref_logp, estimator) * mask.float()).sum(1)


def trl_logged_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                  logp_old: torch.Tensor | None = None) -> float:
    """TRL GRPO's logged `kl` for one loss: the masked token mean of ratio·k3, ratio = π_θ/π_old (1 on-policy, where
    TRL passes no old log-probs). It is rlhf_nb's `ppo.kl_penalty_loss`, the term `--kl_in_loss` adds to the loss."""
    from ..ppo import kl_penalty_loss

    return float(kl_penalty_loss(logp, logp if logp_old is None else logp_old, ref_logp, mask.float()))


class LogProbProbe:
    """Record the per-token tensors behind every loss TRL's GRPOTrainer computes (one per optimizer step here).

    Wraps the trainer's `_compute_loss` (and, while it runs, `_get_per_token_logps_and_entropies`) and the policy's
    `generate`. `records` gets one dict per loss, (B, T) CPU tensors over the completion tokens:
      step (the optimizer step), prompt_ids, prompt_mask, completion_ids, mask,
      logp: TRL's training forward, log π_θ; logp_old: TRL's old log-probs (None on-policy: the ratio is 1);
      ref_logp: TRL's reference forward; kl_logged: the number TRL appended to its `kl` metric for this loss;
      logp_sampled: log-prob under the distribution `generate` drew the token from (sampling=True);
      kit_logp, kit_ref_logp: rlhf_nb's `forward_tokens` on the same ids and weights (kit=True).
    """

    def __init__(self, trainer, kit: bool = True, sampling: bool = True):
        self.trainer, self.kit, self.records = trainer, kit, []
        self._sampled: dict[tuple, list[float]] = {}
        self._first_pass: dict[tuple, torch.Tensor] = {}
        self._loss = trainer._compute_loss
        self._logps = trainer._get_per_token_logps_and_entropies
        trainer._compute_loss = self._compute_loss
        if sampling:
            self._generate = trainer.model.generate
            trainer.model.generate = self._record_generate

    def _record_generate(self, *args, **kwargs):
        out = self._generate(*args, **{**kwargs, "return_dict_in_generate": True, "output_scores": True})
        ids, attn = kwargs["input_ids"], kwargs["attention_mask"]
        new = out.sequences[:, ids.size(1):]  # (B, T) sampled tokens
        logp = torch.stack(out.scores, 1).float().log_softmax(-1)  # (B, T, V): the distribution each draw used
        picked = logp[:, :new.size(1)].gather(-1, new[..., None]).squeeze(-1).cpu()
        eos = set(self.trainer.eos_token_ids)
        for b in range(new.size(0)):
            toks = new[b].tolist()
            n = next((i + 1 for i, t in enumerate(toks) if t in eos), len(toks))  # TRL keeps the first EOS
            self._sampled[(tuple(ids[b][attn[b].bool()].tolist()), tuple(toks[:n]))] = picked[b, :n].tolist()
        return out.sequences

    def _compute_loss(self, model, inputs):
        from ..policy import forward_tokens

        tr, seen = self.trainer, {}

        def logps(*args, **kwargs):
            out = self._logps(*args, **kwargs)
            seen.setdefault("logp", out[0].detach())  # the first call scores the policy
            return out

        tr._get_per_token_logps_and_entropies = logps
        try:
            loss = self._loss(model, inputs)
        finally:
            tr._get_per_token_logps_and_entropies = self._logps
        mode = "train" if tr.model.training else "eval"
        old = inputs.get("old_per_token_logps")
        pid, pmask, cid, mask = (inputs[k].detach().cpu() for k in ("prompt_ids", "prompt_mask", "completion_ids",
                                                                       "completion_mask"))
        rec = {"step": tr.state.global_step + 1, "prompt_ids": pid, "prompt_mask": pmask, "completion_ids": cid,
               "mask": mask, "logp": seen["logp"].cpu(), "logp_old": None if old is None else old.detach().cpu(),
               "ref_logp": inputs["ref_per_token_logps"].detach().cpu() if tr.beta != 0.0 else None,
               "kl_logged": tr._metrics[mode]["kl"][-1] if tr.beta != 0.0 else None}
        if self._sampled:
            rows = [self._sampled.get((tuple(p[m.bool()].tolist()), tuple(c[k.bool()].tolist())))
                    for p, m, c, k in zip(pid, pmask, cid, mask)]
            rec["logp_sampled"] = torch.tensor([(r or []) + [0.0] * (cid.size(1) - len(r or [])) for r in rows])
        if self.kit:
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
            attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
            args = (ids, attn, inputs["prompt_ids"].size(1), tr.temperature)
            with torch.no_grad():
                rec["kit_logp"] = (forward_tokens(tr.model, *args, entropy=False)[0] * mask).cpu()
                if tr.ref_model is not None:
                    rec["kit_ref_logp"] = (forward_tokens(tr.ref_model, *args, entropy=False)[0] * mask).cpu()
            # log π_old: our log-probs of this batch at its first pass, under the weights that sampled it
            key = (tuple(pid.shape), pid.numpy().tobytes(), tuple(cid.shape), cid.numpy().tobytes())
            rec["kit_logp_old"] = self._first_pass.setdefault(key, rec["kit_logp"])
        self.records.append(rec)
        return loss

    def kit_batches(self) -> list[dict[str, Any]]:
        """Each recorded batch as rlhf_nb sees it: {step, logp, logp_old, ref_logp, mask} from rlhf_nb's forward (the
        inputs of lesson 07's exercise) and kl_logged, the number TRL logged for it."""
        return [{"step": r["step"], "logp": r["kit_logp"], "logp_old": r["kit_logp_old"], "ref_logp": r["kit_ref_logp"],
                 "mask": r["mask"].float(), "kl_logged": r["kl_logged"]} for r in self.records]

    def agreement(self) -> dict[str, float]:
        """The largest disagreement over every recorded loss: TRL's logged kl against trl_logged_kl of TRL's own
        per-token tensors and of rlhf_nb's forward on the same ids; rlhf_nb's log π against TRL's; and the log-prob
        each token was sampled with against the one TRL trains on (0 when sampler and scorer are one distribution)."""
        recs, out = self.records, {}
        out["kl: TRL's logged vs recomputed from TRL's log-probs"] = max(
            abs(trl_logged_kl(r["logp"], r["ref_logp"], r["mask"], r["logp_old"]) - r["kl_logged"]) for r in recs)
        if "kit_logp" in recs[0]:
            out["kl: TRL's logged vs recomputed from rlhf_nb's log-probs"] = max(
                abs(trl_logged_kl(b["logp"], b["ref_logp"], b["mask"], b["logp_old"]) - b["kl_logged"])
                for b in self.kit_batches())
            out["log π: rlhf_nb's forward vs TRL's"] = max(
                float(((r["kit_logp"] - r["logp"]) * r["mask"]).abs().max()) for r in recs)
        if "logp_sampled" in recs[0]:
            out["log π: at sampling (generate) vs in training"] = max(
                float(((r["logp_sampled"] - (r["logp"] if r["logp_old"] is None else r["logp_old"])) * r["mask"])
                      .abs().max()) for r in recs)
        return out

    def rollout_kl(self, estimator: str = "k1") -> dict[int, float]:
        """{optimizer step: mean over the batch of Σ_t kl_t} on the rollout, under the policy that sampled it
        (log π_old; on-policy that is log π_θ): rlhf_nb's `objective/kl` for estimator k1, measured on TRL's samples."""
        return {r["step"]: float(per_sequence_kl(r["logp"] if r["logp_old"] is None else r["logp_old"],
                                                 r["ref_logp"], r["mask"], estimator).mean()) for r in self.records}


def top_k3_tokens(records: list[dict], tokenizer, n: int = 8) -> list[dict[str, Any]]:
    """The n completion tokens with the largest ratio·k3 term in TRL's logged `kl`, over LogProbProbe records: where
    the token sits, log π (TRL's training forward), log π at sampling (if recorded), log ρ, k3, and its share of that
    step's logged kl (k3 / (tokens in the batch · kl))."""
    from ..kl import kl_k3

    rows = []
    for r in records:
        old = r["logp"] if r["logp_old"] is None else r["logp_old"]
        term = kl_k3(r["logp"], r["ref_logp"]) * torch.exp(r["logp"] - old) * r["mask"]
        total = float(term.sum())
        for b, t in (term > 0).nonzero().tolist():
            rows.append((float(term[b, t]), r, b, t, total))
    rows.sort(key=lambda x: -x[0])
    out = []
    for value, r, b, t, total in rows[:n]:
        prompt = tokenizer.decode(r["prompt_ids"][b][r["prompt_mask"][b].bool()])
        out.append({"step": r["step"], "text": prompt + "|" + tokenizer.decode(r["completion_ids"][b][:t]),
                    "token": tokenizer.decode(r["completion_ids"][b][t:t + 1]), "log π": float(r["logp"][b, t]),
                    **({"log π at sampling": float(r["logp_sampled"][b, t])} if "logp_sampled" in r else {}),
                    "log ρ": float(r["ref_logp"][b, t]), "k3": value, "share of step's kl": value / total})
    return out


def measure_kl(policy, ref, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One completion per prompt sampled from `policy` (rlhf_nb's sampler: any causal LM, an rlhf_nb policy or a TRL
    trainer's model), scored by it and by `ref` with rlhf_nb's forward: {"k1": (B,) Σ_t k1, "k3": (B,) Σ_t k3,
    "length": (B,) tokens}. One function, so both systems' policies are measured with the same ruler."""
    from ..policy import forward_tokens, sample

    with torch.no_grad():
        ro = sample(policy, tokenizer, list(prompts), max_new_tokens, temperature, generator=generator)
        args = (ro.query_responses, ro.attention_mask, ro.context_length, temperature)
        logp, ref_logp = (forward_tokens(m, *args, entropy=False)[0] for m in (policy, ref))
    mask = ro.completion_mask.float()
    return {"k1": per_sequence_kl(logp, ref_logp, mask, "k1"), "k3": per_sequence_kl(logp, ref_logp, mask, "k3"),
            "length": mask.sum(1)}


def source_lines(obj, *patterns: str) -> list[str]:
    """The lines of `obj`'s source (a class, function or method of the installed TRL or transformers) that contain
    any of `patterns`, as 'package/path.py:line  text', so a claim about the library can be checked where it runs."""
    import inspect

    lines, start = inspect.getsourcelines(inspect.unwrap(obj))
    path = Path(inspect.getsourcefile(inspect.unwrap(obj)))
    root = next((p for p in path.parents if p.name in ("site-packages", "dist-packages")), path.parents[1])
    rel = path.relative_to(root).as_posix()
    return [f"{rel}:{start + i}  {line.strip()}" for i, line in enumerate(lines) if any(p in line for p in patterns)]


def config_defaults(config_cls, names: list[str]) -> dict[str, Any]:
    """{field: value} of a config (e.g. trl.GRPOConfig) built with no arguments but an output folder and use_cpu=True
    (without it, the bf16 default is refused on a machine with no GPU): the installed version's defaults after its
    __post_init__ (GRPOConfig declares bf16=None and turns it into True there)."""
    import warnings

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5.2x: gradient_checkpointing's rename
        cfg = config_cls(output_dir=d, use_cpu=True)
        return {n: getattr(getattr(cfg, n), "value", getattr(cfg, n)) for n in names}  # enums as their plain value


# Claims lesson 07 and docs/trl_bridge.md make about TRL (and the transformers it runs on), each with the function it
# can be checked in and the source fragments that show it; tests/test_trl_bridge.py fails if a fragment is missing.
TRL_FACTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("GRPO's KL term is k3 = e^(log ρ − log π) − (log ρ − log π) − 1 per token, times the ratio π_θ/π_old by default",
     "trl.GRPOTrainer._compute_loss",
     ("torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1",
      "if self.args.use_bias_correction_kl:", "per_token_kl = per_token_kl * coef_1")),
    ("it is added to the loss per token, weighted by β (not to the reward)", "trl.GRPOTrainer._compute_loss",
     ("per_token_loss = per_token_loss + self.beta * per_token_kl",)),
    ("loss_type='bnpo' is one token mean over the batch; 'grpo' a token mean per sequence, then a mean over sequences",
     "trl.GRPOTrainer._compute_loss",
     ('elif self.loss_type == "bnpo":', "loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)",
      "loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()")),
    ("the logged `kl` is the token mean of that ratio·k3 over the batch, without β", "trl.GRPOTrainer._compute_loss",
     ("local_sum, local_count = (x * mask).sum(), mask.sum().float()", 'self._metrics[mode]["kl"].append(')),
    ("the group advantage is (r − group mean) / (group std + 1e-4), unbiased std",
     "trl.GRPOTrainer._generate_and_score_completions",
     ("std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)", "advantages = advantages / (std_rewards + 1e-4)")),
    ("the training forward passes no position_ids", "trl.GRPOTrainer._get_per_token_logps_and_entropies",
     ('model_inputs = {"input_ids": input_ids_batch, "attention_mask": attention_mask_batch}',)),
    ("generate() makes mask-derived position_ids only for a forward whose signature names them",
     "transformers.generation.utils.GenerationMixin.generate",
     ('accepts_position_ids = "position_ids" in set(inspect.signature(self.forward).parameters.keys())',
      'model_kwargs["position_ids"] = self._prepare_position_ids_for_generation(')),
    ("prompts are drawn without replacement: a shuffled permutation, each index repeated num_generations times",
     "trl.trainer.utils.RepeatSampler.__iter__",
     ("indexes = torch.randperm(self.num_samples, generator=self.generator).tolist()",
      "for _ in range(self.mini_repeat_count):")),
    ("RLOO subtracts β·Σ_t k1 from the reward, with k1 under the sampling policy",
     "trl.RLOOTrainer._generate_and_score_completions",
     ("per_token_kl = old_per_token_logps - ref_per_token_logps", "rewards = rewards - self.beta * kl")),
    ("RLOO clips one ratio per sequence, exp(Σ_t log π_θ − Σ_t log π_old)", "trl.RLOOTrainer._compute_loss",
     ("logps = (per_token_logps * completion_mask).sum(1)", "coef_1 = torch.exp(log_ratio)",
      "per_sequence_loss = -torch.min(per_sequence_loss1, per_sequence_loss2)")),
)


def format_evidence(rows: list[dict[str, str]]) -> str:
    """trl_evidence() rows as text: each claim once, then 'file:line  source' for each fragment that shows it."""
    out, last = [], None
    for r in rows:
        if r["claim"] != last:
            out.append(f"• {r['claim']}  [{r['function']}]")
            last = r["claim"]
        out.append(f"    {r['file:line']}  {r['source']}")
    return "\n".join(out)


def comparison_table(runs: dict[str, list[list[dict]]], final: dict[str, list[dict]] | None = None,
                     last_reward: int = 5, last_kl: int = 10):
    """One number per seed, then its mean, min and max over the seeds (a pandas DataFrame: rows (quantity, stat),
    one column per system). runs: {label: one list of ours_rows/trl_rows per seed}; final: {label: one measure_kl
    result per seed}. A quantity a system lacks (kl_k3_seq for PPO) is NaN."""
    import math

    import pandas as pd

    def mean(xs):
        return sum(xs) / len(xs)

    table = {}
    for label, seeds in runs.items():
        per_seed = {
            f"reward, last {last_reward} steps": [mean([r["reward"] for r in rows[-last_reward:]]) for rows in seeds],
            f"Σk1 per sequence, rollouts of the last {last_kl} steps": [
                mean([r["kl_k1_seq"] for r in rows[-last_kl:]]) for rows in seeds],
            f"Σk3 per sequence, rollouts of the last {last_kl} steps": [
                mean([r.get("kl_k3_seq", math.nan) for r in rows[-last_kl:]]) for rows in seeds],
        }
        for est in ("k1", "k3"):
            if final and label in final:
                per_seed[f"Σ{est} per sequence, final policy's samples"] = [float(m[est].mean()) for m in final[label]]
        table[label] = {(q, stat): fn(v) for q, v in per_seed.items()
                        for stat, fn in (("mean", mean), ("min", min), ("max", max))}
    return pd.DataFrame(table)


def _resolve(dotted: str):
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"cannot import any prefix of {dotted!r}")


def trl_evidence(facts=TRL_FACTS) -> list[dict[str, str]]:
    """For each fact: the claim, where it lives (function and 'file:line') and the source line that shows it, read
    from the installed packages; a fragment that is no longer there shows as 'NOT FOUND'."""
    rows = []
    for claim, where, fragments in facts:
        found = source_lines(_resolve(where), *fragments)
        for frag in fragments:
            hit = next((line for line in found if frag in line), None)
            loc, _, text = hit.partition("  ") if hit else ("NOT FOUND", "", frag)
            rows.append({"claim": claim, "function": where, "file:line": loc, "source": text.strip()})
    return rows


# ================================================================ DPO: TRL's DPOTrainer from a DPOConfig and pairs

# DPOConfig field (rlhf_nb.dpo) -> (trl.DPOConfig / DPOTrainer field(s), how the value is carried over)
DPO_KNOB_MAP: dict[str, tuple[str, str]] = {
    "seed": ("seed", "same value; TRL's dataloader shuffles the pairs with its own sampler, so the order differs"),
    "beta": ("beta", "same value (IPO: τ in both)"),
    "loss": ("loss_type", "[loss]: sigmoid and sft are the same loss; TRL's ipo averages the log-ratios per token "
                          "(difference D2 in docs/trl_bridge.md)"),
    "batch_size": ("per_device_train_batch_size", "batch_size / world_size pairs per device; "
                                                   "gradient_accumulation_steps = 1"),
    "epochs": ("num_train_epochs", "same value; both take ceil(pairs / batch_size) steps per epoch"),
    "learning_rate": ("learning_rate", "same value; lr_scheduler_type='constant', no warmup"),
    "adam_eps": ("adam_epsilon", "same value; optim='adamw_torch' with weight_decay=0 is Adam"),
    "max_grad_norm": ("max_grad_norm", "same value"),
    "model": ("model", "a local folder or hub id ('embedded' is the kit's folder); TRL loads policy and reference from it"),
    "pairs": ("train_dataset", "the same records as a datasets.Dataset of prompt / chosen / rejected strings"),
    "eval_pairs": ("eval_dataset", "the same records; TRL reports eval_rewards/accuracies (agreement with the labels)"),
    **_RUN_KNOBS,
}

# DPOConfig fields with no counterpart in TRL's DPOTrainer, and why
DPO_UNMAPPED: dict[str, str] = {
    "eval_samples": "TRL never samples during DPO; rlhf_nb samples only to measure KL(π‖ρ) and the gold at epoch ends",
    "max_new_tokens": "length of those measurement samples; DPO itself generates nothing",
    **_RUN_UNMAPPED,
}


def trl_dpo_config_kwargs(cfg, output_dir: str, world_size: int | None = None) -> dict[str, Any]:
    """The keyword arguments of trl.DPOConfig that DPO_KNOB_MAP describes (no TRL import needed)."""
    ws = world_size or _world_size()
    if cfg.batch_size % ws:
        raise ValueError(f"--batch_size {cfg.batch_size} must divide into world_size = {ws} equal per-device batches")
    use_cpu = pick_device(cfg.device).type == "cpu"  # --device cuda with no GPU is refused, not run on the CPU
    return dict(
        output_dir=output_dir,
        seed=cfg.seed,
        # objective
        beta=cfg.beta,
        loss_type=[cfg.loss],
        # batch and length of training
        per_device_train_batch_size=cfg.batch_size // ws,
        gradient_accumulation_steps=1,
        num_train_epochs=cfg.epochs,
        max_length=None,  # rlhf_nb refuses pairs longer than the model's context instead of truncating them
        precompute_ref_log_probs=True,  # as rlhf_nb: the reference scores every pair once, before training
        # optimizer: Adam with a constant learning rate, as rlhf_nb
        learning_rate=cfg.learning_rate,
        adam_epsilon=cfg.adam_eps,
        weight_decay=0.0,
        optim="adamw_torch",
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=cfg.max_grad_norm,
        # precision and device: rlhf_nb trains in float32
        use_cpu=use_cpu,
        bf16=False,
        fp16=False,
        **_no_checkpointing(),  # TRL's default (on) costs time and buys nothing on a tiny model
        disable_dropout=True,
        # logging and saving
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
    )


def _pairs_dataset(pairs: list[dict]):
    """Preference records as a datasets.Dataset with only TRL's prompt / chosen / rejected columns."""
    from datasets import Dataset

    return Dataset.from_dict({k: [r[k] for r in pairs] for k in ("prompt", "chosen", "rejected")})


def make_trl_dpo_trainer(cfg, pairs: list[dict] | None = None, eval_pairs: list[dict] | None = None,
                         output_dir: str | None = None, callbacks: list | None = None, offline: bool | None = None):
    """Build TRL's DPOTrainer equivalent to an rlhf_nb.dpo.DPOConfig, on the same model and pairs.

    pairs / eval_pairs: preference records; None reads cfg.pairs / cfg.eval_pairs as `python -m rlhf_nb.dpo` does.
    No position-id patch is needed (difference D4): TRL pads preference batches on the right. Checks and clean-up
    as make_trl_trainer: one ValueError/OSError line before anything is made; folders made here go if building fails.
    """
    from ..dpo import load_pairs

    cfg.validate()
    trl_dpo_config_kwargs(cfg, "")  # refuses --device cuda without a GPU and uneven per-device batches
    if pairs is None:
        pairs = load_pairs(cfg.pairs, "--pairs", "train")
    if eval_pairs is None and cfg.eval_pairs:
        eval_pairs = load_pairs(cfg.eval_pairs, "--eval_pairs", "eval")
    path = resolve_model_path(cfg.model)
    if offline is None:
        offline = Path(path).is_dir()
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    check_model(path)
    if output_dir is None and cfg.run_name:
        output_dir = str(Path(cfg.out) / cfg.run_name)
    trl = _require_trl()
    from transformers import AutoTokenizer

    torch.set_num_threads(cfg.threads)
    made: list[str] = []
    temp_out = None
    try:
        if output_dir is None:
            output_dir = temp_out = tempfile.mkdtemp(prefix="rlhf_nb_trl_dpo_")
            made.append(temp_out)
        else:
            created = check_output_dir(output_dir)
            if created is not None:
                made.append(str(created))
        tok = AutoTokenizer.from_pretrained(path)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        cbs = list(callbacks or [])
        if cfg.max_minutes is not None:
            cbs.append(StepTimer.make(60 * cfg.max_minutes))
        trainer = trl.DPOTrainer(model=path, args=trl.DPOConfig(**trl_dpo_config_kwargs(cfg, output_dir)),
                                 train_dataset=_pairs_dataset(pairs),
                                 eval_dataset=_pairs_dataset(eval_pairs) if eval_pairs else None,
                                 processing_class=tok, callbacks=cbs)
    except BaseException:
        for folder in made:
            _remove_empty_tree(folder)
        raise
    weakref.finalize(trainer, _cleanup_temp, None, temp_out)
    return trainer


def dpo_mapped_values(cfg, trainer) -> dict[str, tuple[Any, Any]]:
    """{DPOConfig field: (our value, the value TRL's DPOTrainer holds)} for every one-to-one knob: a self-check."""
    a = trainer.args
    return {
        "seed": (cfg.seed, a.seed),
        "beta": (cfg.beta, trainer.beta),
        "loss": ([cfg.loss], trainer.loss_types),
        "batch_size": (cfg.batch_size, a.per_device_train_batch_size * _world_size()),
        "epochs": (cfg.epochs, a.num_train_epochs),
        "learning_rate": (cfg.learning_rate, a.learning_rate),
        "adam_eps": (cfg.adam_eps, a.adam_epsilon),
        "max_grad_norm": (cfg.max_grad_norm, a.max_grad_norm),
    }
