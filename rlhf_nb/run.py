"""The run around every trainer: folder, logs, progress, checkpoints, resume, signals and exit statuses — once.

A trainer (rlhf_nb.train's PPO/GRPO/RLOO, rlhf_nb.dpo's DPO/IPO/SFT) describes itself with a `Trainer`: how to set
up its state, take one step and checkpoint it. `run()` does the rest, the same way for each:

- a fresh run folder under --out (never overwritten) with config.json, logs/ (metrics.jsonl, TensorBoard, run.log)
  and samples.jsonl; checkpoints/step_N every --save_every steps and final/ at the end, each written atomically;
- --resume restores a checkpoint and continues exactly as if never stopped; --max_minutes stops with final/;
- SIGINT, SIGTERM and SIGHUP finish the step, write final/ and say how to resume; a second Ctrl-C abandons the step;
- a write that fails (disk full…) stops with one line naming the last checkpoint to resume from.

`main()` is the command line around it: every way a run ends is one line and an exit status — 0 done, 2 bad input,
74 a write failed, 75 --max_minutes, 128 + N signal N.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .checkpoints import CheckpointWriteError, checkpoint_bytes, describe_write_error
from .cli import cli_from_dataclass
from .config import ConfigError, check_output_writable, silence
from .runlog import Progress, RunLogger, new_run_dir

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
EXIT_BAD_INPUT = 2  # a bad flag, model or checkpoint, refused before any work
EXIT_WRITE_FAILED = 74  # EX_IOERR (sysexits.h): a checkpoint or log could not be written (disk full…)
EXIT_STOPPED = 75  # EX_TEMPFAIL: --max_minutes stopped the run on purpose; resuming finishes it
RESUME_WARN = ("threads", "device")  # may change on --resume, but then the continuation is not bit-for-bit


@dataclass(frozen=True)
class Trainer:
    """What a trainer gives the runner. Its state (what `setup` returns) has .cfg (a RunOptions), .step (steps done),
    .total_steps, and .policy and .optimizer (a checkpoint's size is checked against the free disk before the run)."""

    prog: str  # the command that runs (and resumes) it: "python -m rlhf_nb.train"
    config: type  # its config dataclass (a RunOptions); the command line is built from it
    description: str  # the command line's --help headline
    setup: Callable[[Any], Any]  # cfg -> state: validates, loads, fails before any training
    step: Callable[[Any], tuple[dict[str, float], dict | None]]  # one step: (metrics, samples or None); step += 1
    save: Callable[[Any, Path], Any]  # write a checkpoint of the state into a new folder
    resume: Callable[[Any, Path], dict[str, Any]]  # load a checkpoint into the state; returns its trainer_state
    shown: tuple[tuple[str, str], ...]  # (label, metric): the progress bar, run.log's step lines, the CLI's last line
    diagnostics: Callable[[Any], Any] | None = None  # cfg -> an object whose update(step, metrics) gives warning lines
    label: str = "rlhf"  # the progress bar's name


@dataclass
class RunResult:
    """How a run ended: the metrics of every step, where it was written, and what to resume from."""

    history: list[dict[str, float]]
    run_dir: Path | None
    state: Any
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


def run(trainer: Trainer, cfg, callback: Callable[[int, dict, dict | None], None] | None = None,
        write_run: bool = True, state: Any = None, run_dir: str | Path | None = None) -> RunResult:
    """Take the trainer's steps until its last (or --max_minutes, or a signal); callback(step, metrics, samples)
    after each.

    With write_run, writes the standard run folder: a fresh one under cfg.out, or `run_dir` if given (a folder that
    holds no run yet, e.g. the smoke notebook's). SIGINT/SIGTERM/SIGHUP then finish the step and write final/; they
    stay caught until final/ is in place (see `_catch_stop_signals`). Without it, nothing is written and signals
    behave as usual: a notebook's run stops with KeyboardInterrupt."""
    if write_run:
        check_run_dir(run_dir) if run_dir is not None else check_output_writable(cfg.out)  # before the model loads
    s = state or trainer.setup(cfg)
    saved, last = None, None  # last: (checkpoint, step) the run can resume from
    if cfg.resume:
        saved = trainer.resume(s, cfg.resume)
        last = (Path(cfg.resume), s.step)
    if write_run:
        check_free_space(Path(run_dir or cfg.out), s)
    # shared with the signal handler; in_step: only then may a second Ctrl-C abandon the step, never during a write
    stop = {"why": None, "signum": None, "in_step": False}
    out = _RunFolder(trainer.prog, trainer.shown)
    history, warnings = [], []
    handlers = _catch_stop_signals(stop) if write_run else {}
    bar = Progress(cfg.progress, s.total_steps, s.step, trainer.label, trainer.shown)
    diag = trainer.diagnostics(cfg) if trainer.diagnostics else None
    t_start = time.perf_counter()
    try:
        if write_run:
            out.open(cfg, run_dir)
            if cfg.resume:
                out.note(s.step, f"resumed from {cfg.resume} at step {s.step}", last)
                for k in RESUME_WARN:
                    if getattr(cfg, k) != saved["config"][k]:
                        msg = (f"warning: --{k} {getattr(cfg, k)!r} differs from the checkpoint's "
                               f"{saved['config'][k]!r}: the run continues, but not bit-for-bit as it would have "
                               f"without the stop")
                        say(msg)
                        out.note(s.step, msg, last)
        while s.step < s.total_steps and not stop["why"]:
            stop["in_step"] = True
            try:
                metrics, samples = trainer.step(s)
            except KeyboardInterrupt:
                if out.logger is None:
                    raise
                raise RunAborted(out.abandoned(s.step, last)) from None
            finally:
                stop["in_step"] = False
            metrics["time/elapsed_s"] = time.perf_counter() - t_start
            history.append({"step": s.step, **metrics})
            for line in diag.update(s.step, metrics) if diag else ():  # one line per kind of trouble, once per run
                warnings.append(line)
                print(line, file=sys.stderr)
                out.note(s.step, line, last)
            if out.logger:
                out.step(s.step, metrics, samples, last)
                if cfg.save_every and s.step % cfg.save_every == 0:
                    last = out.save(trainer, s, out.run_dir / "checkpoints" / f"step_{s.step}", last)
            bar.update(metrics)
            if callback is not None:
                callback(s.step, metrics, samples)
            if cfg.max_minutes is not None and time.perf_counter() - t_start > 60 * cfg.max_minutes:
                stop["why"] = stop["why"] or f"--max_minutes {cfg.max_minutes} reached"
        bar.close()
        if out.logger:
            last = out.save(trainer, s, out.run_dir / "final", last)  # signals still caught: a Ctrl-C waits for it
            if s.step < s.total_steps:
                out.note(s.step, f"stopped at step {s.step}: {stop['why']}. Resume with: {trainer.prog} --resume "
                                 f"{last[0]}", last)
            out.logger.close()
    finally:
        bar.close()
        _restore_signal_handlers(handlers)
    return RunResult(history, out.run_dir, s, stop["why"] if s.step < s.total_steps else None, stop["signum"],
                     last[0] if last else None, warnings)


# ------------------------------------------------------------------------------------------ checks before the run

def check_run_dir(run_dir: str | Path) -> None:
    """`run_dir` (the smoke notebook's out_dir) must be a folder that holds no run yet, or a path where one can be
    made: refused with one line naming it before the model loads, never a FileExistsError from deep inside."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run_dir {str(path)!r} is a file; pass a fresh folder for the run")
    if (path / "logs").exists():
        raise ConfigError(f"run_dir {str(path)!r} already holds a run; pass a fresh folder (a run is never overwritten)")
    check_output_writable(path)


def check_free_space(where: Path, s) -> None:
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


# ------------------------------------------------------------------------------------------------ the run folder

class _RunFolder:
    """The run's folder and logger; every write to it either succeeds or stops the run with one line that says
    which checkpoint to resume from (RunWriteError)."""

    def __init__(self, prog: str, shown: tuple[tuple[str, str], ...]):
        self.prog, self.shown = prog, shown
        self.run_dir: Path | None = None
        self.logger: RunLogger | None = None

    def open(self, cfg, run_dir: str | Path | None) -> None:
        """A fresh run folder (or the given empty one) with config.json and its logger."""
        try:
            if run_dir is not None:
                run_dir = Path(run_dir)
                if (run_dir / "logs").exists():
                    raise FileExistsError(f"run_dir {run_dir} already holds a run; pass a fresh folder (never "
                                          f"overwritten)")
                run_dir.mkdir(parents=True, exist_ok=True)
            else:
                run_dir = new_run_dir(cfg.out, cfg.run_name)
            (run_dir / "config.json").write_text(cfg.to_json())
            self.logger = RunLogger(run_dir)
            self.logger.info(f"run {run_dir} config {json.dumps(cfg.to_dict(), sort_keys=True)}")
        except FileExistsError:
            raise
        except OSError as e:
            raise RunWriteError(f"could not create the run folder under {cfg.out}: "
                                f"{describe_write_error(e, Path(cfg.out))}") from None
        self.run_dir = run_dir

    def resume_hint(self, last: tuple[Path, int] | None) -> str:
        if last is None:
            return "No checkpoint was written, so there is nothing to resume from (--save_every N writes periodic ones)."
        return f"The last checkpoint is step {last[1]}; resume with: {self.prog} --resume {last[0]}"

    def write(self, step: int, what: Callable[[], Any], last: tuple[Path, int] | None) -> Any:
        """One write to the run folder; a failed write (disk full…) stops the run with one line saying where to
        resume."""
        try:
            return what()
        except CheckpointWriteError as e:
            msg = f"{e}. The run stopped at step {step}. {self.resume_hint(last)}"
        except OSError as e:
            msg = (f"could not write the run's logs in {self.run_dir}: {describe_write_error(e, self.run_dir)}. "
                   f"The run stopped at step {step}. {self.resume_hint(last)}")
        self.logger.close(quiet=True, msg=msg)
        raise RunWriteError(msg) from None

    def note(self, step: int, line: str, last) -> None:
        if self.logger:
            self.write(step, lambda: self.logger.info(line), last)

    def step(self, step: int, metrics: dict, samples: dict | None, last) -> None:
        """The step's metrics (metrics.jsonl, TensorBoard), its samples, and one line in run.log."""
        def write():
            self.logger.metrics(step, metrics)
            if samples:
                self.logger.samples(step, samples["prompts"], samples["completions"], samples["scores"])
            self.logger.info(f"step {step} " + " ".join(f"{label} {metrics[m]:.4f}" for label, m in self.shown))

        self.write(step, write, last)

    def save(self, trainer: Trainer, s, path: Path, last) -> tuple[Path, int]:
        """Write a checkpoint; on failure (disk full…) stop the run with one line that says where to resume from."""
        self.write(s.step, lambda: trainer.save(s, path), last)
        return path, s.step

    def abandoned(self, step: int, last) -> str:
        msg = f"Ctrl-C again: abandoned step {step + 1} half-way; nothing of it is saved. {self.resume_hint(last)}"
        self.logger.close(quiet=True, msg=msg)
        return msg


# --------------------------------------------------------------------------------------------------- signals

def say(msg: str) -> None:
    """One line on stderr that never raises: safe in a signal handler and after a closed terminal (SIGHUP)."""
    try:
        os.write(2, (msg + "\n").encode())
    except OSError:
        pass


def _catch_stop_signals(stop: dict) -> dict:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) finish the current step, write final/, and say how to resume.

    They stay caught until final/ is in place, so no signal ever interrupts a checkpoint write. A second Ctrl-C
    during a step abandons that step (its half-updated state is never saved); during a write it waits for it."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if stop.get("signum") is None:
            stop["signum"], stop["why"] = signum, stop["why"] or f"{name} received"
            say(f"\n{name}: stopping after this step and writing final/ (Ctrl-C again abandons the step)")
        elif signum == signal.SIGINT and stop.get("in_step"):
            raise KeyboardInterrupt
        else:
            say(f"\n{name}: already stopping; a checkpoint being written is completed first")

    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}


