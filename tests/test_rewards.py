"""Each reward on hand-written cases, the composite's weights, and the errors bad inputs raise."""
import math

import pytest
import torch

from rlhf_nb.rewards import (REWARD_NAMES, CompositeReward, LearnedReward, LengthReward, PhraseReward,
                             SentimentReward, get_reward, join_text, vader_compound)

POS, NEG, NEU = " was wonderful, I loved every minute of it.", " was awful, boring and a waste of time.", " is two hours long."


def test_every_name_builds_and_returns_float32_batch():
    for name in REWARD_NAMES:
        r = get_reward(name)
        assert callable(r)
        if name == "learned":
            continue  # loads weights; covered in test_reward_model.py
        out = r(["The film"] * 3, [POS, NEG, NEU])
        assert out.dtype == torch.float32 and out.shape == (3,) and out.device.type == "cpu"


def test_sentiment_orders_positive_neutral_negative():
    s = SentimentReward()(["The film"] * 3, [POS, NEG, NEU])
    assert s[0] > 0.5 and s[1] < -0.5 and s[2] == 0.0
    assert s.abs().max() <= 1.0
    # VADER reads the prompt too, exactly as vaderSentiment scores the joined text
    assert s[0].item() == pytest.approx(vader_compound(["The film" + POS])[0], abs=1e-6)


def test_join_text_adds_a_space_only_at_a_bare_seam():
    assert join_text("The film", " was fine") == "The film was fine"
    assert join_text("The film ", "was fine") == "The film was fine"
    assert join_text("The film", "was fine") == "The film was fine"
    assert join_text("The film", "") == "The film"


@pytest.mark.parametrize("completion, hit", [
    (" Highly recommended.", True),
    (" highly   RECOMMENDED !!! ", True),
    (" a must see :)", True),
    (" Worth watching<|endoftext|>", True),
    (" worth watching, but only once", False),
    (" unworth watching", False),          # must end on a word boundary
    ("Highly recommended", True),
    ("", False),
    (" not highly recommended.", True),    # it reads the ending only: a documented limit of the rule
])
def test_phrase_endings(completion, hit):
    assert PhraseReward()(["The film"], [completion]).item() == (1.0 if hit else 0.0)


def test_phrase_custom_phrases_and_bonus():
    r = PhraseReward(phrases=("Ten out of ten!",), bonus=2.5)
    assert r(["x", "x"], [" ten  out of TEN", " highly recommended"]).tolist() == [2.5, 0.0]
    with pytest.raises(ValueError, match="phrases"):
        PhraseReward(phrases=())
    with pytest.raises(ValueError, match="phrases"):
        PhraseReward(phrases="highly recommended")
    with pytest.raises(ValueError, match="phrases"):
        PhraseReward(phrases=("!!",))
    with pytest.raises(ValueError, match="bonus"):
        PhraseReward(bonus=float("nan"))


def test_length_edges():
    r = LengthReward(target=12, width=6)
    words = lambda n: " ".join(["good"] * n)  # noqa: E731
    out = r(["The film"] * 4, ["", words(12), words(18), words(200)])
    assert out[0].item() == pytest.approx(math.expm1(-0.5 * 4))  # 0 words: two widths short
    assert out[1].item() == 0.0                                    # at the target: no penalty
    assert out[2].item() == pytest.approx(math.expm1(-0.5))        # one width long
    assert -1.0 <= out[3].item() < -0.999                          # far: bounded by -1
    assert r(["x"], ["  a\tb \n c  "]).item() == r(["x"], ["a b c"]).item()  # words split on any whitespace


@pytest.mark.parametrize("kwargs, arg", [({"target": 0}, "target"), ({"width": -1}, "width"),
                                         ({"target": True}, "target"), ({"width": float("inf")}, "width")])
