"""The trainer's command line: flags → a validated RunConfig, `--resume` included.

config.py holds the fields, their ranges and the parser; checkpoints.py the checkpoint format; this module joins the
two, so that neither imports the other's way (the resume check needs both).
"""
from __future__ import annotations

import sys
from typing import Any

from .checkpoints import CheckpointError, read_trainer_state
from .config import RESUME_OVERRIDABLE, ConfigError, RunConfig, build_parser


def config_from_args(argv: list[str] | None = None) -> RunConfig:
    """The CLI's one way from flags to a validated RunConfig; a bad value exits with one line naming the flag.

    With --resume, the checkpoint's config is taken and only the flags in RESUME_OVERRIDABLE may change; the
    flags given are read from the parser (not from argv text), so `--resu`/`--epoch` spellings cannot slip by."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    ns = p.parse_args(argv)
    try:
        if ns.resume is None:
            return RunConfig(**vars(ns))
        return _resume_config(vars(build_parser(only_given=True).parse_args(argv)))
    except ConfigError as e:
        p.exit(2, f"error: {e}\n")


def _resume_config(given: dict[str, Any]) -> RunConfig:
    try:
        state = read_trainer_state(given["resume"])
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    saved = state["config"]
    for k, v in sorted(given.items()):
        if k not in RESUME_OVERRIDABLE and v != saved[k]:
            raise ConfigError(f"--{k} cannot change on --resume (checkpoint has {saved[k]!r}); "
                              f"only {', '.join('--' + x for x in RESUME_OVERRIDABLE)} may")
    cfg = RunConfig.from_dict({**saved, **{k: v for k, v in given.items() if k in RESUME_OVERRIDABLE}})
    if cfg.total_steps <= state["step"]:
        raise ConfigError(f"--epochs: the checkpoint is at step {state['step']} and --epochs {cfg.epochs} x "
                          f"--steps_per_epoch {cfg.steps_per_epoch} = {cfg.total_steps} steps; nothing is left to "
                          f"train (pass a larger --epochs to continue)")
    return cfg
