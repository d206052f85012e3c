"""How close a trained policy is to the best any optimiser can do, in the units lesson 06 uses.

A run maximises J(π) = E_π[r] − β·KL(π‖ρ). This command measures the run's policy on fresh samples of every training
prompt (score, KL summed over each completion, J) and estimates the KL-regularised optimum's J* from samples of the
base model (rlhf_nb.optimum), then prints J/J*: 1 is the optimum, about 0 the base model.

    python -m rlhf_nb.evaluate --run runs/run_20261205_101500       # the run's final/
    python -m rlhf_nb.evaluate --run runs/run_…/checkpoints/step_100
    make train_quick                                                # trains at the defaults, then runs this
"""
from __future__ import annotations

if __name__ == "__main__":  # `python -m rlhf_nb.evaluate`: a Ctrl-C while torch imports ends in one line too
    from .startup import catch_ctrl_c_while_importing

    catch_ctrl_c_while_importing()

import sys  # noqa: E402 (the guard above must run first)
from dataclasses import dataclass
from pathlib import Path

import torch  # noqa: E402

from .checkpoints import STATE_FILE, CheckpointError, load_checkpoint, read_trainer_state  # noqa: E402
from .cli import cli_from_dataclass  # noqa: E402
from .config import DEVICE_CHOICES, ConfigError, Options, RunConfig, option  # noqa: E402
from .optimum import measure_policy, objective, optimum_by_prompt, score_samples  # noqa: E402
from .train import setup  # noqa: E402


@dataclass
class EvaluateOptions(Options):
    """`python -m rlhf_nb.evaluate`: which policy, and how many samples measure it and the optimum."""

    run: str | None = option(None, "a run folder (its final/ is read) or a checkpoint folder (…/checkpoints/step_N)",
                             nullable=True)
    samples_per_prompt: int = option(32, "fresh samples of the policy per training prompt (32 prompts: 1024 samples)",
                                     1, 4096)
    base_samples_per_prompt: int = option(128, "base-model samples per prompt behind J* (fewer: J* biased lower)",
                                          1, 4096)
    beta: float | None = option(None, "β of J = score − β·KL (default: the run's --kl_coef)", 1e-6, 10.0,
                                nullable=True)
    seed: int = option(12345, "seed of the policy's samples (the base samples use seed 0, as lesson 06 and make bench)",
                       0, 2**32 - 1)
    device: str = option("auto", "where to sample: auto picks cuda when present", choices=DEVICE_CHOICES)


def checkpoint_folder(run: str) -> Path:
    """The checkpoint folder a --run names: the folder itself when it is one, else its final/."""
    path = Path(run)
    for folder in (path, path / "final"):
        if (folder / STATE_FILE).is_file():
            return folder
    why = "it does not exist" if not path.exists() else f"no {STATE_FILE} in it or in its final/"
    raise ConfigError(f"--run must be a run folder (runs/run_…, with final/) or a checkpoint folder "
                      f"(…/checkpoints/step_N), got {run!r}: {why}")


def check_options(o: EvaluateOptions) -> None:
    if not o.run:
        raise ConfigError("--run is required: a run folder (runs/run_…) or a checkpoint folder")


def evaluate(opts: EvaluateOptions, say=print) -> dict:
    """Measure the policy of opts.run and the optimum at its β; print a small table; return the numbers."""
    folder = checkpoint_folder(opts.run)
    try:
        state_json = read_trainer_state(folder)
    except CheckpointError as e:
        if str(e).startswith("--resume"):  # another trainer's checkpoint (DPO's): no reward, no β of its own
            raise ConfigError(f"--run {opts.run!r} is not a run of rlhf_nb.train (PPO, GRPO, RLOO): J/J* needs the "
                              f"run's reward and β") from None
        raise ConfigError(f"--run: {e}") from None
    cfg = RunConfig.from_dict(state_json["config"]).replace(progress=False, device=opts.device)
    beta = opts.beta if opts.beta is not None else cfg.kl_coef
    if beta <= 0:
        raise ConfigError(f"--beta: the run trained at --kl_coef {cfg.kl_coef:g}, and J/J* needs β > 0 (at β = 0 the "
                          f"optimum is the best sample of the base model); pass --beta, e.g. --beta 0.05")
    state = setup(cfg)
    load_checkpoint(folder, state.policy, None, {}, state.device)
    policy = measure_policy(state, opts.samples_per_prompt, opts.seed)
    generator = torch.Generator(device=state.device).manual_seed(0)
    base_prompts = [p for p in state.prompts for _ in range(opts.base_samples_per_prompt)]
    base = score_samples(state.ref, state.tokenizer, state.reward_fn, base_prompts, cfg.max_new_tokens, generator,
                         temperature=cfg.temperature)
    opt = optimum_by_prompt(base, base_prompts, beta)
    j = objective(policy["score"], policy["kl"], beta)
    out = {"checkpoint": str(folder), "step": state_json["step"], "beta": beta, "score": policy["score"],
           "kl": policy["kl"], "J": j, "n": policy["n"], "optimum": opt, "J_ratio": j / opt["J_star"]}
    scored_by = f"reward {cfg.reward}" if cfg.task == "reviews" else f"task {cfg.task} (its checker)"
    say(f"{folder} (step {out['step']}), β = {beta:g}, {scored_by}, {cfg.max_new_tokens} new tokens")
    rows = [("", "score", "KL (nats)", "J = score − β·KL"),
            (f"policy ({policy['n']} fresh samples)", f"{policy['score']:.3f}", f"{policy['kl']:.2f}", f"{j:.3f}"),
            (f"optimum π* ({len(base_prompts)} base samples)", f"{opt['score']:.3f}", f"{opt['kl']:.2f}",
             f"{opt['J_star']:.3f}")]
    for name, *cells in rows:
        say(f"{name:36s} {cells[0]:>7s} {cells[1]:>10s} {cells[2]:>17s}")
    say(f"J/J* = {out['J_ratio']:.2f}   (1 is the optimum, about 0 the base model; J* is estimated from a finite "
        f"sample, which misses its rare best completions, so J/J* reads a little high)")
    return out


def main(argv=None) -> int:
    opts = cli_from_dataclass(EvaluateOptions, argv, prog="python -m rlhf_nb.evaluate",
                              description=__doc__.split("\n\n")[0], check=check_options)
    try:
        evaluate(opts)
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
