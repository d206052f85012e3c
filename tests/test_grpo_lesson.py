"""Lesson 11's helpers: the exact gradient of each KL placement, the sweep's tool and its committed file, the knob
table drawn from the cross-checked bridge, and the lesson's checkers."""
from __future__ import annotations

import json
import math

import pytest
import torch

import rlhf_nb.tools.grpo_sweep as tool
from rlhf_nb.course import grpo_lesson as gl
from rlhf_nb.course.checks import check_biased_placements, check_dr_grpo
from rlhf_nb.ppo import aggregate_loss


def _case(seed=0, rows=3, v=13):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, v, generator=g), torch.randn(rows, v, generator=g)


def test_the_true_gradient_is_the_closed_form():
    z, zr = _case()
    p, lp, lr = torch.softmax(z, -1), torch.log_softmax(z, -1), torch.log_softmax(zr, -1)
    kl = (p * (lp - lr)).sum(-1, keepdim=True)
    assert torch.allclose(gl.true_kl_gradient(z, zr), p * (lp - lr - kl), atol=1e-6)
    assert torch.allclose(gl._forward_kl_gradient(z, zr), p - torch.softmax(zr, -1), atol=1e-6)


def test_which_placements_follow_the_reverse_kl_exactly():
    z, zr = _case(1)
    truth = gl.true_kl_gradient(z, zr)
    for p in ("k1 in reward", "k3 in loss × ratio"):
        assert gl.relative_error(gl.expected_gradient(z, zr, p), truth) < 1e-5, p
    k3 = gl.expected_gradient(z, zr, "k3 in loss")
    assert torch.allclose(k3, gl._forward_kl_gradient(z, zr), atol=1e-6)  # the forward KL's gradient
    assert gl.relative_error(k3, truth) > 0.1
    assert gl.expected_gradient(z, zr, "k1 in loss").abs().max() < 1e-6  # Σ π ∇log π = 0
    with pytest.raises(ValueError, match="placement must be one of"):
        gl.placement_surrogate(z, zr, "k2 in loss")


def test_sampled_estimates_average_to_the_expected_gradient():
    z, zr = _case(2, rows=2, v=7)
    g = torch.Generator().manual_seed(0)
    for p in gl.PLACEMENTS[:3]:
        mean = torch.stack([gl.sampled_gradient(z, zr, p, 256, g) for _ in range(40)]).mean(0)
        exact = gl.expected_gradient(z, zr, p)
        assert gl.relative_error(mean, exact) < 0.1, p


def test_the_gradient_table_has_a_row_per_placement_and_flags_the_biased_ones():
    z, zr = _case(3)
    t = gl.gradient_table(z, zr, n=16, repeats=5)
    assert list(t.index) == list(gl.PLACEMENTS)
    assert t.loc["k1 in reward", "rel. error"] < 1e-3 and t.loc["k3 in loss × ratio", "rel. error"] < 1e-3
    assert t.loc["k3 in loss", "rel. error"] > 0.1 and t.loc["k1 in loss", "rel. error"] == pytest.approx(1.0, abs=1e-3)
    assert math.isnan(t.loc["k1 in loss", "cos(E∇, ∇KL(π‖ρ))"])  # a zero vector has no direction


def test_the_knob_table_comes_from_the_bridge():
    from rlhf_nb.bridges.trl import KNOB_MAP

    t = gl.knob_table()
    for flag, row in t.iterrows():
        assert (row["TRL GRPOConfig"], row["carried over"]) == KNOB_MAP[flag[2:]]
    assert t.loc["--loss_type", "TRL GRPOConfig"] == "loss_type"
    assert t.loc["--kl_loss_ratio", "TRL GRPOConfig"] == "use_bias_correction_kl"


def test_length_score_correlation():
    n = torch.arange(10.0)
    assert gl.length_score_correlation(2 * n + 1, n) == pytest.approx(1.0)
    assert gl.length_score_correlation(-n, n) == pytest.approx(-1.0)


