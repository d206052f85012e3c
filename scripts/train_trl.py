"""Train with TRL's GRPOTrainer / RLOOTrainer from rlhf_nb's flags (the RunConfig CLI plus --algo).

    python scripts/train_trl.py --algo grpo --num_generations 4 --max_new_tokens 8 --steps_per_epoch 10
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/train_trl.py --algo grpo --model gpt2

Needs the TRL extra: pip install -e .[trl]. It keeps the trainer's contract (python -m rlhf_nb.train):
- a fresh run folder under --out (--run_name, never an existing one) with config.json, logs/trl_log.jsonl (TRL's
  logged rows) and final/ (the trained policy, loadable with --model); TRL's own files go to trl/ inside it, or to
  --output_dir if given;
- a mistake in the flags is one line on stderr and exit status 2, before any folder is made or model loads: a knob TRL
  has no counterpart for (GAE and the value head, adaptive KL: see rlhf_nb.bridges.trl.UNMAPPED and
  docs/trl_bridge.md), --advantage gae (TRL 1.16 has no PPO trainer), --device cuda with no GPU, an --out that is a
  file, an unreadable --model, a policy folder as --reward_model;
- Ctrl-C, SIGTERM or SIGHUP stop it with one line and exit 130, 143 or 129 (TRL saves no checkpoint on the way:
  nothing of an interrupted run is kept but its logs).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

if __name__ == "__main__":
    from rlhf_nb.startup import catch_ctrl_c_while_importing

    catch_ctrl_c_while_importing()

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402

from rlhf_nb.config import ConfigError, RunConfig, build_parser, check_output_writable  # noqa: E402

PROG = "scripts/train_trl.py"
TRL_LACKS = ("gamma", "lam", "vf_coef", "clip_range_value", "whiten_rewards", "kl_estimator", "adaptive_kl", "target_kl",
             "kl_horizon", "save_every", "resume")


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived while TRL trained."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def parser(only_given: bool = False) -> argparse.ArgumentParser:
    p = build_parser(prog=PROG, only_given=only_given, description="Train with TRL's GRPOTrainer or RLOOTrainer from "
                     "rlhf_nb's flags.")
    hide = argparse.SUPPRESS if only_given else None
    p.add_argument("--algo", choices=("grpo", "rloo"), default=hide or "grpo",
                   help="TRL trainer: GRPOTrainer or RLOOTrainer (--advantage follows it)")
    p.add_argument("--output_dir", default=hide, help="TRL's own output folder (default: trl/ inside the run folder)")
    return p


def config_from_args(argv: list[str] | None) -> tuple[RunConfig, str, str | None]:
    """(RunConfig, algo, output_dir) from the flags; any mistake exits with one line, status 2, before any work."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    ns = vars(p.parse_args(argv))
    given = vars(parser(only_given=True).parse_args(argv))
    algo, output_dir = ns.pop("algo"), ns.pop("output_dir")
    try:
        if "advantage" in given and given["advantage"] != algo:
            if given["advantage"] == "gae":
                raise ConfigError("--advantage gae: TRL 1.16 has no PPO trainer (value head + GAE); train PPO with "
                                  "python -m rlhf_nb.train, or pick --algo grpo or rloo here")
            raise ConfigError(f"--advantage {given['advantage']} differs from --algo {algo}; --advantage follows "
                              f"--algo here, so pass only --algo")
        ns["advantage"] = algo
        if "num_generations" not in given:
            ns["num_generations"] = 4  # RunConfig's default (1) is PPO's; a group baseline needs a group
        cfg = RunConfig(**ns)
        defaults = RunConfig(advantage=algo, num_generations=cfg.num_generations)
        changed = [k for k in TRL_LACKS if getattr(cfg, k) != getattr(defaults, k)]
        if changed:
            raise ConfigError(f"TRL's {algo} has no counterpart for {', '.join('--' + k for k in changed)} "
                              f"(see docs/trl_bridge.md)")
        from rlhf_nb.bridges.trl import check_model, trl_config_kwargs
        from rlhf_nb.policy import check_fits_context, resolve_model_path
        from rlhf_nb.rewards import reward_model_dir

        trl_config_kwargs(cfg, algo, "")  # the knobs TRL's trainer lacks, --device cuda without a GPU
        check_output_writable(cfg.out)
        if output_dir is not None:
            check_output_writable(output_dir, "--output_dir")
        path = resolve_model_path(cfg.model)
        if path is not None and Path(path).is_dir():
            check_model(path)  # a truncated or empty model.safetensors, before any folder is made
        check_fits_context(cfg.model, cfg.max_new_tokens)
        reward_model_dir(cfg.reward_model)  # a policy folder as --reward_model is refused here
    except (ConfigError, ValueError, OSError) as e:
        p.exit(2, f"error: {e}\n")
    return cfg, algo, output_dir


def main(argv: list[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the import-time guard's job is done
    cfg, algo, output_dir = config_from_args(argv)

    from rlhf_nb.bridges.trl import StepTimer, make_trl_trainer
    from rlhf_nb.runlog import new_run_dir

    run_dir = new_run_dir(cfg.out, cfg.run_name)
    timer = StepTimer.make()
    try:  # the bridge checks model files and the output folder first: a user's mistake is one line
        trainer = make_trl_trainer(cfg, algo=algo, output_dir=output_dir or str(run_dir / "trl"), callbacks=[timer])
    except (ValueError, OSError, ImportError) as e:
        run_dir.rmdir() if not any(run_dir.iterdir()) else None
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        run_dir.rmdir() if not any(run_dir.iterdir()) else None
        print("interrupted during start-up: nothing was trained or written", file=sys.stderr)
        return 128 + signal.SIGINT
    (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "algo": algo}, indent=2, sort_keys=True))

    def stop(signum, frame):
        raise Stopped(signum)

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if sig}
    code, why = 0, None
    try:
        trainer.train()
    except KeyboardInterrupt:
        code, why = 128 + signal.SIGINT, "SIGINT"
    except Stopped as e:
        code, why = 128 + e.signum, str(e)
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "trl_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in timer.logs))
    if why:
        print(f"{why}: stopped at optimizer step {trainer.state.global_step}; TRL keeps no checkpoint of an "
              f"interrupted run. Its logs are in {logs}", file=sys.stderr)
        return code
    if trainer.accelerator.is_main_process:
        if not cfg.progress:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        trainer.save_model(str(run_dir / "final"))
        (run_dir / "final" / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.json holds the settings
        rewards = [log["reward"] for log in timer.logs if "reward" in log]
        summary = {"algo": algo, "run_dir": str(run_dir), "optimizer_steps": trainer.state.global_step,
                   "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
