"""`make bench`'s DPO rows: one rlhf_nb DPO step against one TRL DPOTrainer step on identical settings, in one run."""
from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass

from ..cli import cli_from_dataclass
from ..config import ConfigError, Options, option
from ..dpo import DPOConfig, dpo_step, load_pairs, setup


def bench_dpo_vs_trl(steps: int = 20, warmup: int = 3, batch_size: int = 32, pairs: str = "proxy-rm-1000") -> dict:
    """One DPO step here against one TRL DPOTrainer step, same model, pairs, batch, precomputed reference, float32,
    one thread, in one process; CPU seconds per step (time.process_time: the load of other jobs does not count).

    ratio = ours / TRL's median step (target <= 1.0). Needs the TRL extra."""
    import statistics
    import tempfile

    from ..bridges.trl import StepTimer, make_trl_dpo_trainer, quiet_trainer

    cfg = DPOConfig(pairs=pairs, eval_pairs=None, eval_samples=0, batch_size=batch_size, progress=False, device="cpu",
                    threads=1)
    s = setup(cfg)
    ours = []
    for _ in range(warmup + steps):
        t = time.process_time()
        dpo_step(s)
        ours.append(time.process_time() - t)
    tokens = batch_size * statistics.fmean(2 * len(p) + len(c) + len(r) for p, c, r in s.encoded)  # per step

    timer = StepTimer.make(clock=time.process_time)  # CPU seconds, like ours
    with tempfile.TemporaryDirectory() as out:
        tr = quiet_trainer(make_trl_dpo_trainer(cfg, output_dir=out, callbacks=[timer]))
        tr.args.max_steps = warmup + steps
        tr.train()
    med_ours, med_trl = statistics.median(ours[warmup:]), statistics.median(timer.step_s[warmup:])
    return {"steps": steps, "batch_size": batch_size, "threads": 1, "ours_step_cpu_s": med_ours,
            "trl_step_cpu_s": med_trl, "ratio": med_ours / med_trl, "ours_tokens_per_s": tokens / med_ours,
            "trl_tokens_per_s": tokens / med_trl,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB; both systems


def render_dpo(r: dict) -> list[str]:
    """The markdown of the DPO rows, from bench_dpo_vs_trl's result."""
    return ["", "## DPO: rlhf_nb against TRL's DPOTrainer", "",
            f"`rlhf_nb.tools.bench_dpo.bench_dpo_vs_trl()`: the same model, the `proxy-rm-1000` pairs, "
            f"{r['batch_size']} pairs per step, a precomputed reference, float32, one thread, one process; median CPU "
            f"seconds of {r['steps']} steps after warm-up.", "",
            "| | rlhf_nb | TRL | ratio |", "|---|---|---|---|",
            f"| CPU s per step | {r['ours_step_cpu_s']:.3f} | {r['trl_step_cpu_s']:.3f} | **{r['ratio']:.2f}** (target ≤ 1.0) |",
            f"| tokens / s | {r['ours_tokens_per_s']:.0f} | {r['trl_tokens_per_s']:.0f} | |",
            f"| peak RSS, both in one process | {r['peak_rss_mb']:.0f} MB | | |", ""]


@dataclass
class BenchDPOOptions(Options):
    """`python -m rlhf_nb.tools.bench_dpo`: the arguments of bench_dpo_vs_trl."""

    steps: int = option(20, "timed steps of each system (after --warmup)", 1, 100_000)
    warmup: int = option(3, "untimed steps of each system first", 0, 1000)
    batch_size: int = option(32, "pairs per step", 1, 4096)
    pairs: str = option("proxy-rm-1000", "training pairs: a JSONL file or a folder under rlhf_nb/assets with "
                        "train_pairs.jsonl (as rlhf_nb.dpo --pairs)")


def check_options(o: BenchDPOOptions) -> None:
    """The pairs load (as rlhf_nb.dpo reads them), before either system starts."""
    try:
        load_pairs(o.pairs)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m rlhf_nb.tools.bench_dpo`: the DPO rows alone, printed as JSON (`make bench` writes them to docs)."""
    o = cli_from_dataclass(BenchDPOOptions, argv, prog="python -m rlhf_nb.tools.bench_dpo",
                           description=__doc__, check=check_options)
    print(json.dumps(bench_dpo_vs_trl(**o.to_dict()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
