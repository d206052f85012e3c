"""The RLHF loop: rollout -> score -> KL -> advantages -> PPO epochs -> log -> checkpoint. Also the CLI:

    python -m rlhf_nb.train --seed 0 --reward sentiment --kl_coef 0.05 --batch_size 32
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

if __name__ == "__main__":  # `python -m rlhf_nb.train`: a Ctrl-C while torch imports (seconds) ends in one line too
    def _interrupted_while_importing(signum, frame):
        os.write(2, b"\ninterrupted during start-up: nothing was trained or written\n")
        os._exit(130)

    signal.signal(signal.SIGINT, _interrupted_while_importing)

import torch  # noqa: E402 (the guard above must run first)

from .advantages import compute_gae, group_advantages, per_token_rewards, whiten_advantages, whiten_rewards  # noqa: E402
from .checkpoints import (CheckpointError, CheckpointWriteError, checkpoint_bytes, describe_write_error,  # noqa: E402
                          load_checkpoint, save_checkpoint)
from .cli import config_from_args  # noqa: E402
from .config import RESUME_OVERRIDABLE, ConfigError, RunConfig, check_output_writable, silence  # noqa: E402,F401
from .corpus import PROMPTS
from .diagnostics import Diagnostics
from .gold import get_gold
from .kl import AdaptiveKLController, FixedKLController, kl_estimate, kl_k1
from .masking import masked_mean
from .policy import PolicyWithValue, forward_tokens, load_policy, make_reference, model_context_length, pick_device, sample
from .ppo import PPOBatch, explained_variance, ppo_update
from .rewards import reward_for
from .runlog import Progress, RunLogger, new_run_dir
from .seeding import seed_everything

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
EXIT_BAD_INPUT = 2  # a bad flag, model or checkpoint, refused before any work
EXIT_WRITE_FAILED = 74  # EX_IOERR (sysexits.h): a checkpoint or log could not be written (disk full…)
EXIT_STOPPED = 75  # EX_TEMPFAIL: --max_minutes stopped the run on purpose; resuming finishes it
RESUME_WARN = ("threads", "device")  # may change on --resume, but then the continuation is not bit-for-bit


@dataclass
class TrainState:
    """Everything that changes during a run; a checkpoint restores all of it."""

    cfg: RunConfig
    policy: PolicyWithValue
    ref: torch.nn.Module
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    reward_fn: Callable[[list[str], list[str]], torch.Tensor]
    kl_ctl: FixedKLController | AdaptiveKLController
    generators: dict[str, torch.Generator]
    device: torch.device
    prompts: list[str] = field(default_factory=lambda: list(PROMPTS))
    step: int = 0
    gold_fn: Callable[[list[str], list[str]], torch.Tensor] | None = None  # logged only, never optimised


def check_config_against_model(cfg: RunConfig) -> None:
    """Checks that need the model's config (cheap, no weights): the completion must fit the context."""
    ctx = model_context_length(cfg.model)
    longest_prompt = 16  # the kit's prompts are a few words; hub tokenizers may split them into more pieces
    if ctx <= longest_prompt:
        raise ConfigError(f"--model {cfg.model!r} has a context of {ctx} tokens; the kit needs at least "
                          f"{longest_prompt + 1} ({longest_prompt} for the prompt + 1 new token)")
    if cfg.max_new_tokens > ctx - longest_prompt:
        raise ConfigError(f"--max_new_tokens must be in [1, {ctx - longest_prompt}] for model {cfg.model!r} "
                          f"(context {ctx} tokens minus room for the prompt), got {cfg.max_new_tokens}")


def setup(cfg: RunConfig) -> TrainState:
    """Validate, seed, load policy + frozen reference + reward, build the optimizer. Fails before any training."""
    cfg.validate()
    device = pick_device(cfg.device)
    check_config_against_model(cfg)
    reward_fn = reward_for(cfg.reward, cfg.reward_model)
    gold_fn = get_gold(cfg.gold, cfg.reward)
    seed_everything(cfg.seed, threads=cfg.threads)
    lm, tokenizer = load_policy(cfg.model, device)
    ref = make_reference(lm)
    policy = PolicyWithValue(lm).to(device)
    policy.eval()  # dropout stays off in RL: rollout and update must see the same log-probs
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
              else FixedKLController(cfg.kl_coef))
    gens = {}
    for i, name in enumerate(("prompts", "sample", "minibatch")):  # independent streams: changing one never shifts another
        g = torch.Generator(device=device if name == "sample" else "cpu")
        g.manual_seed(cfg.seed * 1000 + i)
        gens[name] = g
    return TrainState(cfg, policy, ref, tokenizer, optimizer, reward_fn, kl_ctl, gens, device, gold_fn=gold_fn)


