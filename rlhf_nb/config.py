"""One run config: a dataclass that the CLI, the notebooks and papermill parameters all derive from."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

REWARD_CHOICES = ("sentiment", "phrase", "length", "composite", "learned")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
ADVANTAGE_CHOICES = ("gae", "grpo", "rloo")
KL_ESTIMATOR_CHOICES = ("k1", "k2", "k3")
LR_DECAY_CHOICES = ("constant", "linear", "cosine")
LOSS_TYPE_CHOICES = ("bnpo", "dapo", "grpo", "dr_grpo")  # TRL 1.16 GRPO's names (rlhf_nb.ppo.aggregate_loss)
SCALE_REWARDS_CHOICES = ("group", "batch", "none")  # TRL 1.16 GRPO's names (rlhf_nb.advantages.group_advantages)
RUN_NAME_MAX_BYTES = 200  # file systems allow 255 per name; leave room for the _N suffix of a taken name
GOLD_CHOICES = ("auto", "gold", "none")  # what --gold logs; rlhf_nb.gold.get_gold resolves auto
TASK_CHOICES = ("reviews", "arithmetic", "arithmetic_format")  # rlhf_nb.tasks: model, prompts and reward together


class ConfigError(ValueError):
    """A config value out of its allowed range; the message names the flag."""


def option(default: Any, help: str, lo: float | None = None, hi: float | None = None,
           choices: tuple[str, ...] | None = None, nullable: bool = False, hidden: bool = False,
           positional: bool = False) -> Any:
    """A config field with what its flag needs: help, allowed range [lo, hi] or choices, whether None is allowed.

    hidden: not shown in --help (a tool's internal flag); positional: given without a flag name (a list of names)."""
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi, "choices": choices, "nullable": nullable,
                                            "hidden": hidden, "positional": positional})


@dataclass
class Options:
    """The base of every config in the package (the trainers' and each tool's): fields made with `option()`, each
    checked against its type and range on construction (ConfigError naming the flag), turned into a command line by
    `rlhf_nb.cli.cli_from_dataclass`, and saved as JSON."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self):
        """Check every field against its range; raise ConfigError naming the flag. Subclasses add their own rules."""
        check_fields(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass
class RunOptions(Options):
    """The fields every trainer shares (rlhf_nb.run runs them all): seed, device, how long, where the run folder goes,
    checkpoints, resume. A trainer's config extends it with its own algorithm's fields."""

    # flags that may change on --resume (how long and where to run); everything else must match the checkpoint
    RESUME_OVERRIDABLE: ClassVar[tuple[str, ...]] = ("epochs", "max_minutes", "out", "run_name", "save_every",
                                                     "progress", "device", "resume", "threads")
    CHECKPOINT_OBJECTS: ClassVar[tuple[str, ...]] = ()  # the trainer's own entries in trainer_state.json

    # --- run ---
    seed: int = option(0, "one seed fixes prompts, sampling, minibatch order and initialisation", 0, 2**32 - 1)
    device: str = option("auto", "where to train: auto picks cuda when present", choices=DEVICE_CHOICES)
    threads: int = option(1, "CPU threads for torch (0: all cores); the same count reproduces the same numbers", 0, 256)
    epochs: int = option(1, "epochs: passes over the trainer's steps_per_epoch", 1, 10_000)
    max_minutes: float | None = option(None, "stop early (with a final checkpoint) after this many minutes of "
                                       "training, counted from the first step (set-up, such as DPO scoring its "
                                       "pairs, is not counted)", 0.01, 10_080, nullable=True)
    out: str = option("runs", "parent folder; each run gets a fresh runs/run_YYYYMMDD_HHMMSS/ (never overwritten)")
    run_name: str | None = option(None, "folder name under --out instead of run_YYYYMMDD_HHMMSS", nullable=True)
    resume: str | None = option(None, "checkpoint folder to resume from (…/checkpoints/step_N or …/final)",
                                nullable=True)
    save_every: int = option(0, "write checkpoints/step_N every this many steps (0: only final/)", 0, 1_000_000)
    progress: bool = option(True, "show a tqdm progress bar (off inside notebooks)")
    model: str = option("embedded", "policy: 'embedded' (the kit's tiny GPT-2), a local HF folder, or a hub id like gpt2")

    def validate(self):
        super().validate()
        if not self.out or "\0" in self.out:
            raise ConfigError(f"--out must be a folder path, got {self.out!r}")
        if self.run_name is not None:
            check_run_name(self.run_name)
        return self

    def check_resume_step(self, step: int) -> None:
        """Refuse a --resume that leaves nothing to train, when the config alone knows the run's length."""


