"""Command lines from config dataclasses: every `python -m rlhf_nb…` command parses its flags here.

config.py holds the fields, their ranges and the parser; checkpoints.py the checkpoint format; this module joins the
two, so that neither imports the other (a trainer's `--resume` check needs both).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence, TypeVar

from .checkpoints import CheckpointError, read_trainer_state
from .config import ConfigError, RunConfig, RunOptions, build_parser

C = TypeVar("C")


def cli_from_dataclass(cls: type[C], argv: Sequence[str] | None = None, prog: str = "python -m rlhf_nb.train",
                       description: str | None = None, epilog: str | None = None,
                       check: Callable[[C], None] | None = None) -> C:
    """Flags -> a validated `cls` (an `Options` dataclass: RunConfig, DPOConfig, each tool's config): one flag per
    field, spelled --field_name. A bad flag or value exits with one line naming the flag, status 2; nothing has run.

    check(cfg) adds the tool's own checks that need more than the fields (a file must exist, an output must be
    writable); it raises ConfigError. A trainer's config (a RunOptions) with --resume takes the checkpoint's config
    and lets only cls.RESUME_OVERRIDABLE change; the flags given are read from the parser, not from argv text, so
    `--resu`/`--epoch` spellings cannot slip by."""
    argv = list(sys.argv[1:] if argv is None else argv)
    kw = {"prog": prog, "cls": cls, "epilog": epilog, **({"description": description} if description else {})}
    p = build_parser(**kw)
    ns = vars(p.parse_args(argv))
    try:
        if issubclass(cls, RunOptions) and ns.get("resume") is not None:
            cfg = resume_config(cls, vars(build_parser(only_given=True, **kw).parse_args(argv)))
        else:
            cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()})
        if check is not None:
            check(cfg)
        return cfg
    except ConfigError as e:
        p.exit(2, f"error: {e}\n")


def config_from_args(argv: Sequence[str] | None = None) -> RunConfig:
    """The PPO trainer's command line (`python -m rlhf_nb.train`) -> a validated RunConfig."""
    return cli_from_dataclass(RunConfig, argv)


def resume_config(cls: type[C], given: dict[str, Any]) -> C:
    """The checkpoint's config with the flags in `given` that may change on --resume (cls.RESUME_OVERRIDABLE)."""
    try:
        state = read_trainer_state(given["resume"], cls, cls.CHECKPOINT_OBJECTS)
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    saved = state["config"]
    for k, v in sorted(given.items()):
        if k not in cls.RESUME_OVERRIDABLE and v != saved[k]:
            raise ConfigError(f"--{k} cannot change on --resume (checkpoint has {saved[k]!r}); "
                              f"only {', '.join('--' + x for x in cls.RESUME_OVERRIDABLE)} may")
    cfg = cls.from_dict({**saved, **{k: v for k, v in given.items() if k in cls.RESUME_OVERRIDABLE}})
    cfg.check_resume_step(state["step"])
    return cfg


__all__ = ["cli_from_dataclass", "config_from_args", "resume_config"]