def test_spread_and_tables_skip_nan_steps():
    from rlhf_nb.course.experiments import ExperimentResult

    def run(seed, vals):
        h = [{"step": i + 1, "rollout/completion_len_pos_adv": v, "rollout/completion_len_neg_adv": v + 1,
              "rollout/eos_frac": 1.0} for i, v in enumerate(vals)]
        return ExperimentResult(0.05, 16, len(vals), seed, h, [], [])

    runs = {"bnpo": [run(0, [1.0, math.nan]), run(1, [3.0, 3.0])]}
    s = gl.spread(runs["bnpo"], "rollout/completion_len_pos_adv")
    assert (s["mean"], s["min"], s["max"]) == (2.0, 1.0, 3.0)
    t = gl.length_table(runs, labels=("bnpo",))
    assert t.loc["bnpo", "gap (A<0 − A>0)"] == "1.00 [1.00, 1.00]"


@pytest.mark.slow
def test_a_stored_run_round_trips_and_a_rerun_matches_it(monkeypatch):
    monkeypatch.setitem(gl.GRPO_RUN, "steps", 2)
    r = gl.run_variant("grpo", 0)
    back = gl.result_from_dict(json.loads(json.dumps(gl.grpo_result_to_dict(r))))
    assert set(gl.GRPO_KEYS) - {"loss/kl"} <= set(back.history[0])
    assert gl.difference(gl.run_variant("grpo", 0), back) == 0.0
    assert gl.difference(gl.run_variant("grpo", 1), back) > 1e-3


def test_variant_settings_names_the_labels():
    assert gl.variant_settings("dr_grpo")["loss_type"] == "dr_grpo"
    assert gl.variant_settings("TRL defaults (dapo, β = 0)")["kl_coef"] == 0.0  # a variant may set its own β
    with pytest.raises(KeyError, match="the variants are"):
        gl.variant_settings("nope")


# ---- the tool ---------------------------------------------------------------------------------------------------

def test_the_job_list_covers_every_variant_and_seed():
    jobs = tool.jobs_list()
    assert [(lab, s) for lab, s, _ in jobs] == [(lab, s) for lab in gl.GRPO_VARIANTS for s in gl.GRPO_SEEDS]
    assert all(settings == gl.variant_settings(lab) for lab, _, settings in jobs)


# ---- the committed file: what lesson 11 reads and says -------------------------------------------------------------

@pytest.fixture(scope="module")
def stored():
    return gl.load_grpo_sweep()


def test_the_committed_sweep_was_run_with_todays_settings(stored):
    assert stored["settings"] == gl.GRPO_RUN and stored["variants"] == gl.GRPO_VARIANTS
    assert stored["beta"] == gl.GRPO_BETA and list(stored["runs"]) == list(gl.GRPO_VARIANTS)
    for label, runs in stored["runs"].items():
        assert [r.seed for r in runs] == list(gl.GRPO_SEEDS), label
        assert all(len(r.history) == gl.GRPO_RUN["steps"] for r in runs), label
    assert stored["optimum"]["n"] == gl.OPTIMUM_SAMPLES and stored["optimum"]["J_star"] > 0


# the variants whose warnings lesson 11 lists and explains: k3 in the loss lets the policy run away at β = 0.05, and no
# completion of this model ends on the phrase, so every phrase group ties (zero advantages)
EXPLAINED = {"k3 in loss × ratio": {"kl_spike", "kl_runaway", "entropy_collapse", "scores_std_collapse"},
             "k3 in loss": {"kl_spike", "kl_runaway", "entropy_collapse", "scores_std_collapse"},
             "phrase reward": {"no_gradient"}, "phrase reward + dynamic sampling": {"no_gradient"},
             # TRL's defaults train with no KL term: nothing holds the policy, it hacks the sentiment reward
             "TRL defaults (dapo, β = 0)": {"kl_runaway", "scores_std_collapse", "entropy_collapse", "never_stops"}}


def test_only_the_runs_the_lesson_explains_warn_and_only_as_it_says(stored):
    from rlhf_nb.course.experiments import warning_kinds

    for label, runs in stored["runs"].items():
        kinds = {k for r in runs for k in warning_kinds(r)}
        assert kinds <= EXPLAINED.get(label, set()), (label, kinds)