def next_prompts(s: TrainState) -> list[str]:
    """batch_size prompts drawn from the prompt set, each repeated num_generations times (contiguous groups)."""
    idx = torch.randint(len(s.prompts), (s.cfg.batch_size,), generator=s.generators["prompts"])
    return [s.prompts[i] for i in idx.tolist() for _ in range(s.cfg.num_generations)]


def ppo_step(s: TrainState) -> tuple[dict[str, float], dict[str, Any]]:
    """One RLHF step. Returns (metrics, samples) — metrics use the names of docs/metrics.md."""
    cfg, dev = s.cfg, s.device
    clock = [time.perf_counter()]

    # 1. rollout: sample completions from the current policy
    ro = sample(s.policy, s.tokenizer, next_prompts(s), cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p,
                generator=s.generators["sample"])
    ids, attn, P = ro.query_responses, ro.attention_mask, ro.context_length
    mask = ro.completion_mask.float()  # (B, T)
    clock.append(time.perf_counter())

    # 2. score each prompt + completion with the sequence-level reward
    scores = s.reward_fn(ro.prompts, ro.completions).to(dev).float()  # (B,)
    if cfg.missing_eos_penalty is not None:
        scores = scores - cfg.missing_eos_penalty * (~ro.ended_with_eos).float()
    gold = s.gold_fn(ro.prompts, ro.completions) if s.gold_fn is not None else None  # (B,) logged, never optimised
    clock.append(time.perf_counter())

    # 3. log-probs under the policy (old, frozen for this step) and the reference; values
    single_pass = cfg.ppo_epochs == 1 and cfg.num_minibatches == 1
    if single_pass:  # one gradient step on fresh samples: the update's own forward gives the old log-probs (ratio = 1)
        first_forward = forward_tokens(s.policy, ids, attn, P, cfg.temperature, entropy_grad=cfg.ent_coef != 0)
        logp_old, entropy, values = (t.detach() for t in first_forward)
    else:
        first_forward = None
        with torch.no_grad():
            logp_old, entropy, values = forward_tokens(s.policy, ids, attn, P, cfg.temperature)
    with torch.no_grad():
        ref_logp, _, _ = forward_tokens(s.ref, ids, attn, P, cfg.temperature, entropy=False)
    logp_old, ref_logp, values = logp_old * mask, ref_logp * mask, values * mask

    # 4. KL penalty per token: r_t = -beta * kl_t (+ score at the last real token); or, TRL-GRPO style, beta * k3 in the loss
    beta = s.kl_ctl.value
    kl = kl_estimate(logp_old, ref_logp, cfg.kl_estimator) * mask  # (B, T)
    rewards, non_score_reward = per_token_rewards(scores, kl, mask, 0.0 if cfg.kl_in_loss else beta)

    # 5. advantages: GAE on the value head (PPO) or a group baseline (GRPO / RLOO)
    if cfg.advantage == "gae":
        if cfg.whiten_rewards:
            rewards = whiten_rewards(rewards, mask)
        advantages, returns = compute_gae(rewards, values, mask, cfg.gamma, cfg.lam)
        advantages = whiten_advantages(advantages, mask)
    else:
        seq_reward = rewards.sum(1)  # = score - beta * sum_t kl_t
        advantages = group_advantages(seq_reward, cfg.num_generations, cfg.advantage)[:, None] * mask
        returns = None
    clock.append(time.perf_counter())

    # 6. PPO epochs over shuffled minibatches
    set_learning_rate(s.optimizer, lr_factor(s.step, cfg))  # this step's rate (--lr_warmup_steps, --lr_decay)
    batch = PPOBatch(ids, attn, P, mask, logp_old, advantages, values_old=values if returns is not None else None,
                     returns=returns, ref_logp=ref_logp)
    upd = ppo_update(s.policy, s.optimizer, batch, cfg, s.generators["minibatch"], first_forward,
                     kl_coef_loss=beta if cfg.kl_in_loss else 0.0)
    clock.append(time.perf_counter())

    # 7. adapt beta toward the target KL (a no-op for the fixed controller)
    seq_kl = (kl_k1(logp_old, ref_logp) * mask).sum(1)  # (B,)
    s.kl_ctl.update(float(seq_kl.mean()), cfg.batch_size * cfg.num_generations)
    s.step += 1

    clock.append(time.perf_counter())
    metrics = step_metrics(batch, ro, scores, seq_kl, rewards, non_score_reward, entropy, beta, upd, clock)
    if gold is not None:
        metrics["objective/gold_scores"] = float(gold.mean())
    k = min(cfg.log_samples, len(ro.prompts))
    samples = {"prompts": ro.prompts[:k], "completions": ro.completions[:k], "scores": scores[:k].tolist()}
    return metrics, samples


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: the learning rate is lr·(step + 1)/N for the first N steps (step counts from 0), then lr."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def lr_factor(step: int, cfg: RunConfig) -> float:
    """This step's learning rate over --learning_rate: the warm-up, then --lr_decay down to 1/(steps left) at the last
    of the run's epochs * steps_per_epoch steps (never 0 inside the run); a function of the step alone."""
    if step < cfg.lr_warmup_steps or cfg.lr_decay == "constant":
        return warmup_factor(step, cfg.lr_warmup_steps)
    frac = min(1.0, (step - cfg.lr_warmup_steps) / max(1, cfg.total_steps - cfg.lr_warmup_steps))
    return 1.0 - frac if cfg.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))


