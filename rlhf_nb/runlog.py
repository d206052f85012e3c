"""Run folders and logs: one fresh folder per run, JSONL + TensorBoard with the same metric names, samples."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from .config import silence

WALL_TIME_PREFIXES = ("time/",)  # fields that change between identical runs


def default_runs_dir() -> Path:
    """The repo's runs/ when the package sits in a source checkout (as after `pip install -e .`), else ./runs."""
    repo = Path(__file__).resolve().parents[1]
    return repo / "runs" if (repo / "pyproject.toml").is_file() and (repo / "runs").is_dir() else Path("runs")


def new_run_dir(parent: str | Path = "runs", name: str | None = None) -> Path:
    """Create runs/run_YYYYMMDD_HHMMSS/ (or `name`); an existing folder is never reused: a suffix _1, _2… is added."""
    parent = Path(parent)
    base = name or time.strftime("run_%Y%m%d_%H%M%S")
    if Path(base).name != base or base in (".", ".."):  # RunConfig checks --run_name; this guards other callers
        raise ValueError(f"run folder name must be a plain folder name inside {parent}, got {base!r}")
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        path = parent / (base if i == 0 else f"{base}_{i}")
        try:
            path.mkdir()  # atomic: two runs started in the same second get different folders
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not find a free run folder name under {parent}")


def strip_wall_time(row: dict[str, Any]) -> dict[str, Any]:
    """Drop the fields that measure wall time, leaving what must reproduce exactly."""
    return {k: v for k, v in row.items() if not k.startswith(WALL_TIME_PREFIXES)}


def write_json_atomically(path: str | Path, obj: Any, indent: int | None = None) -> None:
    """Write obj as JSON next to path, then rename over it: a reader never sees half a file (compact, or indented)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    text = json.dumps(obj, indent=indent) if indent is not None else json.dumps(obj, separators=(",", ":"))
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _clean(v: Any) -> Any:
    v = float(v) if hasattr(v, "item") else v
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; null says "undefined this step" (e.g. explained variance with Var(R)=0)
    return v


class _FileHandler(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        raise  # a failed write (disk full) is the run's to report in one line, not a "Logging error" dump


class RunLogger:
    """Writes logs/train.jsonl, logs/train.log, tb/ and samples.jsonl inside a run folder."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, console: bool = False):
        self.run_dir = Path(run_dir)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "logs" / "train.jsonl", "a")
        self._samples = open(self.run_dir / "samples.jsonl", "a")
        self.log = logging.getLogger(f"rlhf_nb.run.{self.run_dir.resolve()}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        fh = _FileHandler(self.run_dir / "logs" / "train.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(fh)
        if console:
            sh = logging.StreamHandler()
            sh.setFormatter(logging.Formatter("%(message)s"))
            self.log.addHandler(sh)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def metrics(self, step: int, stats: dict[str, Any]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in stats.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def samples(self, step: int, prompts: list[str], completions: list[str], scores: list[float]) -> None:
        for p, c, s in zip(prompts, completions, scores):
            self._samples.write(json.dumps({"step": step, "prompt": p, "completion": c, "score": round(float(s), 6)}) + "\n")
        self._samples.flush()

    def info(self, msg: str) -> None:
        self.log.info(msg)

    def close(self, quiet: bool = False, msg: str | None = None) -> None:
        """Close every file; with quiet (a run stopping on a failed write), log `msg` if possible and raise nothing."""
        closers = [lambda: msg and self.log.error(msg), self._jsonl.close, self._samples.close]
        closers += [self._tb.close] if self._tb is not None else []
        for h in list(self.log.handlers):
            closers += [h.close, lambda h=h: self.log.removeHandler(h)]
        for close in closers:
            try:
                close()
            except OSError:
                if not quiet:
                    raise


class Progress:
    """A tqdm bar on stderr that never stops a run: a closed terminal (SIGHUP) or a reader that left
    (`2>&1 | head`) just turns it off."""

    def __init__(self, on: bool, total: int, initial: int = 0, desc: str = "rlhf",
                 shown: tuple[tuple[str, str], ...] = (("reward", "objective/scores"), ("kl", "objective/kl"))):
        self.bar, self.shown = None, shown  # shown: (label, metric name) pairs in the bar's postfix
        if on:
            from tqdm.auto import tqdm

            try:
                self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
            except OSError:  # it draws once when made
                silence(sys.stderr)

    def update(self, metrics: dict[str, float]) -> None:
        self._do(lambda b: (b.update(1), b.set_postfix({k: f"{metrics[m]:.3f}" for k, m in self.shown})))

    def close(self) -> None:
        self._do(lambda b: b.close())
        self.bar = None

    def _do(self, fn) -> None:
        if self.bar is None:
            return
        try:
            fn(self.bar)
        except OSError:
            self.bar.disable = True  # tqdm's own close (also at garbage collection) then writes nothing
            self.bar = None
            silence(sys.stderr)  # what is still buffered would fail again at exit (and make the status 120)


class StageTimer:
    """Seconds spent in each stage of a step: `lap(name)` at the end of each stage; `laps` maps name -> seconds.

        timer = StageTimer()
        rollout = sample(...)
        timer.lap("rollout")
    """

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now

    @property
    def total(self) -> float:
        """Seconds since the timer started (to the last lap)."""
        return self._last - self.start