def test_what_the_lesson_says_about_the_stored_sweep(stored):
    runs = stored["runs"]
    # sentiment scores almost never tie: dynamic sampling drops (nearly) nothing; the binary phrase reward ties often
    assert max(gl.run_mean(r, "rollout/zero_std_frac") for r in runs["bnpo"]) < 0.05
    assert min(gl.run_mean(r, "rollout/zero_std_frac") for r in runs["phrase reward"]) > 0.2
    # the per-sequence mean (grpo) and the others: the lengths by sign of the advantage are all recorded
    for lab in ("bnpo", "grpo", "dr_grpo"):
        assert all(not math.isnan(gl.run_mean(r, "rollout/completion_len_neg_adv")) for r in runs[lab])
    # no length bias in length: the gap (A < 0 side − A > 0 side) stays within ±0.25 tokens, slightly negative for grpo
    for lab in ("bnpo", "grpo", "dr_grpo"):
        for r in runs[lab]:
            gap = run_gap(r)
            assert abs(gap) < 0.25 and (lab != "grpo" or gap < 0), (lab, r.seed, gap)
    # k3 in the loss at β = 0.05: the KL runs away (its bands separate from k1-in-the-reward's)
    for lab in ("k3 in loss × ratio", "k3 in loss"):
        assert "bands separate" in gl.verdict(runs, lab, "bnpo", "objective/kl")
    assert "overlap" in gl.verdict(runs, "clip-higher 0.28", "bnpo", "policy/entropy")
    # std scaling: no band of scale none or scale batch separates from bnpo's; batch ends with a higher score on every
    # seed (the lead the lesson names), its J/J* range still overlapping bnpo's
    for lab in ("scale none", "scale batch"):
        for key in ("objective/scores", "objective/kl"):
            assert "overlap" in gl.verdict(runs, lab, "bnpo", key), (lab, key)
    assert min(r.final_reward for r in runs["scale batch"]) > max(r.final_reward for r in runs["bnpo"])
    # TRL's defaults (β = 0): the KL runs past even the k3-in-the-loss runs', at a score near the maximum
    assert "bands separate" in gl.verdict(runs, "TRL defaults (dapo, β = 0)", "k3 in loss × ratio", "objective/kl")
    assert all(r.final_reward > 0.95 and r.final_kl > 50 for r in runs["TRL defaults (dapo, β = 0)"])


def test_group_weights_follow_the_scaling():
    # two groups of the same shape, one ten times wider: dividing by each group's std gives them equal push; dividing
    # by one number (batch) or by nothing keeps the wide group's ten times larger push
    scores = torch.tensor([0.50, 0.51, 0.52, 0.53, -0.4, -0.3, -0.2, -0.1], dtype=torch.float64)
    table = gl.group_weight_table(scores, 4, bins=2)
    # equal up to the divisor's ε = 1e-4, which weighs more against the narrow group's std of 0.013
    assert table["share of |A|, group"].tolist() == pytest.approx([0.5, 0.5], abs=5e-3)
    assert table["share of |A|, none"].tolist() == pytest.approx([1 / 11, 10 / 11])
    assert table["share of |A|, batch"].tolist() == pytest.approx(table["share of |A|, none"].tolist())
    assert table["groups"].tolist() == [1, 1] and table["group std"].iloc[0].startswith("0.013")


def run_gap(r, last=20):
    return gl.run_mean(r, "rollout/completion_len_neg_adv", last) - gl.run_mean(r, "rollout/completion_len_pos_adv", last)


# ---- the checkers --------------------------------------------------------------------------------------------------

def test_check_dr_grpo(capsys):
    assert check_dr_grpo(lambda p, m, L: aggregate_loss(p, m, "dr_grpo", max_len=L))
    assert not check_dr_grpo(lambda p, m, L: aggregate_loss(p, m, "grpo"))
    assert "length bias" in capsys.readouterr().out
    assert not check_dr_grpo(lambda p, m, L: aggregate_loss(p, m, "bnpo"))
    assert "bnpo" in capsys.readouterr().out
    assert not check_dr_grpo(None)
    assert "not attempted" in capsys.readouterr().out


def test_check_biased_placements(capsys):
    assert check_biased_placements({"k3 in loss", "k1 in loss"})
    assert "forward KL" in capsys.readouterr().out
    assert not check_biased_placements({"k3 in loss"})
    assert "biased but not named: ['k1 in loss']" in capsys.readouterr().out
    assert not check_biased_placements("k3 in loss")
    assert not check_biased_placements({"k9"})
    assert not check_biased_placements(None)