def set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Each group's learning rate = its rate at construction × factor (the rate is a function of the step alone, so
    an exact resume needs no scheduler state)."""
    for g in optimizer.param_groups:
        g["lr"] = g.setdefault("initial_lr", g["lr"]) * factor


def step_metrics(batch: PPOBatch, ro, scores: torch.Tensor, seq_kl: torch.Tensor, rewards: torch.Tensor,
                 non_score_reward: torch.Tensor, entropy: torch.Tensor, beta: float, upd: dict[str, float],
                 clock: list[float]) -> dict[str, float]:
    """The step's statistics under the names of docs/metrics.md; clock holds the perf_counter at each stage's end."""
    mask, values, returns = batch.mask, batch.values_old, batch.returns
    n_tokens = float(mask.sum())
    t0, t_rollout, t_score, t_forward, t_update, t_end = clock
    return {
        "objective/scores": float(scores.mean()),
        "objective/scores_std": float(scores.std()) if scores.numel() > 1 else 0.0,
        "objective/kl": float(seq_kl.mean()),
        "objective/non_score_reward": float(non_score_reward.sum(1).mean()),
        "objective/rlhf_reward": float(rewards.sum(1).mean()),
        "objective/kl_coef": beta,
        "policy/entropy": float(masked_mean(entropy, mask)),
        **upd,
        "value/mean": float(masked_mean(values, mask)) if returns is not None else 0.0,
        "value/explained_variance": explained_variance(values, returns, mask) if returns is not None else float("nan"),
        "rollout/completion_len": n_tokens / mask.size(0),
        "rollout/eos_frac": float(ro.ended_with_eos.float().mean()),
        "time/rollout_tokens_per_s": n_tokens / max(t_rollout - t0, 1e-9),
        "time/rollout_s": t_rollout - t0,
        "time/score_s": t_score - t_rollout,
        "time/forward_s": t_forward - t_score,
        "time/update_s": t_update - t_forward,
        "time/step_s": t_end - t0,
    }


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    run_dir: Path | None
    state: TrainState
    stopped_early: str | None = None  # why the run stopped before its last step, if it did
    stop_signal: int | None = None  # the first SIGINT/SIGTERM/SIGHUP received, if any
    last_checkpoint: Path | None = None  # where to resume from: final/ once it is written
    warnings: list[str] = field(default_factory=list)  # the diagnostics' lines the run printed, in order

    @property
    def exit_code(self) -> int:
        """0 done; 128 + N after signal N (what a shell reports for it); EXIT_STOPPED after --max_minutes."""
        if self.stop_signal:
            return 128 + self.stop_signal
        return EXIT_STOPPED if self.stopped_early else 0


class RunWriteError(OSError):
    """The run folder could not be written (disk full…); the message says where the run can resume from."""


class RunAborted(KeyboardInterrupt):
    """A second Ctrl-C abandoned a step half-way; the message says where the run can resume from."""


def _trainer_state(s: TrainState) -> dict[str, Any]:
    return {"step": s.step, "kl_ctl": s.kl_ctl.state_dict(), "config": s.cfg.to_dict()}


def _checkpoint(s: TrainState, path: Path) -> Path:
    return save_checkpoint(path, s.policy, s.tokenizer, s.optimizer, s.generators, _trainer_state(s))


def resume(s: TrainState, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint into s (weights, optimizer, RNG streams, β, step); CheckpointError names a bad file."""
    saved = load_checkpoint(path, s.policy, s.optimizer, s.generators, s.device)
    try:
        s.kl_ctl.load_state_dict(saved["kl_ctl"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{Path(path) / 'trainer_state.json'}: kl_ctl is malformed ({e})") from None
    s.step = saved["step"]
    if s.step >= s.cfg.total_steps:
        raise ConfigError(f"--epochs: the checkpoint is at step {s.step} and the run has {s.cfg.total_steps} steps; "
                          f"nothing is left to train (pass a larger --epochs to continue)")
    return saved


def train(cfg: RunConfig, callback: Callable[[int, dict, dict], None] | None = None, write_run: bool = True,
          state: TrainState | None = None, run_dir: str | Path | None = None) -> TrainResult:
    """Run cfg.total_steps RLHF steps (or until --max_minutes or a signal).

    With write_run, writes the standard run folder: a fresh one under cfg.out, or `run_dir` if given
    (an existing folder made by new_run_dir, e.g. by `make smoke` for its notebook). SIGINT/SIGTERM/SIGHUP then
    finish the step and write final/; they stay caught until final/ is in place (see _install_signal_handlers)."""
    if write_run and run_dir is None:
        check_output_writable(cfg.out)  # before the model loads
    elif write_run:
        check_run_dir(run_dir)
    s = state or setup(cfg)
    last = None  # (checkpoint, step) the run can resume from
    if cfg.resume:
        saved = resume(s, cfg.resume)
        last = (Path(cfg.resume), s.step)
    start_step = s.step
    if write_run:
        _check_free_space(Path(run_dir or cfg.out), s)
    # shared with the signal handler; in_step: only then may a second Ctrl-C abandon the step, never during a write
    stop, logger, history, warnings = {"why": None, "signum": None, "in_step": False}, None, [], []
    handlers = _install_signal_handlers(stop) if write_run else {}
    bar = Progress(cfg.progress, cfg.total_steps, start_step)
    diag = Diagnostics(cfg)  # live checks for the tell-tale signs of a broken run (docs/troubleshooting.md)
    t_start = time.perf_counter()
    try:
        if write_run:
            run_dir, logger = _open_run(cfg, run_dir)
            if cfg.resume:
                _log(logger, last, start_step, f"resumed from {cfg.resume} at step {start_step}")
                for k in RESUME_WARN:
                    if getattr(cfg, k) != saved["config"][k]:
                        msg = (f"warning: --{k} {getattr(cfg, k)!r} differs from the checkpoint's {saved['config'][k]!r}: "
                               f"the run continues, but not bit-for-bit as it would have without the stop")
                        _say(msg)
                        _log(logger, last, start_step, msg)
        while s.step < cfg.total_steps and not stop["why"]:
            stop["in_step"] = True
            try:
                metrics, samples = ppo_step(s)
            except KeyboardInterrupt:
                if logger is None:
                    raise
                raise RunAborted(_abandoned(s.step, logger, last)) from None
            finally:
                stop["in_step"] = False
            metrics["time/elapsed_s"] = time.perf_counter() - t_start
            history.append({"step": s.step, **metrics})
            for line in diag.update(s.step, metrics):  # one line per kind of trouble, once per run
                warnings.append(line)
                print(line, file=sys.stderr)
                if logger:
                    _log(logger, last, s.step, line)
            if logger:
                _log(logger, last, s.step, metrics=metrics, samples=samples)
                if cfg.save_every and s.step % cfg.save_every == 0:
                    last = _save(s, run_dir / "checkpoints" / f"step_{s.step}", logger, last)
            bar.update(metrics)
            if callback is not None:
                callback(s.step, metrics, samples)
            if cfg.max_minutes is not None and time.perf_counter() - t_start > 60 * cfg.max_minutes:
                stop["why"] = stop["why"] or f"--max_minutes {cfg.max_minutes} reached"
        bar.close()
        if logger:
            last = _save(s, run_dir / "final", logger, last)  # signals are still caught: a Ctrl-C now waits for it
            if s.step < cfg.total_steps:
                _log(logger, last, s.step, f"stopped at step {s.step}: {stop['why']}. Resume with: "
                                           f"python -m rlhf_nb.train --resume {last[0]}")
            logger.close()
    finally:
        bar.close()
        _restore_signal_handlers(handlers)
    return TrainResult(history, run_dir, s, stop["why"] if s.step < cfg.total_steps else None, stop["signum"],
                       last[0] if last else None, warnings)


def check_run_dir(run_dir: str | Path) -> None:
    """`run_dir` (the smoke notebook's out_dir) must be a folder that holds no run yet, or a path where one can be
    made: refused with one line naming it before the model loads, never a FileExistsError from deep inside."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run_dir {str(path)!r} is a file; pass a fresh folder for the run")
    if (path / "logs").exists():
        raise ConfigError(f"run_dir {str(path)!r} already holds a run; pass a fresh folder (a run is never overwritten)")
    check_output_writable(path)


def _open_run(cfg: RunConfig, run_dir: str | Path | None) -> tuple[Path, RunLogger]:
    """A fresh run folder (or the given empty one) with config.json and its logger."""
    try:
        if run_dir is not None:
            run_dir = Path(run_dir)
            if (run_dir / "logs").exists():
                raise FileExistsError(f"run_dir {run_dir} already holds a run; pass a fresh folder (never overwritten)")
            run_dir.mkdir(parents=True, exist_ok=True)
        else:
            run_dir = new_run_dir(cfg.out, cfg.run_name)
        (run_dir / "config.json").write_text(cfg.to_json())
        logger = RunLogger(run_dir)
        logger.info(f"run {run_dir} config {json.dumps(cfg.to_dict(), sort_keys=True)}")
    except FileExistsError:
        raise
    except OSError as e:
        raise RunWriteError(f"could not create the run folder under {cfg.out}: {describe_write_error(e, Path(cfg.out))}"
                            ) from None
    return run_dir, logger


def _check_free_space(where: Path, s: TrainState) -> None:
    """Refuse to start when not even one checkpoint fits: every step would be lost at the end."""
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return
    need = checkpoint_bytes(s.policy, s.optimizer)
    if free < need:
        raise ConfigError(f"--out {str(where)!r} has {free / 2**20:.1f} MB free, but one checkpoint of this model needs "
                          f"about {need / 2**20:.1f} MB; free some space or pick another --out")


PROG = "python -m rlhf_nb.train"


def _resume_hint(last: tuple[Path, int] | None, prog: str = PROG) -> str:
    if last is None:
        return "No checkpoint was written, so there is nothing to resume from (--save_every N writes periodic ones)."
    return f"The last checkpoint is step {last[1]}; resume with: {prog} --resume {last[0]}"


def _write(logger: RunLogger, last: tuple[Path, int] | None, step: int, what: Callable[[], Any],
           prog: str = PROG) -> Any:
    """One write to the run folder; a failed write (disk full…) stops the run with one line saying where to resume.

    Shared by every trainer (rlhf_nb.dpo too): `what` writes logs or a checkpoint; `prog` names the CLI to resume with."""
    try:
        return what()
    except CheckpointWriteError as e:
        msg = f"{e}. The run stopped at step {step}. {_resume_hint(last, prog)}"
    except OSError as e:
        msg = (f"could not write the run's logs in {logger.run_dir}: {describe_write_error(e, logger.run_dir)}. "
               f"The run stopped at step {step}. {_resume_hint(last, prog)}")
    logger.close(quiet=True, msg=msg)
    raise RunWriteError(msg) from None


def _save(s: TrainState, path: Path, logger: RunLogger, last: tuple[Path, int] | None) -> tuple[Path, int]:
    """Write a checkpoint; on failure (disk full…) stop the run with one line that says where to resume from."""
    return _write(logger, last, s.step, lambda: _checkpoint(s, path)), s.step


def _log(logger: RunLogger, last: tuple[Path, int] | None, step: int, info: str | None = None,
         metrics: dict | None = None, samples: dict | None = None) -> None:
    """Write to the run's logs; a failed write (disk full…) stops the run like a failed checkpoint."""
    def write():
        line = info
        if metrics is not None:
            logger.metrics(step, metrics)
            logger.samples(step, samples["prompts"], samples["completions"], samples["scores"])
            line = f"step {step} reward {metrics['objective/scores']:.4f} kl {metrics['objective/kl']:.4f}"
        logger.info(line)

    _write(logger, last, step, write)


def _abandoned(step: int, logger: RunLogger, last: tuple[Path, int] | None, prog: str = PROG) -> str:
    msg = f"Ctrl-C again: abandoned step {step + 1} half-way; nothing of it is saved. {_resume_hint(last, prog)}"
    logger.close(quiet=True, msg=msg)
    return msg


def _say(msg: str) -> None:
    """One line on stderr that never raises: safe in a signal handler and after a closed terminal (SIGHUP)."""
    try:
        os.write(2, (msg + "\n").encode())
    except OSError:
        pass


def _install_signal_handlers(stop: dict) -> dict:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) finish the current step, write final/, and say how to resume.

    They stay caught until final/ is in place, so no signal ever interrupts a checkpoint write. A second Ctrl-C
    during a step abandons that step (its half-updated state is never saved); during a write it waits for it."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if stop.get("signum") is None:
            stop["signum"], stop["why"] = signum, stop["why"] or f"{name} received"
            _say(f"\n{name}: stopping after this step and writing final/ (Ctrl-C again abandons the step)")
        elif signum == signal.SIGINT and stop.get("in_step"):
            raise KeyboardInterrupt
        else:
            _say(f"\n{name}: already stopping; a checkpoint being written is completed first")

    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}