def _restore_signal_handlers(old: dict) -> None:
    for sig, h in old.items():
        signal.signal(sig, h)


# ------------------------------------------------------------------------------------------------ the command line

def main(trainer: Trainer, argv: Sequence[str] | None = None) -> int:
    """The trainer's command line: flags -> config -> run -> one summary line. Every way a run ends is one line and
    an exit status: 0 done, 2 bad input, 74 a write failed, 75 --max_minutes, 128 + N signal N."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # an import-time guard's job is done
    res = None
    try:
        try:
            cfg = cli_from_dataclass(trainer.config, argv, trainer.prog, trainer.description)  # bad flag: exit 2
            res = run(trainer, cfg)
        except RunWriteError as e:
            say(f"error: {e}")
            return EXIT_WRITE_FAILED
        except (ConfigError, ValueError, OSError) as e:  # CheckpointError is a ValueError
            say(f"error: {e}")
            return EXIT_BAD_INPUT
        lines = [f"run folder: {res.run_dir}"]
        if res.history:
            last = res.history[-1]
            lines.append(f"step {last['step']}: " + "  ".join(f"{m} {last[m]:.4f}" for _, m in trainer.shown))
        if res.stopped_early:
            lines.append(f"stopped early ({res.stopped_early}); resume with: {trainer.prog} --resume "
                         f"{res.last_checkpoint}")
        elif res.stop_signal:
            lines.append(f"{signal.Signals(res.stop_signal).name} arrived as the run finished; final/ is complete")
        _out(*lines)
        return res.exit_code
    except RunAborted as e:
        say(str(e))
        return 128 + signal.SIGINT
    except KeyboardInterrupt:  # before run() caught signals (loading the model), or after it let go of them
        if res is None:
            say("interrupted during start-up: nothing was trained or written")
        return res.exit_code if res is not None and res.exit_code else 128 + signal.SIGINT


def _out(*lines: str) -> None:
    """Print to stdout; a reader that went away (`| head -1`) is not an error: the run's own status stands."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        silence(sys.stdout)
