"""render_markdown on a synthetic compare_grpo result: the table, the ratios, the PPO line and the PNG (no training)."""
from rlhf_nb.tools.bench_trl import BENCH_SETTINGS, _cfg, _summary, compare_grpo, render_markdown


def _history(step_s, rewards, kl_scale=1.0):
    rows, t = [], 0.0
    for i, (s, r) in enumerate(zip(step_s, rewards)):
        t += s
        rows.append({"step": i + 1, "reward": r, "kl": 0.01 * i * kl_scale, "kl_seq": 0.05 * i * kl_scale,
                     "step_s": s, "elapsed_s": t, "tokens": 400.0})
    return rows


def _result(include_ppo=True):
    p = {k: v for k, v in BENCH_SETTINGS.items() if k != "include_ppo"}
    ours = {"history": _history([0.4] * 6, [0.0, 0.02, 0.05, 0.08, 0.1, 0.12]), "setup_s": 4.0, "peak_rss_mb": 500.0}
    trl = {"history": _history([0.5] * 6, [0.01, 0.0, 0.04, 0.06, 0.09, 0.1], kl_scale=1e4), "setup_s": 5.0,
           "peak_rss_mb": 625.0}
    budget = min(ours["history"][-1]["elapsed_s"], trl["history"][-1]["elapsed_s"])
    so, st = _summary(ours, budget), _summary(trl, budget)
    res = {"params": p, "budget_s": budget, "rss_note": "peak RSS of each system's own child process (ru_maxrss)",
           "ratios": {k: so[k] / st[k] for k in ("median_step_s", "tokens_per_s", "peak_rss_mb", "setup_s")},
           "rlhf_nb": {"history": ours["history"], "summary": so}, "trl": {"history": trl["history"], "summary": st}}
    if include_ppo:
        ppo = {"history": _history([0.6] * 6, [0.0] * 6), "setup_s": 3.0, "peak_rss_mb": None}
        res["rlhf_nb_ppo"] = {"history": ppo["history"], "summary": _summary(ppo, budget)}
    return res


def test_render_markdown_table_and_ratios(tmp_path):
    png = tmp_path / "bench_trl_curves.png"
    lines = render_markdown(_result(), curves_png=png)
    text = "\n".join(lines)
    assert lines[0] == "## rlhf_nb vs TRL (GRPO), same machine, same run"
    assert "| | rlhf_nb | TRL | rlhf_nb / TRL |" in lines
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in lines if line.startswith("| ")}
    assert row["median seconds per step"] == ["0.400", "0.500", "0.80×"]
    assert row["peak RSS (MB)"] == ["500", "625", "0.80×"]
    assert row["setup seconds"] == ["4.00", "5.00", "0.80×"]
    assert row["sampled tokens / s"] == ["1000", "800", "1.25×"]
    assert row["reward, last step"] == ["+0.120", "+0.100", ""]
    assert any(k.startswith("reward at 2.4 s") for k in row)
    assert "8 prompts × 8 generations = 64 completions" in text
    assert "rlhf_nb's PPO" in text and "1.50× rlhf_nb's GRPO step" in text
    assert "![" in text and "(bench_trl_curves.png)" in text and png.stat().st_size > 1000
    # the "why" paragraph comes from the numbers: rlhf_nb is faster here, and TRL's KL peak is flagged
    assert "rlhf_nb is 1.25× faster than TRL" in text
    assert "TRL's logged KL peaks at" in text


def test_render_markdown_without_ppo_or_png():
    res = _result(include_ppo=False)
    res["ratios"]["median_step_s"] = 2.0  # pretend TRL is twice as fast: the explanation flips
    text = "\n".join(render_markdown(res, curves_png=None))
    assert "rlhf_nb's PPO" not in text and "![" not in text
    assert "TRL is 2.00× faster than rlhf_nb" in text and "difference 8" in text


def test_bench_settings_are_a_valid_call():
    assert set(BENCH_SETTINGS) <= set(compare_grpo.__code__.co_varnames[:compare_grpo.__code__.co_argcount])
    p = {k: v for k, v in BENCH_SETTINGS.items() if k != "include_ppo"}
    grpo, ppo = _cfg(p), _cfg(p, "gae")
    assert grpo.batch_size * grpo.num_generations == ppo.batch_size * ppo.num_generations  # same completions per step
    assert (grpo.max_new_tokens, grpo.kl_coef, grpo.learning_rate) == (ppo.max_new_tokens, ppo.kl_coef, ppo.learning_rate)


def test_render_markdown_calls_a_small_gap_noise():
    res = _result(include_ppo=False)
    res["ratios"]["median_step_s"] = 1.04
    text = "\n".join(render_markdown(res, curves_png=None))
    assert "within 10 % of each other" in text and "faster than" not in text