def _restore_signal_handlers(old: dict) -> None:
    for sig, h in old.items():
        signal.signal(sig, h)


def _out(*lines: str) -> None:
    """Print to stdout; a reader that went away (`| head -1`) is not an error: the run's own status stands."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        silence(sys.stdout)


def run_cli(start: Callable[[], Any], summary: Callable[[Any], list[str]], prog: str = PROG) -> int:
    """The frame of a training CLI (rlhf_nb.train, rlhf_nb.dpo): `start()` parses the flags and runs, `summary(res)`
    gives the lines after "run folder: ...". Every way a run ends is one line and an exit status: 0 done, 2 bad input,
    74 a write failed, 75 --max_minutes, 128 + N signal N."""
    res = None
    try:
        try:
            res = start()
        except RunWriteError as e:
            _say(f"error: {e}")
            return EXIT_WRITE_FAILED
        except (ConfigError, ValueError, OSError) as e:  # CheckpointError is a ValueError
            _say(f"error: {e}")
            return EXIT_BAD_INPUT
        lines = [f"run folder: {res.run_dir}", *summary(res)]
        if res.stopped_early:
            lines.append(f"stopped early ({res.stopped_early}); resume with: {prog} --resume {res.last_checkpoint}")
        elif res.stop_signal:
            lines.append(f"{signal.Signals(res.stop_signal).name} arrived as the run finished; final/ is complete")
        _out(*lines)
        return res.exit_code
    except RunAborted as e:
        _say(str(e))
        return 128 + signal.SIGINT
    except KeyboardInterrupt:  # before train() caught signals (loading the model), or after it let go of them
        if res is None:
            _say("interrupted during start-up: nothing was trained or written")
        return res.exit_code if res is not None and res.exit_code else 128 + signal.SIGINT


def main(argv: list[str] | None = None) -> int:
    """The CLI. Exit status: 0 done, 2 bad input, 74 a write failed, 75 --max_minutes, 128 + N signal N (--help)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the import-time guard's job is done

    def start():
        cfg = config_from_args(argv)  # a bad flag or --resume checkpoint: one line, exit 2
        check_output_writable(cfg.out)
        return train(cfg, state=setup(cfg))

    def summary(res):
        last = res.history[-1] if res.history else {}
        return [f"step {last['step']}: objective/scores {last['objective/scores']:.4f}  "
                f"objective/kl {last['objective/kl']:.4f}"] if last else []

    return run_cli(start, summary)


if __name__ == "__main__":
    sys.exit(main())
