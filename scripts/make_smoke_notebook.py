"""Writes notebooks/00_smoke.ipynb (unexecuted); `make notebooks` executes and stores it. Kept so the notebook's source is reviewable as code."""
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]

cells = [
    nbf.v4.new_markdown_cell("""# 00 · Smoke run: the whole RLHF loop, headless

This notebook is what `make smoke` runs with **papermill**: it trains the embedded tiny GPT-2 with PPO for a few
steps and writes the standard run folder (`config.json`, `logs/train.jsonl`, `logs/train.log`, `tb/`,
`samples.jsonl`, `checkpoints/`, `final/`, and `summary.png`).

The next cell is tagged `parameters`; papermill overrides it:
`make smoke SEED=1 KL=0.1 BATCH=8 STEPS=6` or
`papermill notebooks/00_smoke.ipynb out.ipynb -p kl_coef 0.1`.
Every value is checked by `RunConfig` before any work starts; a bad one stops the run with one line naming the flag."""),
    nbf.v4.new_code_cell("""seed: int = 0  # one seed fixes prompts, sampling and minibatch order
kl_coef: float = 0.05  # beta: weight of the per-token KL penalty
batch_size: int = 16  # prompts per PPO step
steps: int = 8  # PPO steps (rollout + update)
max_new_tokens: int = 12  # tokens sampled per completion
reward: str = "sentiment"  # sentiment | phrase | length | composite | learned
out_dir: str = ""  # run folder; "" makes a fresh runs/run_YYYYMMDD_HHMMSS/""", metadata={"tags": ["parameters"]}),
    nbf.v4.new_code_cell("""from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from rlhf_nb.config import RunConfig
from rlhf_nb.lesson import start
from rlhf_nb.plots import plot_history
from rlhf_nb.runlog import default_runs_dir
from rlhf_nb.train import train

device = start(seed=seed)
cfg = RunConfig(seed=seed, kl_coef=kl_coef, batch_size=batch_size, steps_per_epoch=steps,
                max_new_tokens=max_new_tokens, reward=reward, out=str(default_runs_dir()),
                save_every=max(1, steps // 2), progress=False)  # validated here, before any work
print(f"{cfg.total_steps} PPO steps, {cfg.batch_size} prompts each, reward={cfg.reward}, kl_coef={cfg.kl_coef}")"""),
    nbf.v4.new_markdown_cell("""## Train

Each step: sample completions → score them → per-token reward $r_t = -\\beta\\,\\mathrm{kl}_t$ (+ the score on the last
token) → GAE advantages → PPO epochs. Lessons 01–06 take these stages apart one by one."""),
    nbf.v4.new_code_cell("""result = train(cfg, run_dir=out_dir or None)
run_dir = result.run_dir
table = pd.DataFrame(result.history)[["step", "objective/scores", "objective/kl", "objective/rlhf_reward",
                                      "policy/entropy", "policy/clipfrac"]]
print(table.round(4).to_string(index=False))"""),
    nbf.v4.new_markdown_cell("## Summary plot (also saved as `summary.png` in the run folder)"),
    nbf.v4.new_code_cell("""fig = plot_history(result.history, keys=("objective/scores", "objective/kl", "policy/entropy"),
                   title=f"smoke run: seed {seed}, kl_coef {kl_coef}, batch {batch_size}")
fig.savefig(run_dir / "summary.png", dpi=100)
plt.show()"""),
    nbf.v4.new_code_cell("""print("run folder contents:")
for p in sorted(run_dir.iterdir()):
    print(" ", p.name + ("/" if p.is_dir() else ""))
last = result.history[-1]
print(f"final step {last['step']}: objective/scores {last['objective/scores']:.4f}, objective/kl {last['objective/kl']:.4f}")"""),
]
nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "rlhf_nb", "display_name": "Python (rlhf_nb)", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, ROOT / "notebooks" / "00_smoke.ipynb")
print("wrote notebooks/00_smoke.ipynb")