@dataclass
class RunConfig(RunOptions):
    """Everything a training run needs; defaults suit the embedded tiny GPT-2 on a laptop CPU."""

    RESUME_OVERRIDABLE: ClassVar[tuple[str, ...]] = (*RunOptions.RESUME_OVERRIDABLE, "steps_per_epoch", "log_samples")
    CHECKPOINT_OBJECTS: ClassVar[tuple[str, ...]] = ("kl_ctl",)

    # --- run (the rest: RunOptions) ---
    epochs: int = option(1, "epochs; total PPO steps = epochs * steps_per_epoch", 1, 10_000)
    steps_per_epoch: int = option(200, "PPO steps (rollout + update) per epoch", 1, 100_000)
    log_samples: int = option(4, "prompt/completion/reward rows written to samples.jsonl per step", 0, 1024)

    # --- model and reward (--model: RunOptions) ---
    task: str = option("reviews", "what the run learns: reviews = the review model, prompts and --reward; arithmetic = "
                       "lesson 12's adding model, 'a+b=' prompts, reward 1 iff a program accepts the sum "
                       "(arithmetic_format: +0.1 for a well-formed wrong number) (rlhf_nb.tasks)", choices=TASK_CHOICES)
    reward: str = option("sentiment", "sequence score", choices=REWARD_CHOICES)
    reward_model: str | None = option(None, "--reward learned: a reward-model folder or a name under rlhf_nb/assets, e.g. "
                                      "proxy-rm-1000 (default: the committed reward-model)", nullable=True)
    gold: str = option("auto", "true objective logged as objective/gold_scores: gold = VADER on reviews the corpus "
                       "grammar accepts, else -1 (rlhf_nb.gold); auto = gold with --reward learned; none = off",
                       choices=GOLD_CHOICES)

    # --- rollout ---
    batch_size: int = option(64, "prompts per PPO step", 1, 4096)
    num_generations: int = option(1, "completions per prompt (grpo/rloo need >= 2)", 1, 256)
    max_new_tokens: int = option(12, "tokens sampled per completion (prompt + this must fit the model's context)", 1, 4096)
    temperature: float = option(1.0, "sampling temperature; log-probs use the same temperature", 0.01, 10.0)
    top_k: int = option(0, "sample from the k most likely tokens (0: off; training refuses it: log-probs are scored on the full distribution)", 0, 1_000_000)
    top_p: float = option(1.0, "nucleus sampling mass (1.0: off; training refuses < 1, as --top_k)", 0.01, 1.0)
    missing_eos_penalty: float | None = option(None, "subtract this from the score of completions with no EOS", 0.0, 100.0, nullable=True)

    # --- KL penalty ---
    kl_coef: float = option(0.05, "beta: weight of the per-token KL penalty in the reward", 0.0, 10.0)
    kl_estimator: str = option("k1", "per-token KL estimator in the reward", choices=KL_ESTIMATOR_CHOICES)
    kl_in_loss: bool = option(False, "grpo/rloo: add beta*k3 per token to the loss (TRL's GRPO) instead of beta*sum(k1) to the score")
    kl_loss_ratio: bool = option(True, "--kl_in_loss: multiply each token's k3 by the ratio pi/pi_old (TRL 1.16's "
                                 "use_bias_correction_kl); false: plain k3")
    adaptive_kl: bool = option(False, "adapt beta toward --target_kl (Ziegler et al. 2019)")
    target_kl: float = option(6.0, "target per-sequence KL (nats) for the adaptive controller", 0.001, 1000.0)
    kl_horizon: int = option(10_000, "horizon (episodes) of the adaptive controller", 1, 10_000_000)

    # --- advantages ---
    advantage: str = option("gae", "gae: value head + GAE (PPO); grpo/rloo: group baseline, no value head", choices=ADVANTAGE_CHOICES)
    gamma: float = option(1.0, "discount", 0.0, 1.0)
    lam: float = option(0.95, "GAE lambda", 0.0, 1.0)
    whiten_rewards: bool = option(False, "whiten per-token rewards before GAE")
    scale_rewards: str = option("group", "grpo: divide each advantage (r - group mean) by its group's reward std "
                                "(group), the whole batch's (batch), or not at all (none: Dr. GRPO)",
                                choices=SCALE_REWARDS_CHOICES)
    dynamic_sampling: bool = option(False, "grpo/rloo: drop the groups whose rewards all tie from the loss (DAPO's "
                                    "dynamic sampling, as a filter: the batch shrinks instead of being refilled); "
                                    "rollout/zero_std_frac logs their share either way")

    # --- PPO update ---
    learning_rate: float = option(1e-3, "Adam learning rate", 1e-8, 1.0)
    lr_warmup_steps: int = option(0, "raise the learning rate linearly from lr/N to lr over the first N PPO steps "
                                  "(Adam's first step moves a weight by lr*|g|/(|g|+eps): about lr wherever |g| >> eps, "
                                  "whatever its size; lesson 05 measures it)", 0, 100_000)
    lr_decay: str = option("linear", "after the warm-up, lower the learning rate toward 0 at the last of epochs*steps_per_epoch "
                           "steps (linear or cosine): fast early progress, small late steps", choices=LR_DECAY_CHOICES)
    adam_eps: float = option(1e-5, "Adam epsilon", 1e-12, 1e-2)
    ppo_epochs: int = option(1, "passes over each rollout batch", 1, 100)
    num_minibatches: int = option(1, "minibatches per PPO epoch", 1, 4096)
    clip_range: float = option(0.2, "PPO ratio clip epsilon", 0.001, 10.0)
    clip_range_high: float | None = option(None, "upper ratio clip epsilon_high (clip-higher, DAPO): the ratio is "
                                           "clipped to [1 - clip_range, 1 + clip_range_high]; none: symmetric",
                                           0.001, 10.0, nullable=True)
    loss_type: str = option("bnpo", "how the per-token loss is averaged (TRL's names): bnpo = one token mean per "
                            "minibatch; dapo = token sum over the batch's mean tokens per minibatch (= bnpo for one "
                            "minibatch); grpo = mean over completions of each one's token mean (long completions' "
                            "tokens weigh less); dr_grpo = token sum / (completions x max_new_tokens)",
                            choices=LOSS_TYPE_CHOICES)
    clip_range_value: float = option(0.2, "value clip epsilon", 0.001, 1000.0)
    vf_coef: float = option(1.0, "value loss weight", 0.0, 100.0)
    ent_coef: float = option(0.0, "entropy bonus weight", 0.0, 10.0)
    max_grad_norm: float = option(1.0, "gradient-norm clip", 0.001, 1000.0)

    # one place that knows each field's allowed range; called on construction and after edits
    def validate(self) -> "RunConfig":
        """Check every field against its range; raise ConfigError naming the flag."""
        super().validate()
        if self.advantage in ("grpo", "rloo") and self.num_generations < 2:
            raise ConfigError(f"--num_generations must be >= 2 with --advantage {self.advantage} (a group baseline needs a group), got {self.num_generations}")
        rollouts = self.batch_size * self.num_generations
        if self.num_minibatches > rollouts or rollouts % self.num_minibatches:
            raise ConfigError(f"--num_minibatches must divide batch_size*num_generations = {rollouts} "
                              f"(equal minibatches), got {self.num_minibatches}")
        if self.advantage != "grpo" and self.scale_rewards != "group":
            raise ConfigError(f"--scale_rewards {self.scale_rewards} needs --advantage grpo (rloo and gae scale their "
                              f"advantages their own way)")
        if self.advantage == "gae" and self.dynamic_sampling:
            raise ConfigError("--dynamic_sampling needs --advantage grpo or rloo (it drops groups whose rewards tie)")
        if self.kl_in_loss and self.advantage == "gae":
            raise ConfigError("--kl_in_loss needs --advantage grpo or rloo (with gae the KL is part of the per-token "
                              "reward that GAE discounts)")
        if self.task != "reviews" and (self.reward != "sentiment" or self.gold == "gold"):
            raise ConfigError(f"--task {self.task} is scored by its checker: leave --reward and --gold at their defaults")
        if self.reward_model is not None and self.reward != "learned":
            raise ConfigError(f"--reward_model needs --reward learned, got --reward {self.reward}")
        if self.top_k or self.top_p < 1.0:  # the loop scores log-probs on the full distribution (lesson 10)
            flag = f"--top_k {self.top_k}" if self.top_k else f"--top_p {self.top_p:g}"
            raise ConfigError(f"{flag}: training must sample from the full distribution (--top_k 0 --top_p 1.0); "
                              f"the loss and the KL score log-probs on it, so a truncated sampler makes them wrong "
                              f"(docs/troubleshooting.md#negative-kl)")
        if self.adaptive_kl and self.kl_coef == 0:
            raise ConfigError("--kl_coef must be > 0 with --adaptive_kl (the controller multiplies it), got 0")
        return self

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def check_resume_step(self, step: int) -> None:
        if self.total_steps <= step:
            raise ConfigError(f"--epochs: the checkpoint is at step {step} and --epochs {self.epochs} x "
                              f"--steps_per_epoch {self.steps_per_epoch} = {self.total_steps} steps; nothing is left "
                              f"to train (pass a larger --epochs to continue)")