def test_length_validates(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        LengthReward(**kwargs)


def test_composite_is_the_weighted_sum():
    p, c = ["The film"] * 3, [POS + " Highly recommended!", NEG, NEU]
    comp = CompositeReward({"sentiment": 2.0, "phrase": 0.5, "length": 1.0}, length={"target": 5, "width": 2})
    want = 2.0 * SentimentReward()(p, c) + 0.5 * PhraseReward()(p, c) + LengthReward(5, 2)(p, c)
    torch.testing.assert_close(comp(p, c), want)
    only = CompositeReward({"sentiment": 1.0, "phrase": 0.0})
    torch.testing.assert_close(only(p, c), SentimentReward()(p, c))
    assert "phrase" not in only.parts  # zero-weight parts are not built


def test_composite_does_not_load_learned_until_called():
    comp = CompositeReward({"sentiment": 1.0, "learned": 0.5}, learned={"path": "/nonexistent"})
    assert isinstance(comp.parts["learned"], LearnedReward) and comp.parts["learned"]._model is None


@pytest.mark.parametrize("weights", [{"sentiment": -1.0}, {"sentiment": 0.0, "length": 0.0}, {},
                                     {"vibes": 1.0}, {"composite": 1.0}, {"sentiment": float("nan")}])
def test_composite_bad_weights(weights):
    with pytest.raises(ValueError, match="weights"):
        CompositeReward(weights)


def test_composite_kwargs_must_match_weights():
    with pytest.raises(ValueError, match="length"):
        CompositeReward({"sentiment": 1.0}, length={"target": 3})


def test_unknown_reward_name():
    with pytest.raises(ValueError, match="reward") as e:
        get_reward("vibes")
    assert all(n in str(e.value) for n in REWARD_NAMES)


@pytest.mark.parametrize("name", ["sentiment", "phrase", "length", "composite", "learned"])
def test_bad_inputs_name_the_argument(name):
    r = get_reward(name, path="/nonexistent") if name == "learned" else get_reward(name)
    with pytest.raises(ValueError, match="prompts"):
        r([], [])
    with pytest.raises(ValueError, match=r"prompts and completions.*2 prompts.*1 completions"):
        r(["a", "b"], ["c"])
    with pytest.raises(ValueError, match=r"completions\[1\]"):
        r(["a", "b"], ["c", 3])
    with pytest.raises(ValueError, match="prompts"):
        r("a", ["c"])


# ---- parameters are checked when a reward is built, so no score can be inf or nan ----

@pytest.mark.parametrize("make, arg", [
    (lambda: PhraseReward(bonus=1e308), "bonus"),                      # float32(1e308) = inf
    (lambda: PhraseReward(bonus=-1e308), "bonus"),
    (lambda: PhraseReward(bonus=1e6 + 1), "bonus"),
    (lambda: PhraseReward(bonus="1"), "bonus"),
    (lambda: CompositeReward({"sentiment": 1e308, "length": 1e308}), r"weights\['sentiment'\]"),  # inf - inf = nan
    (lambda: CompositeReward({"sentiment": 1.0, "phrase": float("inf")}), r"weights\['phrase'\]"),
    (lambda: LengthReward(target=1e308, width=1e308), "target"),      # (n - inf)/inf = nan
    (lambda: LengthReward(width=1e-300), "width"),                    # rounds to 0 in float32: 0/0 = nan at n = target
    (lambda: LearnedReward(batch_size=0), "batch_size"),              # was: range() arg 3 must not be zero
    (lambda: LearnedReward(batch_size=-1), "batch_size"),
    (lambda: LearnedReward(batch_size=2.5), "batch_size"),
    (lambda: LearnedReward(batch_size=True), "batch_size"),
    (lambda: LearnedReward(path=3), "path"),
])
def test_out_of_range_parameters_are_refused_at_construction(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


@pytest.mark.parametrize("bonus", [-1e6, 1e6])
@pytest.mark.parametrize("target, width", [(1e-9, 1e-3), (1e6, 1e-3), (1e6, 1e6), (1.0, 1e6)])
def test_every_score_is_finite_at_the_parameter_bounds(bonus, target, width):
    prompts = ["The film"] * 5
    comps = ["", " highly recommended", " ".join(["good"] * 300), " was awful" * 50, " a must see!!!"]
    weights = {"sentiment": 1e6, "phrase": 1e6, "length": 1e6}
    rewards = [PhraseReward(bonus=bonus), LengthReward(target, width),
               CompositeReward(weights, phrase={"bonus": bonus}, length={"target": target, "width": width})]
    for r in rewards:
        out = r(prompts, comps)
        assert torch.isfinite(out).all(), (type(r).__name__, out)
    assert rewards[0](prompts, comps)[1].item() == bonus  # the bound itself is allowed and exact in float32


@pytest.mark.parametrize("name", ["sentiment", "phrase", "length", "composite", "learned"])
def test_text_utf8_cannot_encode_is_one_value_error_naming_it(name):
    """A lone surrogate (what a lossy decode can leave) used to reach the tokenizer and raise a TypeError there."""
    r = get_reward(name, path="/nonexistent") if name == "learned" else get_reward(name)  # refused before loading
    with pytest.raises(ValueError, match=r"completions\[1\] is not valid text: '\\ud800' at index 4"):
        r(["a", "b"], [" ok", " ok \ud800 fine"])
    with pytest.raises(ValueError, match=r"prompts\[0\] is not valid text"):
        r(["\udfff"], [" ok"])


@pytest.mark.parametrize("name", ["sentiment", "phrase", "length", "composite"])
def test_valid_non_ascii_text_is_scored(name):
    assert torch.isfinite(get_reward(name)(["Le film était"], [" très bien 👍 — 10/10"])).all()


def test_reward_for_follows_the_config_reward_model():
    """The trainer and the TRL bridge build a RunConfig's reward the same way, reward-model folder included."""
    from rlhf_nb.rewards import reward_for

    r = reward_for("learned", "proxy-rm-250")
    assert isinstance(r, LearnedReward) and r.path.endswith("proxy-rm-250")
    assert reward_for("learned").path is None  # the committed default
    with pytest.raises(FileNotFoundError, match="--reward_model"):
        reward_for("learned", "no-such-model")


def test_a_policy_folder_as_reward_model_is_refused_before_the_run_folder_exists(tmp_path):
    """A language model (here the embedded policy; a run's final/ is the same) is not a reward model: the CLI says so in
    one line, exits 2 and creates nothing (it used to create the run folder and fail at step 1)."""
    import subprocess
    import sys

    from rlhf_nb.policy import resolve_model_path
    from rlhf_nb.rewards import reward_model_dir

    policy = resolve_model_path("embedded")
    with pytest.raises(FileNotFoundError, match="not a reward model.*GPT2LMHeadModel"):
        reward_model_dir(policy)
    assert reward_model_dir("proxy-rm-1000").endswith("proxy-rm-1000")  # a real one still resolves
    out = tmp_path / "runs"
    p = subprocess.run([sys.executable, "-m", "rlhf_nb.train", "--reward", "learned", "--reward_model", policy,
                        "--steps_per_epoch", "1", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "not a reward model" in p.stderr
    assert not out.exists()
