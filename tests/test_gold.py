"""The gold judge: VADER on grammatical reviews, -1 on anything the corpus grammar rejects; logged by runs on a learned reward."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_nb.config import ConfigError, RunConfig
from rlhf_nb.corpus import build_corpus
from rlhf_nb.gold import INVALID_SCORE, GoldReward, get_gold, gold_text_scores, well_formed
from rlhf_nb.runlog import read_jsonl
from rlhf_nb.text import vader_compound


def test_gold_is_vader_on_corpus_sentences():
    sents = build_corpus(50, seed=3)
    assert gold_text_scores(sents) == pytest.approx(vader_compound(sents))


def test_gold_is_minus_one_off_grammar_even_when_vader_loves_it():
    text = "a masterpiece town masterpiece town masterpiece"
    assert vader_compound([text])[0] > 0.5
    assert gold_text_scores([text]) == [INVALID_SCORE]


def test_reward_interface_joins_prompt_and_completion():
    sent = build_corpus(1, seed=0)[0]
    words = sent.split()
    prompt, completion = " ".join(words[:2]), " ".join(words[2:])
    r = GoldReward()([prompt, prompt], [completion, completion + " town town"])
    assert r[0].item() == pytest.approx(vader_compound([sent])[0], abs=1e-6)
    assert r[1].item() == INVALID_SCORE
    assert well_formed([prompt, prompt], [completion, completion + " town town"]).tolist() == [True, False]
    with pytest.raises(ValueError, match="prompts"):
        GoldReward()("not a list", ["x"])


# ---------------------------------------------------------------- the gold in a run: objective/gold_scores

ROOT = Path(__file__).resolve().parents[1]
GOLD = "objective/gold_scores"


def test_get_gold_resolves_auto_from_the_reward():
    assert isinstance(get_gold("auto", "learned"), GoldReward)
    assert get_gold("auto", "sentiment") is None
    assert isinstance(get_gold("gold", "sentiment"), GoldReward)
    assert get_gold("none", "learned") is None
    with pytest.raises(ValueError, match="gold must be one of"):
        get_gold("vader", "learned")


def test_config_checks_gold_and_reward_model():
    with pytest.raises(ConfigError, match="--gold must be one of"):
        RunConfig(gold="yes")
    with pytest.raises(ConfigError, match="--reward_model needs --reward learned"):
        RunConfig(reward_model="proxy-rm-1000")
    assert RunConfig(reward="learned", reward_model="proxy-rm-1000").reward_model == "proxy-rm-1000"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rlhf_nb.train", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


TINY_CLI = ("--batch_size", "4", "--steps_per_epoch", "2", "--max_new_tokens", "6", "--num_minibatches", "1",
            "--ppo_epochs", "1", "--progress", "false", "--seed", "3")


def test_cli_learned_reward_logs_the_gold_to_jsonl_tensorboard_and_the_glossary(tmp_path):
    p = _cli("--reward", "learned", "--reward_model", "proxy-rm-1000", "--out", str(tmp_path), *TINY_CLI)
    assert p.returncode == 0, p.stderr
    run = next(tmp_path.glob("run_*"))
    rows = read_jsonl(run / "logs" / "train.jsonl")
    assert len(rows) == 2 and all(-1.0 <= r[GOLD] <= 1.0 for r in rows)
    assert json.loads((run / "config.json").read_text())["reward_model"] == "proxy-rm-1000"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    assert GOLD in tb.Tags()["scalars"]
    assert [round(e.value, 5) for e in tb.Scalars(GOLD)] == [round(r[GOLD], 5) for r in rows]
    assert f"`{GOLD}`" in (ROOT / "docs" / "metrics.md").read_text()


def test_cli_gold_none_and_sentiment_reward_log_no_gold(tmp_path):
    for args in (("--reward", "learned", "--gold", "none"), ("--reward", "sentiment")):
        out = tmp_path / args[-1]
        p = _cli(*args, "--out", str(out), *TINY_CLI)
        assert p.returncode == 0, p.stderr
        assert GOLD not in read_jsonl(next(out.glob("run_*")) / "logs" / "train.jsonl")[0]


def test_cli_bad_reward_model_is_one_line_before_any_work(tmp_path):
    p = _cli("--reward", "learned", "--reward_model", "no-such-proxy", "--out", str(tmp_path), *TINY_CLI)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert "--reward_model must be a reward-model folder or one of" in p.stderr and "proxy-rm-1000" in p.stderr
    assert not list(tmp_path.glob("run_*"))


def test_logged_gold_is_the_mean_gold_of_the_batch():
    from rlhf_nb.train import ppo_step, setup
    cfg = RunConfig(reward="learned", reward_model="proxy-rm-250", batch_size=6, max_new_tokens=6, log_samples=6,
                    num_minibatches=1, ppo_epochs=1, progress=False, seed=1)
    s = setup(cfg)
    m, samples = ppo_step(s)
    want = sum(GoldReward()(samples["prompts"], samples["completions"]).tolist()) / 6
    assert m[GOLD] == pytest.approx(want, abs=1e-6)
    assert setup(cfg.replace(gold="none")).gold_fn is None
