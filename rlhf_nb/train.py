"""The RLHF loop: rollout -> score -> KL -> advantages -> PPO epochs (-> adapt β), one `ppo_step` at a time.

    python -m rlhf_nb.train --seed 0 --reward sentiment --kl_coef 0.05 --batch_size 64

`setup` builds the state, `ppo_step` takes one step and `step_metrics` names what it measured; rlhf_nb.run does the
rest of a run (folder, logs, checkpoints, resume, signals, exit statuses), as it does for every trainer.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

if __name__ == "__main__":  # `python -m rlhf_nb.train`: a Ctrl-C while torch imports (seconds) ends in one line too
    from .startup import catch_ctrl_c_while_importing

    catch_ctrl_c_while_importing()

import torch  # noqa: E402 (the guard above must run first)

from . import run  # noqa: E402
from .advantages import (compute_gae, group_advantages, per_token_rewards, tied_groups, whiten_advantages,  # noqa: E402
                         whiten_rewards)
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from .config import ConfigError, RunConfig  # noqa: E402
from .corpus import PROMPTS  # noqa: E402
from .diagnostics import Diagnostics  # noqa: E402
from .gold import get_gold  # noqa: E402
from .kl import AdaptiveKLController, FixedKLController, kl_estimate, kl_k1  # noqa: E402
from .masking import masked_mean  # noqa: E402
from .policy import (PolicyWithValue, Rollout, check_fits_context, forward_tokens, load_policy,  # noqa: E402
                     make_reference, pick_device, sample)
from .ppo import PPOBatch, explained_variance, kl_penalty_loss, ppo_update, rollout_forward  # noqa: E402
from .runlog import StageTimer  # noqa: E402
from .schedule import lr_factor, set_learning_rate  # noqa: E402
from .seeding import seed_everything  # noqa: E402
from .tasks import task_parts  # noqa: E402


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
    # the parts a lesson swaps (10's faults for broken ones, 05's probe for a recording one); by default the real ones
    sampler: Callable[..., Rollout] = sample
    forward: Callable = forward_tokens
    kl_loss: Callable = kl_penalty_loss
    ppo_update: Callable[..., dict[str, float]] = ppo_update

    @property
    def total_steps(self) -> int:
        return self.cfg.total_steps


def setup(cfg: RunConfig) -> TrainState:
    """Validate, seed, load policy + frozen reference + reward, build the optimizer. Fails before any training."""
    cfg.validate()
    device = pick_device(cfg.device)
    model, prompts, reward_fn = task_parts(cfg)  # --task: the model, prompts and reward (rlhf_nb.tasks)
    check_fits_context(model, cfg.max_new_tokens)
    gold_fn = get_gold(cfg.gold, cfg.reward)
    seed_everything(cfg.seed, threads=cfg.threads)
    lm, tokenizer = load_policy(model, device)
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
    return TrainState(cfg, policy, ref, tokenizer, optimizer, reward_fn, kl_ctl, gens, device, prompts, gold_fn=gold_fn)


def next_prompts(state: TrainState) -> list[str]:
    """batch_size prompts drawn from the prompt set, each repeated num_generations times (contiguous groups)."""
    idx = torch.randint(len(state.prompts), (state.cfg.batch_size,), generator=state.generators["prompts"])
    return [state.prompts[i] for i in idx.tolist() for _ in range(state.cfg.num_generations)]


def ppo_step(state: TrainState) -> tuple[dict[str, float], dict[str, Any]]:
    """One RLHF step. Returns (metrics, samples) — metrics use the names of docs/metrics.md."""
    cfg, timer = state.cfg, StageTimer()

    # 1. rollout: sample completions from the current policy
    ro = state.sampler(state.policy, state.tokenizer, next_prompts(state), cfg.max_new_tokens, cfg.temperature,
                       cfg.top_k, cfg.top_p, generator=state.generators["sample"])
    ids, attn, P = ro.query_responses, ro.attention_mask, ro.context_length
    mask = ro.completion_mask.float()  # (B, T)
    timer.lap("rollout")

    # 2. score each prompt + completion with the sequence-level reward
    scores = state.reward_fn(ro.prompts, ro.completions).to(state.device).float()  # (B,)
    if cfg.missing_eos_penalty is not None:
        scores = scores - cfg.missing_eos_penalty * (~ro.ended_with_eos).float()
    gold = state.gold_fn(ro.prompts, ro.completions) if state.gold_fn else None  # (B,) logged, never optimised
    timer.lap("score")

    # 3. log-probs under the policy (old, frozen for this step) and the reference; values
    # graph: the policy's forward pass, kept for the update when it is the only one (see rollout_forward)
    logp_old, entropy, values, graph = rollout_forward(state.policy, ids, attn, P, cfg, state.forward)
    with torch.no_grad():
        ref_logp, _, _ = state.forward(state.ref, ids, attn, P, cfg.temperature, entropy=False)
    logp_old, ref_logp, values = logp_old * mask, ref_logp * mask, values * mask

    # 4. KL penalty per token: r_t = -beta * kl_t (+ score at the last real token); or, TRL-GRPO style, beta * k3 in the loss
    beta = state.kl_ctl.value
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
        scale = cfg.scale_rewards if cfg.advantage == "grpo" else True
        seq_adv = group_advantages(seq_reward, cfg.num_generations, cfg.advantage, scale)  # (B,)
        advantages = seq_adv[:, None] * mask
        returns = None
        tied = tied_groups(scores, cfg.num_generations)  # (B,) groups whose scores all tie
    # DAPO's dynamic sampling, as a filter: tied groups leave the loss (and its denominator), not the logged metrics
    loss_mask = mask * ~tied[:, None] if cfg.dynamic_sampling else mask
    timer.lap("forward")

    # 6. PPO epochs over shuffled minibatches
    set_learning_rate(state.optimizer, lr_factor(state.step, cfg))  # this step's rate (--lr_warmup_steps, --lr_decay)
    batch = PPOBatch(ids, attn, P, loss_mask, logp_old, advantages, values_old=values if returns is not None else None,
                     returns=returns, ref_logp=ref_logp)
    upd = state.ppo_update(state.policy, state.optimizer, batch, cfg, state.generators["minibatch"], graph,
                           kl_coef_loss=beta if cfg.kl_in_loss else 0.0, forward=state.forward, kl_loss=state.kl_loss)
    timer.lap("update")

    # 7. adapt beta toward the target KL (a no-op for the fixed controller)
    seq_kl = (kl_k1(logp_old, ref_logp) * mask).sum(1)  # (B,)
    state.kl_ctl.update(float(seq_kl.mean()), cfg.batch_size * cfg.num_generations)
    state.step += 1
    timer.lap("adapt")

    metrics = step_metrics(StepStats(ro, batch, scores, seq_kl, rewards, non_score_reward, entropy, beta, upd, timer))
    if cfg.advantage != "gae":
        metrics["rollout/zero_std_frac"] = float(tied.float().mean())
        # Dr. GRPO's length bias is about the sign of the advantage: the mean length of each side (nan: none that side)
        lens = mask.sum(1)
        for side, sel in (("pos", seq_adv > 0), ("neg", seq_adv < 0)):
            metrics[f"rollout/completion_len_{side}_adv"] = float(lens[sel].mean()) if sel.any() else float("nan")
    if gold is not None:
        metrics["objective/gold_scores"] = float(gold.mean())
    k = min(cfg.log_samples, len(ro.prompts))
    samples = {"prompts": ro.prompts[:k], "completions": ro.completions[:k], "scores": scores[:k].tolist()}
    return metrics, samples


@dataclass
class StepStats:
    """What one step measured, by name: the inputs of `step_metrics`."""

    rollout: Rollout
    batch: PPOBatch  # its mask, and values_old/returns (None without a value head)
    scores: torch.Tensor  # (B,) sequence scores
    seq_kl: torch.Tensor  # (B,) Σ_t k1 per completion
    rewards: torch.Tensor  # (B, T) per-token rewards
    non_score_reward: torch.Tensor  # (B, T) the KL part of them
    entropy: torch.Tensor  # (B, T)
    beta: float
    update: dict[str, float]  # what ppo_update returned
    timer: StageTimer  # laps rollout, score, forward, update


def step_metrics(st: StepStats) -> dict[str, float]:
    """The step's statistics under the names of docs/metrics.md."""
    mask, values, returns, laps = st.rollout.completion_mask.float(), st.batch.values_old, st.batch.returns, st.timer.laps
    n_tokens = float(mask.sum())
    return {
        "objective/scores": float(st.scores.mean()),
        "objective/scores_std": float(st.scores.std()) if st.scores.numel() > 1 else 0.0,
        "objective/kl": float(st.seq_kl.mean()),
        "objective/non_score_reward": float(st.non_score_reward.sum(1).mean()),
        "objective/rlhf_reward": float(st.rewards.sum(1).mean()),
        "objective/kl_coef": st.beta,
        "policy/entropy": float(masked_mean(st.entropy, mask)),
        **st.update,
        "value/mean": float(masked_mean(values, mask)) if returns is not None else 0.0,
        "value/explained_variance": explained_variance(values, returns, mask) if returns is not None else float("nan"),
        "rollout/completion_len": n_tokens / mask.size(0),
        "rollout/eos_frac": float(st.rollout.ended_with_eos.float().mean()),
        "time/rollout_tokens_per_s": n_tokens / max(laps["rollout"], 1e-9),
        **{f"time/{stage}_s": laps.get(stage, 0.0) for stage in ("rollout", "score", "forward", "update")},
        "time/step_s": st.timer.total,
    }


