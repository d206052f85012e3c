"""The RLHF loop: rollout -> score -> KL -> advantages -> PPO epochs -> log -> checkpoint. Also the CLI:

    python -m rlhf_nb.train --seed 0 --reward sentiment --kl_coef 0.05 --batch_size 32
"""
from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .advantages import compute_gae, group_advantages, per_token_rewards, whiten_advantages, whiten_rewards
from .checkpoints import load_checkpoint, save_checkpoint
from .config import ConfigError, RunConfig, build_parser
from .corpus import PROMPTS
from .kl import AdaptiveKLController, FixedKLController, kl_estimate, kl_k1
from .masking import masked_mean
from .policy import PolicyWithValue, forward_tokens, load_policy, make_reference, model_context_length, pick_device, sample
from .ppo import PPOBatch, explained_variance, ppo_update
from .rewards import get_reward
from .runlog import RunLogger, new_run_dir
from .seeding import seed_everything

# flags that may change when resuming (how long and where to run); everything else must match the checkpoint
RESUME_OVERRIDABLE = ("epochs", "steps_per_epoch", "max_minutes", "out", "run_name", "save_every", "progress",
                      "device", "log_samples", "resume", "threads")


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


def check_config_against_model(cfg: RunConfig) -> None:
    """Checks that need the model's config (cheap, no weights): the completion must fit the context."""
    ctx = model_context_length(cfg.model)
    longest_prompt = 16  # the kit's prompts are a few words; hub tokenizers may split them into more pieces
    if cfg.max_new_tokens > ctx - longest_prompt:
        raise ConfigError(f"--max_new_tokens must be in [1, {ctx - longest_prompt}] for model {cfg.model!r} "
                          f"(context {ctx} tokens minus room for the prompt), got {cfg.max_new_tokens}")


def setup(cfg: RunConfig) -> TrainState:
    """Validate, seed, load policy + frozen reference + reward, build the optimizer. Fails before any training."""
    cfg.validate()
    device = pick_device(cfg.device)
    check_config_against_model(cfg)
    reward_fn = get_reward(cfg.reward)
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
    return TrainState(cfg, policy, ref, tokenizer, optimizer, reward_fn, kl_ctl, gens, device)


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
    clock.append(time.perf_counter())

    # 3. log-probs under the policy (old, frozen for this step) and the reference; values
    single_pass = cfg.ppo_epochs == 1 and cfg.num_minibatches == 1
    if single_pass:  # one gradient step on fresh samples: the update's own forward gives the old log-probs (ratio = 1)
        first_forward = forward_tokens(s.policy, ids, attn, P, cfg.temperature)
        logp_old, entropy, values = (t.detach() for t in first_forward)
    else:
        first_forward = None
        with torch.no_grad():
            logp_old, entropy, values = forward_tokens(s.policy, ids, attn, P, cfg.temperature)
    with torch.no_grad():
        ref_logp, _, _ = forward_tokens(s.ref, ids, attn, P, cfg.temperature)
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
    k = min(cfg.log_samples, len(ro.prompts))
    samples = {"prompts": ro.prompts[:k], "completions": ro.completions[:k], "scores": scores[:k].tolist()}
    return metrics, samples


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
    stopped_early: str | None = None


def _trainer_state(s: TrainState) -> dict[str, Any]:
    return {"step": s.step, "kl_ctl": s.kl_ctl.state_dict(), "config": s.cfg.to_dict()}


def _checkpoint(s: TrainState, path: Path) -> Path:
    return save_checkpoint(path, s.policy, s.tokenizer, s.optimizer, s.generators, _trainer_state(s))