def check_fields(cfg: Any) -> None:
    """Each field of a config dataclass made with `option()` against its type, choices and range; a tuple field
    (a list on the command line) item by item; a positional list (nargs="*") may be empty."""
    for f in fields(cfg):
        v, m, flag = getattr(cfg, f.name), f.metadata, f"--{f.name}"
        if v is None:
            if m["nullable"]:
                continue
            raise ConfigError(f"{flag} must be set, got None")
        want, many = _base_type(f), _is_sequence(f)
        if many:
            if not isinstance(v, (tuple, list)) or (not v and not m.get("positional")):
                raise ConfigError(f"{flag} must be one or more values, got {v!r}")
            for item in v:
                _check_value(flag, item, want, m)
        else:
            _check_value(flag, v, want, m)


def _check_value(flag: str, v: Any, want: type, m: Any) -> None:
    if want is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{flag} must be true or false, got {v!r}")
        return
    if want is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConfigError(f"{flag} must be an integer{_range(m)}, got {v!r}")
    if want is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{flag} must be a finite number{_range(m)}, got {v!r}")
    if want is str and not isinstance(v, str):
        raise ConfigError(f"{flag} must be a string, got {v!r}")
    if m["choices"] and v not in m["choices"]:
        raise ConfigError(f"{flag} must be one of {', '.join(m['choices'])}; got {v!r}")
    if m["lo"] is not None and not (m["lo"] <= v <= m["hi"]):
        raise ConfigError(f"{flag} must be in {_range(m).strip()[3:]}, got {v!r}")