def save(s: TrainState, path: Path) -> Path:
    """A checkpoint of everything in s: weights, optimizer, RNG streams, β and the step (rlhf_nb.checkpoints)."""
    state = {"step": s.step, "kl_ctl": s.kl_ctl.state_dict(), "config": s.cfg.to_dict()}
    return save_checkpoint(path, s.policy, s.tokenizer, s.optimizer, s.generators, state)


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


PPO = run.Trainer(prog="python -m rlhf_nb.train", config=RunConfig, setup=setup, step=ppo_step, save=save,
                  resume=resume, description="Train a policy with RLHF (PPO/GRPO/RLOO) on a laptop CPU.",
                  shown=(("reward", "objective/scores"), ("kl", "objective/kl")), diagnostics=Diagnostics)


def train(cfg: RunConfig, callback: Callable[[int, dict, dict], None] | None = None, write_run: bool = True,
          state: TrainState | None = None, run_dir: str | Path | None = None) -> run.RunResult:
    """Run cfg.total_steps RLHF steps (or until --max_minutes or a signal) with rlhf_nb.run; callback(step, metrics,
    samples) after each. write_run=False writes nothing (a notebook's run); run_dir: a given empty folder."""
    return run.run(PPO, cfg, callback, write_run, state, run_dir)


def main(argv: list[str] | None = None) -> int:
    """The CLI. Exit status: 0 done, 2 bad input, 74 a write failed, 75 --max_minutes, 128 + N signal N (--help)."""
    return run.main(PPO, argv)


if __name__ == "__main__":
    sys.exit(main())
