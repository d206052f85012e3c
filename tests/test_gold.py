"""The gold judge: VADER on grammatical reviews, -1 on anything the corpus grammar rejects."""
from __future__ import annotations

import pytest

from rlhf_nb.corpus import build_corpus
from rlhf_nb.gold import INVALID_SCORE, GoldReward, gold_text_scores, well_formed
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