def _type_name(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _is_sequence(f: dataclasses.Field) -> bool:
    """A `tuple[X, ...]` field: one or more values on the command line."""
    return _type_name(f).startswith("tuple[")


def _base_type(f: dataclasses.Field) -> type:
    """The type of the field's value (of each item, for a tuple field); `X | None` counts as X."""
    t = _type_name(f).removeprefix("tuple[")
    for name, typ in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if t.startswith(name):
            return typ
    raise TypeError(f"unsupported config type {_type_name(f)}")


def _range(m: dict) -> str:
    if m["lo"] is None:
        return ""
    hi = m["hi"]
    hi_s = "2**32-1" if hi == 2**32 - 1 else f"{hi:g}"
    return f" in [{m['lo']:g}, {hi_s}]"


def check_run_name(name: str) -> None:
    """One plain folder name, so the run folder is always inside --out (no a/b, ../x, /abs, '.')."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0") or os.path.isabs(name):
        raise ConfigError(f"--run_name must be a plain folder name inside --out (no '/', not '.' or '..'), got {name!r}")
    n = len(name.encode("utf-8", "surrogateescape"))
    if n > RUN_NAME_MAX_BYTES:
        raise ConfigError(f"--run_name must be at most {RUN_NAME_MAX_BYTES} bytes long (a folder name; a _N suffix "
                          f"may be added), got {n}")


def check_output_writable(out: str | os.PathLike, flag: str = "--out") -> None:
    """--out (or `flag`) must be a folder this process can create run folders in; checked before any model loads.

    Probes by creating (and removing) a temporary folder in the nearest existing ancestor: permission bits alone
    miss read-only mounts for root and pseudo file systems like /proc."""
    path = os.path.abspath(os.fspath(out))
    anc = path
    while not os.path.lexists(anc):
        anc = os.path.dirname(anc)
    if not os.path.isdir(anc):
        what = "is a file, not a folder" if anc == path else f"is under {anc!r}, which is a file"
        raise ConfigError(f"{flag} {os.fspath(out)!r} {what}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".rlhf_nb-probe-", dir=anc))
    except OSError as e:
        raise ConfigError(f"{flag} {os.fspath(out)!r} is not writable: cannot create a folder in {anc!r} "
                          f"({e.strerror or e})") from None


ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")  # the kit's committed assets


def check_overwrite(path: str | os.PathLike, overwrite: bool, flag: str) -> None:
    """A builder's output that already exists under rlhf_nb/assets (a committed model, pairs or sweep) is replaced
    only with --overwrite: one typo must never cost the kit an asset every lesson and test reads."""
    target = os.path.abspath(os.fspath(path))
    inside = os.path.commonpath([target, ASSETS_DIR]) == ASSETS_DIR
    if inside and os.path.lexists(target) and not overwrite:
        raise ConfigError(f"{flag} {os.fspath(path)!r} is a committed asset of the kit; pass --overwrite to replace it "
                          f"(the new one is swapped in only once it is complete), or write elsewhere with {flag}")


def check_output_file(path: str | os.PathLike, overwrite: bool, flag: str = "--out") -> None:
    """A tool's output file: writable where it goes (check_file_writable), and replacing a committed asset only with
    --overwrite (check_overwrite). Checked before any work, so hours of runs are never lost at the last write."""
    check_file_writable(path, flag)
    check_overwrite(path, overwrite, flag)


def check_file_writable(path: str | os.PathLike, flag: str) -> None:
    """A tool's output file (`flag` names it in the message) can be written: its folder exists and takes a file.
    Checked before any work, so a long run is not lost at its last write."""
    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        raise ConfigError(f"{flag} {os.fspath(path)!r} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise ConfigError(f"{flag} {os.fspath(path)!r}: no folder {folder!r} to write it in")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rlhf_nb-probe-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"{flag} {os.fspath(path)!r} is not writable ({e.strerror or e})") from None


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


class OneLineParser(argparse.ArgumentParser):
    """Errors are one line naming the flag (no usage dump), exit 2; `--help` still shows everything. Every
    command of the package (the trainers and every tool) parses its flags with it."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")

    def _print_message(self, message: str, file=None) -> None:
        try:
            super()._print_message(message, file)
            (file or sys.stderr).flush()
        except BrokenPipeError:  # `--help | head -1`: the reader left; drop the rest quietly
            silence(file or sys.stderr)


