"""The trainer's live warnings: each rule on hand-made histories, once per kind, and live on real broken runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from rlhf_nb import diagnostics, faults
from rlhf_nb.diagnostics import DOC, PREFIX, RULES, Diagnostics

ROOT = Path(__file__).resolve().parents[1]

HEALTHY = {"objective/kl": 0.0, "objective/scores": 0.1, "objective/scores_std": 0.4, "policy/entropy": 1.6,
           "policy/approx_kl": 0.01, "policy/clipfrac": 0.1, "policy/ratio": 1.0, "policy/grad_norm": 1.5,
           "rollout/eos_frac": 0.9, "rollout/completion_len": 5.0, "loss/kl": 0.01}


class _Cfg:
    max_new_tokens = 8


def feed(rows: list[dict]) -> list[str]:
    """Run Diagnostics over steps 1..n, each row overriding the healthy metrics."""
    d, out = Diagnostics(_Cfg()), []
    for i, row in enumerate(rows, start=1):
        out += d.update(i, {**HEALTHY, **row})
    return out


def kinds(lines: list[str]) -> list[str]:
    return [re.search(r"\[(\w+)\]", line).group(1) for line in lines]


def test_a_healthy_run_gives_no_warning():
    rows = [{"objective/kl": 0.0}] + [{"objective/kl": 0.3 * i, "objective/scores": 0.1 + 0.02 * i,
                                       "policy/entropy": 1.6 - 0.02 * i} for i in range(1, 30)]
    rows[5] = {"policy/approx_kl": 0.73, "policy/ratio": 1.55}  # one spiky step, as lesson 00's run has at step 5
    rows[9] = {"objective/kl": -0.3}  # one negative batch estimate
    assert feed(rows) == []


@pytest.mark.parametrize("kind, rows", [
    ("negative_kl", [{}] + [{"objective/kl": -0.5}] * 3),
    ("kl_at_first_step", [{"objective/kl": 2.9}]),
    ("kl_spike", [{}, {"loss/kl": 185.0}]),
    ("kl_runaway", [{}] + [{"objective/kl": 60.0, "rollout/completion_len": 8.0}] * 3),
    ("ratio_off", [{}] + [{"policy/ratio": 15.0}] * 2),
    ("update_too_large", [{}] + [{"policy/approx_kl": 4.8}] * 2),
    ("update_too_large", [{}] + [{"policy/clipfrac": 0.45}] * 2),
    ("entropy_collapse", [{}, {"policy/entropy": 0.2}]),
    ("scores_std_collapse", [{}] * 3 + [{"objective/scores": 0.5, "objective/scores_std": 0.05,
                                         "objective/kl": 20.0}] * 2),
    ("never_stops", [{}] + [{"rollout/eos_frac": 0.0, "rollout/completion_len": 8.0}] * 3),
    ("no_gradient", [{}] + [{"policy/grad_norm": 0.0}] * 2),
])
def test_each_rule_fires_on_its_sign(kind, rows):
    assert kind in kinds(feed(rows))
    assert kind not in kinds(feed(rows[:-1])) or kind == "kl_at_first_step"  # one step short: not yet


def test_signs_that_must_last_do_not_fire_on_one_step():
    assert feed([{}, {"policy/approx_kl": 4.8}, {}]) == []
    assert feed([{}, {"objective/kl": -0.5}, {"objective/kl": -0.5}, {}]) == []
    assert feed([{}, {"policy/grad_norm": 0.0}, {}]) == []
    # entropy_collapse needs the fall, scores_std_collapse needs the score to rise too
    assert "scores_std_collapse" not in kinds(feed([{}] * 3 + [{"objective/scores_std": 0.05, "objective/kl": 20.0}] * 3))


def test_nearing_the_optimum_is_not_reward_hacking():
    """π* itself has a narrow score spread (0.11 at β = 0.05 against the base model's 0.42 on the sentiment task), so
    a spread that falls while the score rises is a warning only at a KL per token no regularised optimum pays."""
    near_optimum = {"objective/scores": 0.7, "objective/scores_std": 0.11, "objective/kl": 2.6}  # 0.52 nats a token
    assert "scores_std_collapse" not in kinds(feed([{}] * 3 + [near_optimum] * 5))
    overshoot = {**near_optimum, "objective/kl": 8.0}  # 1.6 a token: lesson 06's β = 0.02 runs, J/J* 0.77-0.96
    assert "scores_std_collapse" not in kinds(feed([{}] * 3 + [overshoot] * 5))
    hacked = {**near_optimum, "objective/kl": 55.0}  # 11 nats a token, as lesson 10's reward-hacking run
    assert "scores_std_collapse" in kinds(feed([{}] * 3 + [hacked] * 5))


def test_each_kind_warns_once_in_one_line_that_names_cause_and_section():
    lines = feed([{}] + [{"policy/grad_norm": 0.0}] * 10)
    assert len(lines) == 1
    line = lines[0]
    assert "\n" not in line and line.startswith(f"{PREFIX} [no_gradient] step 3: policy/grad_norm")
    assert "likely cause:" in line and f"{DOC}#zero-advantages" in line


def test_every_section_a_warning_names_exists_in_the_doc():
    doc = (ROOT / "docs" / "troubleshooting.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^## (.+)$", doc, flags=re.M)}
    for rule in RULES:
        assert rule.section in anchors, f"{rule.kind} points at #{rule.section}, which docs/troubleshooting.md lacks"
    for f in faults.FAULTS.values():
        assert f.section in anchors, f"fault {f.name} points at #{f.section}"
    assert "docs/troubleshooting.md" in (ROOT / "README.md").read_text()


def test_a_missing_or_nan_metric_never_fires():
    d = Diagnostics(_Cfg())
    assert d.update(1, {"objective/kl": 0.0}) == []  # a run that logs few metrics
    assert d.update(2, {**HEALTHY, "objective/kl": float("nan")}) == []
    assert Diagnostics(None).update(1, {**HEALTHY, "rollout/eos_frac": 0.0, "rollout/completion_len": 8.0}) == []


# ------------------------------------------------------------------ live: the trainer prints them on real broken runs

@pytest.mark.parametrize("fault, steps, expected", [
    ("dropout_on", 2, {"kl_at_first_step"}),
    ("lr_x30", 4, {"update_too_large", "entropy_collapse"}),
    ("grpo_same_scores", 2, {"no_gradient"}),
    ("no_position_ids", 3, {"kl_spike"}),
])
def test_the_trainer_warns_live_on_broken_runs_and_not_on_their_healthy_twins(fault, steps, expected):
    cfg = faults.demo_config(fault, steps_per_epoch=steps)
    broken, healthy = faults.run(cfg, fault), faults.run(cfg)
    assert expected <= set(kinds(broken.warnings)), broken.warnings
    assert len(kinds(broken.warnings)) == len(set(kinds(broken.warnings)))  # once per kind
    assert healthy.warnings == []


def test_the_warning_goes_to_stderr_and_to_train_log(tmp_path, capsys):
    from rlhf_nb.train import train

    cfg = faults.demo_config("grpo_same_scores", steps_per_epoch=2, out=str(tmp_path), run_name="r", save_every=0)
    res = train(cfg, state=faults.broken_setup(cfg, "grpo_same_scores"))
    err = capsys.readouterr().err
    assert f"{PREFIX} [no_gradient] step 2" in err
    log = (res.run_dir / "logs" / "train.log").read_text()
    assert f"{PREFIX} [no_gradient] step 2" in log
    assert diagnostics.GRAD_ZERO < 1e-6
