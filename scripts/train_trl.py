"""Train with TRL's GRPOTrainer / RLOOTrainer from rlhf_nb's flags (the RunConfig CLI plus --algo).

    python scripts/train_trl.py --algo grpo --num_generations 4 --max_new_tokens 8 --steps_per_epoch 10
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/train_trl.py --algo grpo --model gpt2

Needs the TRL extra: pip install -e .[trl]. Flags TRL has no counterpart for (GAE, value head, adaptive KL) are
rejected when changed from their defaults; see rlhf_nb.bridges.trl.UNMAPPED and docs/trl_bridge.md. A mistake in
the flags (a knob TRL lacks, --device cuda with no GPU, an --output_dir that is a file, an unreadable --model) is
one line on stderr and exit status 2, before any model loads.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rlhf_nb.config import ConfigError, RunConfig, build_parser  # noqa: E402
from rlhf_nb.policy import pick_device  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(prog="scripts/train_trl.py")
    parser.add_argument("--algo", choices=("grpo", "rloo"), default="grpo", help="TRL trainer: GRPOTrainer or RLOOTrainer")
    parser.add_argument("--output_dir", default=None, help="TRL's output folder (default: --out/--run_name, else a temp folder)")
    ns = vars(parser.parse_args(argv))
    algo, output_dir = ns.pop("algo"), ns.pop("output_dir")
    ns["advantage"] = algo  # the RunConfig's group baseline follows --algo
    if ns["num_generations"] < 2:
        ns["num_generations"] = 4  # RunConfig's default (1) is for PPO; a group baseline needs a group
        print("note: --num_generations set to 4 (GRPO/RLOO need >= 2)", file=sys.stderr)
    try:
        cfg = RunConfig(**ns)
        pick_device(cfg.device)  # --device cuda on a machine without one is refused, as by python -m rlhf_nb.train
    except (ConfigError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    defaults = RunConfig(advantage=algo, num_generations=cfg.num_generations)
    changed = [k for k in ("gamma", "lam", "vf_coef", "clip_range_value", "whiten_rewards", "kl_estimator",
                           "adaptive_kl", "target_kl", "kl_horizon", "save_every", "resume")
               if getattr(cfg, k) != getattr(defaults, k)]
    if changed:
        parser.exit(2, f"error: TRL's {algo} has no counterpart for {', '.join('--' + k for k in changed)} "
                       f"(see docs/trl_bridge.md)\n")

    from rlhf_nb.bridges.trl import StepTimer, make_trl_trainer

    timer = StepTimer.make()
    try:  # the bridge checks knobs, device, model files and output folder first: a user's mistake is one line
        trainer = make_trl_trainer(cfg, algo=algo, output_dir=output_dir, callbacks=[timer])
    except (ValueError, OSError, ImportError) as e:
        parser.exit(2, f"error: {e}\n")
    trainer.train()
    if trainer.accelerator.is_main_process:
        rewards = [log["reward"] for log in timer.logs if "reward" in log]
        out = Path(trainer.args.output_dir)
        kept = output_dir or cfg.run_name or (out.is_dir() and any(out.iterdir()))  # an empty temp one goes at exit
        summary = {"algo": algo, "output_dir": str(out) if kept else None, "optimizer_steps": trainer.state.global_step,
                   "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