def build_parser(prog: str = "python -m rlhf_nb.train", only_given: bool = False, cls: type | None = None,
                 description: str = "Train a policy with RLHF (PPO/GRPO/RLOO) on a laptop CPU.",
                 epilog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of `cls` (default RunConfig): names, defaults and help come from
    the dataclass, so every command of the package spells its flags the same way (--field_name).

    Flags must be spelled in full (`--batch 8` is an error, not --batch_size). Values are only converted here (an int
    is an int); their ranges and choices are checked by the config itself (one message style for the CLI, notebooks
    and papermill). With only_given, the namespace holds just the flags on the command line, as argparse read them
    (how --resume tells what the user changed). epilog defaults to the trainers' exit statuses."""
    cls = cls or RunConfig
    p = OneLineParser(prog=prog, description=description, formatter_class=_HelpFormatter, allow_abbrev=False,
                      epilog=EXIT_STATUS_HELP if epilog is None and issubclass(cls, RunOptions) else epilog)
    for f in fields(cls):
        m, typ, flag = f.metadata, _base_type(f), f"--{f.name}"
        default = argparse.SUPPRESS if only_given else f.default
        help_ = argparse.SUPPRESS if m.get("hidden") else m["help"] + (_range(m) if m["lo"] is not None else "")
        metavar = "{" + ",".join(m["choices"]) + "}" if m["choices"] else None
        if _is_sequence(f):
            kw = dict(type=_converter(typ), default=default, metavar=metavar, help=help_)
            if m.get("positional"):
                p.add_argument(f.name, nargs="*", **kw)
            else:
                p.add_argument(flag, nargs="+", **kw)
        elif typ is bool:
            p.add_argument(flag, nargs="?", const=True, default=default, type=_parse_bool, help=help_)
            p.add_argument(f"--no_{f.name}", dest=f.name, action="store_false", default=default, help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, type=_converter(typ), default=default, metavar=metavar, help=help_)
    return p


def _converter(typ: type):
    """str -> typ for argparse; a float flag also takes 'nan' and 'inf', which the config then refuses by name."""
    return {int: int, float: float, str: str}[typ]


EXIT_STATUS_HELP = """exit status: 0 done; 2 a bad flag, model or checkpoint (before any work); 74 a checkpoint or log could not
be written (disk full...; the line says which checkpoint to resume from); 75 stopped by --max_minutes (on purpose,
resumable: EX_TEMPFAIL, 'try again'); 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), after
writing final/."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help; the exit-status epilog keeps its line breaks."""


def silence(stream=None) -> None:
    """The reader of a stream went away (`| head`, a closed terminal): send the rest of stdout (or `stream`) to
    devnull, so neither a later write nor the flush at exit raises BrokenPipeError."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), (stream or sys.stdout).fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. captured by pytest): nothing to redirect
        pass
