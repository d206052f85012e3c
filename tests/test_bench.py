"""make bench's learning measure: J = score − β·KL against J*, the policy measurement, and the report's tables."""
from __future__ import annotations

import json
import math

import pytest

from rlhf_nb.tools import bench, bench_report


def _history(n: int, score: float, kl: float, step_cpu_s: float = 1.0) -> list[dict]:
    timings = {k: 0.1 for k in ("time/step_s", "time/rollout_s", "time/score_s", "time/forward_s", "time/update_s")}
    return [{"step": i + 1, "objective/scores": score, "objective/kl": kl, "bench/cpu_s": (i + 1) * step_cpu_s,
             "time/elapsed_s": (i + 1) * 2 * step_cpu_s, "time/rollout_tokens_per_s": 1000.0, **timings}
            for i in range(n)]


def test_learning_summary_cuts_at_the_cpu_budget_and_scores_j_against_j_star():
    hist = _history(10, 0.5, 2.0) + _history(10, 0.9, 9.0, step_cpu_s=100.0)  # the second half is past the budget
    s = bench.learning_summary(hist, budget_s=10.0, beta=0.05, j_star=0.6,
                               final={"score": 0.7, "kl": 3.0, "n": 1024})
    assert s["steps_in_budget"] == 10
    assert s["score_at_budget"] == pytest.approx(0.5) and s["kl_at_budget"] == pytest.approx(2.0)
    assert s["j_ratio"] == pytest.approx((0.5 - 0.05 * 2.0) / 0.6)
    assert s["eval_j"] == pytest.approx(0.7 - 0.05 * 3.0) and s["eval_j_ratio"] == pytest.approx(0.55 / 0.6)
    assert "eval_j" not in bench.learning_summary(hist, 10.0, 0.05, 0.6)  # no measurement, no eval_ fields


def test_search_rows_are_named_by_the_flags_they_change():
    assert bench.search_key("ppo", {"learning_rate": 4e-4, "seed": 1}) == "ppo --learning_rate 0.0004 --seed 1"
    assert all(base in bench.SEARCH_BASES for base, _ in bench.SEARCH_SCREEN + bench.SEARCH_SEEDS)
    from rlhf_nb.config import RunConfig

    for name, flags in bench.LEARN_RUNS.items():  # every learning run is a valid RunConfig at the bench's β
        assert RunConfig(**flags).kl_coef == bench.BETA, name
    # ppo is RunConfig's defaults, the defaults the search chose: one gradient step a rollout at a decaying rate
    defaults = RunConfig(**bench.LEARN_RUNS["ppo"])
    assert (defaults.ppo_epochs, defaults.num_minibatches, defaults.lr_decay) == (1, 1, "linear")
    assert RunConfig(**bench.LEARN_RUNS["ppo_old"]).ppo_epochs == 4


def test_report_shows_j_over_j_star_per_run_and_both_search_passes(tmp_path):
    summary = bench.learning_summary(_history(10, 0.6, 3.0), 10.0, 0.05, 0.6, {"score": 0.7, "kl": 3.0, "n": 1024})
    seeds = {s: {**summary, "eval_j_ratio": r} for s, r in ((0, 0.8), (1, 0.9), (2, 1.0))}
    run = {**seeds[0], "by_seed": seeds, "setup_s": 1.0, "peak_rss_mb": 500.0}
    row = lambda j, seed: {"base": "ppo", "changes": {"seed": seed}, **summary, "eval_j_ratio": j}  # noqa: E731
    r = {"machine": {"cpu": "x", "cores": 2, "python": "3", "torch": "2", "cuda": False, "platform": "p"},
         "date": "today", "budget_s": 10.0, "learn_seeds": [0, 1, 2], "learn_flags": {"ppo": "--batch_size 32"},
         "optimum": {"n": 64, "n_per_prompt": 2, "base_mean": 0.0, "base_frac_ge_0.8": 0.01,
                     "betas": {"0.05": {"score": 0.72, "kl": 2.5, "J_star": 0.6, "n": 2}}},
         "learn_ppo": run, "smoke_s": 50.0, "smoke_cpu_s": 30.0,
         "search": {"budget_s": 10.0, "runs": {"ppo --vf_coef 0.5": {"base": "ppo", "changes": {}, **summary}}},
         "search_seeds": {"budget_s": 10.0, "runs": {f"ppo --seed {s}": row(j, s) for s, j in ((0, 0.7), (1, 0.9))}}}
    out = tmp_path / "b.md"
    bench_report.write_report(json.loads(json.dumps(r)), out)  # the JSON round trip makes β and seed keys strings
    text = out.read_text()
    assert "| ppo: J/J* after 10 CPU s of training (β = 0.05; 3 seeds: mean [lowest, highest]) | 0.90 [0.80, 1.00]" in text
    assert "0.90 [0.80, 1.00] (lowest 0.800) | ≥ 0.9 on every seed | **missed** |" in text  # a mean of 0.9 is not enough
    assert "| `make smoke` (papermill, kernel start included) | 30.0 CPU s (50.0 s wall) | ≤ 45 s | met |" in text
    assert "| `ppo --vf_coef 0.5` | 10 |" in text
    assert "| `ppo` (2 seeds) | 10 [10, 10] | 0.700 [0.700, 0.700] | 3.00 [3.00, 3.00] | 0.80 [0.70, 0.90] |" in text
    assert not math.isnan(summary["eval_j_ratio"])


@pytest.mark.parametrize("budget", ["-1", "0", "nan", "1e9"])
def test_a_budget_out_of_range_is_refused_in_one_line(budget, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--budget_s", budget, "--only", "learn"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--budget_s must be" in err and "[1, 86400]" in err, err
