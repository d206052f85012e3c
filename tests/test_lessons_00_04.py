"""Lessons 00, 02, 03 and 04: their checkers (right passes, each typical slip fails naming the slip, a stub is 'not
attempted') and their helpers (stored smoke seeds, the KL replay, label-noise ceilings, the controller table)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf_nb.advantages import compute_gae
from rlhf_nb.course import checks
from rlhf_nb.masking import masked_whiten


def verdict(capsys, ok: bool, *reason: str) -> str:
    out = capsys.readouterr().out
    assert out.startswith(checks.OK if ok else checks.BAD), out
    for r in reason:
        assert r in out, out
    return out


# ------------------------------------------------------------------ lesson 00

def _history(kls, beta=0.05, scores=None):
    scores = scores or [0.1 * i for i in range(len(kls))]
    return [{"step": i + 1, "objective/kl": k, "objective/scores": s, "objective/rlhf_reward": s - beta * k,
             "objective/kl_coef": beta, "policy/entropy": 1.5 - 0.01 * i}
            for i, (k, s) in enumerate(zip(kls, scores))]


def test_check_kl_cost(capsys):
    h = _history([0.0, 1.0, 2.0, 3.0, 2.0, 2.5, 3.5, 4.0])
    kl5 = (3.0 + 2.0 + 2.5 + 3.5 + 4.0) / 5
    assert checks.check_kl_cost(None, h, 0.05) is False
    assert capsys.readouterr().out.startswith(checks.TODO)
    assert checks.check_kl_cost(0.05 * kl5, h, 0.05)
    verdict(capsys, True, "β · KL", "objective/rlhf_reward")
    cases = [(kl5, "multiply it by β"), (0.05 * 4.0, "last step alone"), (-0.05 * kl5, "positive number"),
             (sum(r["objective/rlhf_reward"] for r in h[-5:]) / 5, "what the completions kept"),
             (sum(r["objective/scores"] for r in h[-5:]) / 5, "the score itself"), (1.234, "β · (mean KL")]
    for answer, reason in cases:
        assert not checks.check_kl_cost(answer, h, 0.05)
        verdict(capsys, False, reason)


def test_stored_smoke_seeds_are_the_notebooks_defaults():
    """The asset lesson 00 shows is the run its parameters cell describes (re-run `make smoke-seeds` if not)."""
    from rlhf_nb.course.experiments import SMOKE_SEEDS_PATH
    from rlhf_nb.tools.smoke_seeds import notebook_defaults

    raw = json.loads(SMOKE_SEEDS_PATH.read_text())
    assert raw["params"] == notebook_defaults()
    assert [r["seed"] for r in raw["runs"]] == [0, 1, 2]
    assert all(len(r["history"]["step"]) == raw["params"]["steps"] and r["warnings"] == [] for r in raw["runs"])


def _stored(tmp_path, params, histories):
    from rlhf_nb.course.experiments import ExperimentResult, result_to_dict

    runs = [result_to_dict(ExperimentResult(params["kl_coef"], params["batch_size"], params["steps"], seed, h, [], [],
                                            {})) for seed, h in histories.items()]
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"command": "test", "params": params, "runs": runs}))
    return path


def test_smoke_seed_runs_compares_the_live_run_with_its_stored_twin(tmp_path):
    from rlhf_nb.course.experiments import history_difference, largest_kl_step, seeds_table, smoke_seed_runs

    params = {"kl_coef": 0.05, "batch_size": 4, "steps": 4, "max_new_tokens": 6, "lr_warmup_steps": 0,
              "reward": "sentiment"}
    hists = {0: _history([0.0, 0.5, 1.0, 1.5]), 1: _history([0.0, 3.0, 0.2, 1.0])}
    path = _stored(tmp_path, params, hists)
    runs, line = smoke_seed_runs(params, hists[0], 0, path)
    assert [r.seed for r in runs] == [0, 1] and "the same run, step for step" in line
    runs, line = smoke_seed_runs(params, _history([0.0, 0.5, 1.0, 1.6]), 0, path)
    assert "NOT the same run" in line and history_difference(_history([0.0, 0.5, 1.0, 1.6]), runs[0]) > 0.09
    assert "not among them" in smoke_seed_runs(params, hists[0], 7, path)[1]
    runs, line = smoke_seed_runs({**params, "kl_coef": 0.5}, hists[0], 0, path)
    assert runs == [] and "kl_coef 0.5 (stored: 0.05)" in line
    assert largest_kl_step(smoke_seed_runs(params, hists[0], 0, path)[0], first=4) == (1, 2)
    table = seeds_table(smoke_seed_runs(params, hists[0], 0, path)[0], last=2)
    assert table.loc[1, "largest KL"] == 3.0 and table.loc[1, "at step"] == 2
    assert table.loc[0, "KL, last 2"] == pytest.approx(1.25) and list(table["warnings"]) == [0, 0]


def test_replay_step_kl_reproduces_the_logged_kl():
    from rlhf_nb.config import RunConfig
    from rlhf_nb.course.experiments import replay_step_kl
    from rlhf_nb.train import train

    cfg = RunConfig(seed=3, batch_size=4, max_new_tokens=6, steps_per_epoch=3, progress=False)
    logged = train(cfg, write_run=False).history[1]["objective/kl"]
    r = replay_step_kl(cfg, 2, top=2)
    assert r["logged"] == logged and r["mean"] == pytest.approx(logged, abs=1e-6)
    kls = [c["KL"] for c in r["top"]]
    assert len(kls) == 2 and kls[0] >= kls[1]
    assert r["mean"] * 4 == pytest.approx(sum(kls) + r["mean without top"] * 2, abs=1e-4)


# ------------------------------------------------------------------ lesson 02

def _pairs(gaps):
    return [{"prompt": "p", "chosen": "a", "rejected": "b", "gold_chosen": g, "gold_rejected": 0.0} for g in gaps]


def test_pair_accuracies_against_gold_and_labels():
    from rlhf_nb.course.label_noise import pair_accuracies

    pairs = _pairs([0.5, -0.2, 0.0, 0.3])  # the second pair's label goes against the gold; the third is a gold tie
    gold = pair_accuracies(pairs, [p["gold_chosen"] for p in pairs], [0.0] * 4)
    assert gold == {"vs gold": 1.0, "vs labels": pytest.approx(2 / 3), "pairs": 3}
    always_chosen = pair_accuracies(pairs, [1.0] * 4, [0.0] * 4)
    assert always_chosen["vs labels"] == 1.0 and always_chosen["vs gold"] == pytest.approx(2 / 3)
    tie = pair_accuracies(pairs, [0.0] * 4, [0.0] * 4)
    assert tie["vs gold"] == 0.5 and tie["vs labels"] == 0.5  # a scorer's tie counts half


def test_noise_ceilings():
    from rlhf_nb.course.label_noise import noise_ceilings

    pairs = _pairs([0.3, -0.1, 0.0])
    t0, t15, big = noise_ceilings(pairs, (0.0, 0.15, 100.0))
    assert t0["best vs labels"] == 1.0 and t0["loss floor"] == pytest.approx(math.log(2) / 3)  # only the tie pays
    want = (torch.sigmoid(torch.tensor(0.3 / 0.15)) + torch.sigmoid(torch.tensor(0.1 / 0.15))).item() / 2
    assert t15["best vs labels"] == pytest.approx(want, abs=1e-6)
    assert 0.5 < big["best vs labels"] < 0.51 and big["loss floor"] == pytest.approx(math.log(2), abs=1e-3)
    assert all(r["best vs gold"] == 1.0 for r in (t0, t15, big))


# ------------------------------------------------------------------ lesson 03

def _gae_loop(rewards, values, mask, gamma, lam, g_delta=True, g_trace=True, v_from_padding=False):
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum())
        next_adv = 0.0
        next_v = values[b, n] if v_from_padding and n < rewards.shape[1] else 0.0
        for t in reversed(range(n)):
            delta = rewards[b, t] + (gamma if g_delta else 1.0) * next_v - values[b, t]
            next_adv = delta + (gamma if g_trace else 1.0) * lam * next_adv
            adv[b, t], next_v = next_adv, values[b, t]
    return adv


@pytest.mark.parametrize("slip, reason", [
    ({"g_trace": False}, "missing the γ of γλ"),
    ({"g_delta": False}, "δ_t = r_t + V_{t+1} − V_t is missing the γ"),
    ({"g_delta": False, "g_trace": False}, "γ is missing twice"),
    ({"v_from_padding": True}, "V_{t+1} = 0"),
])
def test_check_gae_names_the_slip(capsys, slip, reason):
    assert checks.check_gae(_gae_loop)
    verdict(capsys, True)
    assert not checks.check_gae(lambda *a: _gae_loop(*a, **slip))
    out = verdict(capsys, False, reason)
    if slip != {"v_from_padding": True}:
        assert "γ=0.9" in out and "V after the last real token" not in out  # not the old, wrong hint


def test_check_gae_padding_and_other_errors(capsys):
    assert not checks.check_gae(lambda r, v, m, g, l: compute_gae(r, v, m, g, l)[0] + (1 - m))
    verdict(capsys, False, "padding entries must be 0")
    assert not checks.check_gae(lambda r, v, m, g, l: compute_gae(r, v, m, g, 1.0)[0])
    verdict(capsys, False, "compare your loop with")


def test_check_whiten_explains_each_slip(capsys):
    def biased(x, m):
        real = x[m.bool()]
        return (x - real.mean()) / torch.sqrt(real.var(unbiased=False) + 1e-8) * m

    assert checks.check_whiten(masked_whiten)
    verdict(capsys, True)
    assert not checks.check_whiten(biased)
    verdict(capsys, False, "biased variance", "n = 12", "1.0445")
    assert not checks.check_whiten(lambda x, m: (x - x.mean()) / torch.sqrt(x.var() + 1e-8) * m)
    verdict(capsys, False, "all 18 entries, 6 of them padding", "not 0 and 1")
    assert not checks.check_whiten(lambda x, m: (x - x.mean()) / x.std())  # and padding left non-zero
    verdict(capsys, False, "6 of them padding")
    assert not checks.check_whiten(lambda x, m: x / x[m.bool()].std() * m)
    verdict(capsys, False, "subtract the mean")
    assert not checks.check_whiten(lambda x, m: masked_whiten(x, m) + (1 - m))
    verdict(capsys, False, "padding entries must be 0")


# ------------------------------------------------------------------ lesson 04

def test_controller_table():
    from rlhf_nb.course.experiments import controller_table

    h = _history([0.0, 0.5, 1.5, 0.8, 2.0])
    for r, b in zip(h, (0.05, 0.04, 0.03, 0.035, 0.04)):
        r["objective/kl_coef"] = b
    t = controller_table({"seed 0": h}, target=1.0, last=2)
    row = t.loc["seed 0"]
    assert row["lowest β"] == 0.03 and row["at step"] == 3 and row["β at step 5"] == 0.04
    assert row["first step KL > target"] == 3 and row["steps with KL > target"] == 2
    assert row["KL, last 2 steps"] == pytest.approx(1.4)


def test_plot_kl_controller_takes_the_logged_steps():
    import matplotlib

    matplotlib.use("Agg")
    from rlhf_nb.course.plots import plot_kl_controller

    fig = plot_kl_controller({"a": [0.1, 0.2, 0.3]}, {"a": [1.0, 1.1, 1.2]}, target=0.2, steps=[1, 2, 3])
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3] and list(fig.axes[1].lines[0].get_xdata()) == [1, 2, 3]
    fig = plot_kl_controller({"a": [0.1, 0.2]}, {"a": [1.0, 1.1]})
    assert list(fig.axes[0].lines[0].get_xdata()) == [0, 1]