def train(cfg: RunConfig, callback: Callable[[int, dict, dict], None] | None = None, write_run: bool = True,
          state: TrainState | None = None, run_dir: str | Path | None = None) -> TrainResult:
    """Run cfg.total_steps RLHF steps (or until --max_minutes).

    With write_run, writes the standard run folder: a fresh one under cfg.out, or `run_dir` if given
    (an existing folder made by new_run_dir, e.g. by `make smoke` for its notebook)."""
    s = state or setup(cfg)
    start_step = 0
    if cfg.resume:
        saved = load_checkpoint(cfg.resume, s.policy, s.optimizer, s.generators, s.device)
        s.step = start_step = saved["step"]
        s.kl_ctl.load_state_dict(saved["kl_ctl"])
    logger = None
    if not write_run:
        run_dir = None
    elif run_dir is not None:
        run_dir = Path(run_dir)
        if (run_dir / "logs").exists():
            raise FileExistsError(f"run_dir {run_dir} already holds a run; pass a fresh folder (never overwritten)")
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = new_run_dir(cfg.out, cfg.run_name)
    if write_run:
        (run_dir / "config.json").write_text(cfg.to_json())
        logger = RunLogger(run_dir)
        logger.info(f"run {run_dir} config {json.dumps(cfg.to_dict(), sort_keys=True)}")
        if cfg.resume:
            logger.info(f"resumed from {cfg.resume} at step {start_step}")
    stop = {"why": None}
    handlers = _install_signal_handlers(stop) if write_run else {}
    history: list[dict[str, float]] = []
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.total_steps, initial=start_step, desc="rlhf", unit="step", dynamic_ncols=True)
    t_start = time.perf_counter()
    try:
        while s.step < cfg.total_steps:
            metrics, samples = ppo_step(s)
            metrics["time/elapsed_s"] = time.perf_counter() - t_start
            history.append({"step": s.step, **metrics})
            if logger:
                logger.metrics(s.step, metrics)
                logger.samples(s.step, samples["prompts"], samples["completions"], samples["scores"])
                logger.info(f"step {s.step} reward {metrics['objective/scores']:.4f} kl {metrics['objective/kl']:.4f}")
                if cfg.save_every and s.step % cfg.save_every == 0:
                    _checkpoint(s, run_dir / "checkpoints" / f"step_{s.step}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
            if callback is not None:
                callback(s.step, metrics, samples)
            if cfg.max_minutes is not None and time.perf_counter() - t_start > 60 * cfg.max_minutes:
                stop["why"] = f"--max_minutes {cfg.max_minutes} reached"
            if stop["why"]:
                break
    finally:
        if bar is not None:
            bar.close()
        _restore_signal_handlers(handlers)
    if logger:
        final = _checkpoint(s, run_dir / "final")
        if stop["why"]:
            logger.info(f"stopped at step {s.step}: {stop['why']}. Resume with: "
                        f"python -m rlhf_nb.train --resume {final}")
        logger.close()
    return TrainResult(history, run_dir, s, stop["why"])


def _install_signal_handlers(stop: dict) -> dict:
    """SIGINT/SIGTERM finish the current step, write final/, and say how to resume; a second SIGINT aborts."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        if stop["why"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop["why"] = f"{signal.Signals(signum).name} received"
        print(f"\n{signal.Signals(signum).name}: finishing this step and writing a checkpoint…", file=sys.stderr)

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, handler)
    return old


def _restore_signal_handlers(old: dict) -> None:
    for sig, h in old.items():
        signal.signal(sig, h)


def config_for_resume(argv: list[str]) -> RunConfig:
    """--resume takes the checkpoint's config; only the flags in RESUME_OVERRIDABLE may change."""
    parser = build_parser()
    given = {k: v for k, v in vars(parser.parse_args(argv)).items()
             if any(a == f"--{k}" or a.startswith(f"--{k}=") or a == f"--no_{k}" for a in argv)}
    ckpt = Path(given["resume"])
    state_file = ckpt / "trainer_state.json"
    if not state_file.is_file():
        raise ConfigError(f"--resume must be a checkpoint folder (…/checkpoints/step_N or …/final), got {str(ckpt)!r}")
    saved = json.loads(state_file.read_text())["config"]
    for k, v in given.items():
        if k not in RESUME_OVERRIDABLE and v != saved.get(k):
            raise ConfigError(f"--{k} cannot change on --resume (checkpoint has {saved.get(k)!r}); "
                              f"only {', '.join('--' + x for x in RESUME_OVERRIDABLE)} may")
    return RunConfig.from_dict({**saved, **{k: v for k, v in given.items() if k in RESUME_OVERRIDABLE}})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if any(a == "--resume" or a.startswith("--resume=") for a in argv):
            cfg = config_for_resume(argv)
        else:
            cfg = RunConfig(**vars(build_parser().parse_args(argv)))
        state = setup(cfg)
    except (ConfigError, ValueError, OSError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = train(cfg, state=state)
    last = res.history[-1] if res.history else {}
    print(f"run folder: {res.run_dir}")
    if last:
        print(f"step {last['step']}: objective/scores {last['objective/scores']:.4f}  objective/kl {last['objective/kl']:.4f}")
    if res.stopped_early:
        print(f"stopped early ({res.stopped_early}); resume with: python -m rlhf_nb.train --resume {res.run_dir / 'final'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
