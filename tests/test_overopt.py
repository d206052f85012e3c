"""Over-optimisation helpers against naive references: brute-force best-of-n, exact KL of best-of-n, known fits."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlhf_nb.overopt import (BON_NS, GaoFit, best_of_n, best_of_n_curve, bon_weights, fit_gao, gao_form, kl_bon,
                             pair_accuracy)


def test_kl_bon_values():
    assert kl_bon(1) == 0.0
    assert kl_bon(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_bon(16) == pytest.approx(2.772588722 - 0.9375)
    assert [kl_bon(n) for n in BON_NS] == sorted(kl_bon(n) for n in BON_NS)
    for bad in (0, -3, 2.0, True, "4"):
        with pytest.raises(ValueError, match="n must be an int >= 1"):
            kl_bon(bad)


@pytest.mark.parametrize("n", [1, 2, 4, 16])
def test_kl_bon_is_the_limit_of_the_exact_kl_over_many_equally_likely_outcomes(n):
    """Best-of-n over N equally likely, distinct-reward outcomes puts mass ((i/N)^n - ((i-1)/N)^n) on the i-th smallest."""
    N = 200_000
    i = torch.arange(1, N + 1, dtype=torch.float64)
    p = (i / N) ** n - ((i - 1) / N) ** n  # (N,)
    exact = float((p * torch.log(p * N)).sum())  # KL(p || uniform)
    assert exact == pytest.approx(kl_bon(n), abs=2e-3)


def _brute_best_of_n(proxy: list[float], gold: list[float], n: int) -> tuple[float, float]:
    subsets = list(itertools.combinations(range(len(proxy)), n))
    best = [max(s, key=lambda j: proxy[j]) for s in subsets]
    return sum(proxy[j] for j in best) / len(best), sum(gold[j] for j in best) / len(best)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_best_of_n_matches_brute_force_over_every_subset(n):
    g = torch.Generator().manual_seed(n)
    proxy, gold = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    want = [_brute_best_of_n(p.tolist(), q.tolist(), n) for p, q in zip(proxy, gold)]
    got = best_of_n(proxy, gold, n)
    assert got[0] == pytest.approx(sum(w[0] for w in want) / 3, abs=1e-10)
    assert got[1] == pytest.approx(sum(w[1] for w in want) / 3, abs=1e-10)


def test_bon_weights_are_a_distribution_and_survive_large_n():
    for N, n in ((8, 1), (8, 8), (512, 256), (4096, 256)):
        w = bon_weights(N, n)
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-9)
        assert torch.isfinite(w).all() and (w >= 0).all()
    assert bon_weights(8, 1).tolist() == pytest.approx([1 / 8] * 8)
    assert bon_weights(8, 8).tolist() == pytest.approx([0] * 7 + [1])
    with pytest.raises(ValueError, match="n must be <= N"):
        bon_weights(4, 5)


def test_best_of_n_curve_rows_and_shape_errors():
    g = torch.Generator().manual_seed(0)
    proxy = torch.randn(4, 64, generator=g)
    rows = best_of_n_curve(proxy, proxy, ns=(1, 4, 64))
    assert [r["n"] for r in rows] == [1, 4, 64]
    assert rows[0]["d"] == 0 and rows[2]["d"] == pytest.approx(math.sqrt(kl_bon(64)))
    assert rows[0]["gold"] == pytest.approx(float(proxy.mean()))
    assert rows[2]["proxy"] == pytest.approx(float(proxy.max(1).values.mean()))
    assert rows[0]["proxy"] < rows[1]["proxy"] < rows[2]["proxy"]
    with pytest.raises(ValueError, match="same-shape"):
        best_of_n(torch.zeros(2, 3), torch.zeros(3, 2), 1)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_recovers_known_coefficients(form):
    d = torch.linspace(0.05, 6, 40, dtype=torch.float64)
    alpha, beta = 0.8, 0.25
    y = gao_form(d, alpha, beta, form)
    fit = fit_gao(d, y, form)
    assert (fit.alpha, fit.beta) == pytest.approx((alpha, beta), abs=1e-9)
    assert fit.rmse < 1e-9
    noisy = y + 0.01 * torch.randn(40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fit2 = fit_gao(d, noisy, form)
    assert (fit2.alpha, fit2.beta) == pytest.approx((alpha, beta), abs=0.03)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_peak_and_fall_match_a_grid_search(form):
    fit = GaoFit(form, alpha=0.9, beta=0.3, rmse=0.0, n_points=10, d_max=8.0)
    d = torch.linspace(1e-6, 8.0, 400_001, dtype=torch.float64)
    r = fit.predict(d)
    i = int(r.argmax())
    assert fit.peak_d == pytest.approx(float(d[i]), abs=1e-4)
    assert fit.peak_gain == pytest.approx(float(r[i]), abs=1e-8)
    assert fit.fall == pytest.approx(float(r[i] - r[-1]), abs=1e-8)
    assert GaoFit(form, 0.9, 0.3, 0.0, 10, d_max=0.5).fall == 0.0  # not yet past the peak
    assert GaoFit(form, 0.9, -0.1, 0.0, 10, d_max=8.0).peak_d == math.inf  # no peak: still rising


def test_fit_validates_inputs():
    with pytest.raises(ValueError, match="form must be one of"):
        fit_gao([1, 2], [1, 2], "ppo")
    with pytest.raises(ValueError, match="same number"):
        fit_gao([1, 2, 3], [1, 2], "bon")
    with pytest.raises(ValueError, match="d must be finite and >= 0"):
        fit_gao([-1, 2], [1, 2], "rl")


def test_pair_accuracy_counts_untied_pairs_only():
    score = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 3.0])
    gold = torch.tensor([0.5, 0.1, 0.5, 0.1, -1.0, -1.0])  # right, wrong, tied
    assert pair_accuracy(score, gold) == 0.5
    assert math.isnan(pair_accuracy(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -1.0])))


# ---------------------------------------------------------------- lesson 08's checkers and the committed sweep

def test_lesson_08_checkers(capsys):
    from rlhf_nb.course.checks import check_bon_peak, check_kl_bon, check_later_peak, check_stop_step

    assert check_kl_bon(math.log(16) - 15 / 16) and not check_kl_bon(math.log(16)) and not check_kl_bon(None)
    assert check_bon_peak(lambda a, b: a / (2 * b)) and not check_bon_peak(lambda a, b: a / b)
    assert not check_bon_peak(lambda a, b: None)
    peaks = {250: 1.0, 1000: 2.5, 4000: 1.5}
    assert check_later_peak(1000, peaks) and not check_later_peak(4000, peaks) and not check_later_peak(7, peaks)
    assert check_stop_step(5, [0, 5, 10], [0.0, 0.3, 0.29]) and check_stop_step(10, [0, 5, 10], [0.0, 0.3, 0.29])
    assert not check_stop_step(0, [0, 5, 10], [0.0, 0.3, 0.29]) and not check_stop_step(3, [0, 5, 10], [0, 0.3, 0.1])
    out = capsys.readouterr().out
    assert out.count("✅ correct") == 5 and out.count("⏳ not attempted yet") == 2


def test_sweep_tables_from_a_synthetic_sweep():
    from rlhf_nb.overopt import fit_table, observed_peak, sweep_runs

    d = [math.sqrt(kl_bon(n)) for n in BON_NS]
    bon = {str(s): [{"n": n, "kl": x * x, "d": x, "proxy": x, "gold": -0.1 + float(gao_form(torch.tensor(x), 0.6, 0.2, "bon")) + 0.01 * s}
                    for n, x in zip(BON_NS, d)] for s in range(2)}
    steps = [{"step": i, "d": 0.5 * i, "kl": 0.25 * i * i, "proxy": i, "gold": float(gao_form(torch.tensor(0.5 * i), 0.5, 0.4, "rl"))}
             for i in range(10)]
    sweep = {"config": {"proxies": [10], "kl_coefs": [0.0]}, "bon": {"10": bon},
             "rl": [{"proxy": 10, "kl_coef": 0.0, "seed": s, "algo": "ppo", "rows": steps} for s in range(2)]}
    table = fit_table(sweep)
    assert [(r["method"], r["seeds"]) for r in table] == [("bon", 2), ("rl", 2)]
    assert (table[0]["alpha"], table[0]["beta"]) == pytest.approx((0.6, 0.2), abs=1e-3)
    assert (table[1]["alpha"], table[1]["beta"]) == pytest.approx((0.5, 0.4), abs=1e-3)
    peak = observed_peak(sweep_runs(sweep, "rl", 10))
    want = max(range(10), key=lambda i: steps[i]["gold"])
    assert peak["index"] == want and peak["fall"] == pytest.approx(steps[want]["gold"] - steps[-1]["gold"])
    with pytest.raises(ValueError, match="no rl runs for proxy 10, kl_coef 0.5"):
        sweep_runs(sweep, "rl", 10, 0.5)


@pytest.mark.parametrize("k", [250, 1000, 4000])
def test_committed_proxies_reproduce_their_held_out_accuracy(k):
    from rlhf_nb.overopt import proxy_pairs, load_proxy_metrics, proxy_dir
    from rlhf_nb.reward_model import evaluate, load_reward_model

    m = load_proxy_metrics(k)
    assert m["n_train_pairs"] == k and m["pairs"]["temperature"] == 0.15 and m["pairs"]["max_new_tokens"] == 12
    model, tok = load_reward_model(proxy_dir(k))
    got = evaluate(model, tok, proxy_pairs(k, "eval"))
    assert got["accuracy"] == pytest.approx(m["accuracy"], abs=1e-6)
    assert proxy_pairs(k) == proxy_pairs(4000)[:k]  # nested: the proxies differ only in how much data they saw


def test_builders_refuse_bad_flags_in_one_line(capsys):
    """Each value in-process (tests/test_cli_contract.py runs the real command line of both tools)."""
    import importlib

    for mod, args, flag in (("build_proxies", ["--sizes", "0"], "--sizes"),
                            ("build_proxies", ["--sizes", "5", "5"], "--sizes"),
                            ("overopt_sweep", ["--bon_samples", "10"], "--bon_samples"),
                            ("overopt_sweep", ["--kl_coefs", "-1"], "--kl_coefs"),
                            ("overopt_sweep", ["--steps", "0"], "--steps"),
                            ("overopt_sweep", ["--batch_size", "3"], "--batch_size"),
                            ("overopt_sweep", ["--proxies", "7"], "--proxies"),
                            ("overopt_sweep", ["--jobs", "0"], "--jobs"),
                            ("overopt_sweep", ["--parts", "bon", "--out", "/nonexistent/sweep.json"], "--parts")):
        with pytest.raises(SystemExit) as e:
            importlib.import_module(f"rlhf_nb.tools.{mod}").main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: {flag}") and err.count("\n") == 1, (args, err)


def test_rl_curve_scores_the_policy_from_step_0():
    from rlhf_nb.config import RunConfig
    from rlhf_nb.overopt import proxy_dir, rl_curve
    from rlhf_nb.rewards import LearnedReward

    cfg = RunConfig(reward="learned", reward_model=proxy_dir(250), batch_size=4, steps_per_epoch=3, max_new_tokens=6,
                    num_minibatches=1, ppo_epochs=1, progress=False, seed=2)
    prompts = ["The acting was", "The acting was", "This movie", "This movie"]
    judges = {k: LearnedReward(proxy_dir(k)) for k in (250, 4000)}
    rows = rl_curve(cfg, eval_every=2, eval_prompts=prompts, judges=judges)
    assert [r["step"] for r in rows] == [0, 2, 3]
    assert rows[0]["kl"] == 0.0 and rows[0]["d"] == 0.0  # the policy is the reference at step 0
    assert "objective/gold_scores" in rows[1] and "objective/gold_scores" not in rows[0]
    for r in rows:
        assert -1 <= r["gold"] <= 1 and 0 <= r["well_formed"] <= 1 and r["disagreement"] >= 0
    assert rows == rl_curve(cfg, eval_every=2, eval_prompts=prompts, judges=judges)  # same seed, same rows


def test_base_completions_and_score_samples_shapes():
    from rlhf_nb.gold import gold_text_scores
    from rlhf_nb.overopt import base_completions, score_samples
    from rlhf_nb.text import join_text

    prompts = ["The plot was", "The cast"]
    comps = base_completions(prompts, 5, max_new_tokens=6, seed=0)
    assert [len(c) for c in comps] == [5, 5] and comps == base_completions(prompts, 5, max_new_tokens=6, seed=0)
    s = score_samples(prompts, comps, {"len": lambda p, c: torch.tensor([float(len(x)) for x in c])})
    assert s["len"].shape == s["gold"].shape == (2, 5)
    assert s["len"][1, 2] == len(comps[1][2])
    assert s["gold"][0, 3] == gold_text_scores([join_text(prompts[0], comps[0][3])])[0]


def test_score_samples_scores_each_distinct_pair_once():
    from rlhf_nb.overopt import score_samples

    seen = []

    def judge(p, c):
        seen.extend(zip(p, c))
        return torch.tensor([float(len(x) + 10 * len(y)) for x, y in zip(p, c)])

    prompts = ["A", "BB"]
    comps = [["x", "yy", "x", "x"], ["x", "yy", "yy", "z"]]  # "x" under two prompts is two different pairs
    s = score_samples(prompts, comps, {"j": judge})
    assert sorted(seen) == sorted({("A", "x"), ("A", "yy"), ("BB", "x"), ("BB", "yy"), ("BB", "z")})
    want = [[float(len(p) + 10 * len(c)) for c in cs] for p, cs in zip(prompts, comps)]
    assert s["j"].tolist() == want
