"""The synthetic review corpus: deterministic, VADER-balanced, lexicon-true, and full of the RL prompts."""
from __future__ import annotations

import statistics

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from rlhf_nb.corpus import (
    NEUTRAL_TEMPLATES, PROMPTS, SENTIMENT_TEMPLATES, _fix_articles, build_corpus, corpus_text, get_prompts,
    vader_class, vader_lexicon, vocabulary,
)  # fmt: skip

N = 3000


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return build_corpus(N, seed=0)


@pytest.fixture(scope="module")
def sia() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def test_same_seed_same_bytes_other_seed_differs(corpus):
    assert "\n".join(build_corpus(N, seed=0)).encode() == "\n".join(corpus).encode()
    assert build_corpus(N, seed=1) != corpus
    assert corpus_text(50, seed=3) == corpus_text(50, seed=3)
    assert corpus_text(50, seed=3, eos="<|endoftext|>").count("<|endoftext|>") == 50


def test_length_and_shape(corpus):
    assert len(corpus) == N
    assert all(s and s[0].isupper() and s[-1] in ".!" for s in corpus)
    assert len(set(corpus)) > 0.6 * N  # mostly distinct sentences
    assert len({w for s in corpus for w in s.split()}) > 600  # a wide vocabulary, not one template


def test_vader_classes_are_exact_thirds_and_mean_is_near_zero(corpus, sia):
    scores = [sia.polarity_scores(s)["compound"] for s in corpus]
    counts = {c: sum(vader_class(x) == c for x in scores) for c in ("pos", "neg", "neu")}
    assert counts == {"pos": N // 3, "neg": N // 3, "neu": N // 3}
    assert abs(statistics.mean(scores)) < 0.05
    signs = [(x > 0) - (x < 0) for x in scores]  # the mean VADER sign, the coarser balance check
    assert abs(statistics.mean(signs)) < 0.02


def test_valences_come_from_the_lexicon():
    lex, vocab = vader_lexicon(), vocabulary()
    assert lex["great"] == 3.1 and lex["bad"] == -2.5  # parsed from the file vaderSentiment ships
    for slot, words in vocab.items():
        for w, v in words.items():
            if slot.startswith("pos_"):
                assert v == lex[w] and v >= 1.0, (slot, w)
            elif slot.startswith("neg_"):
                assert v == lex[w] and v <= -1.0, (slot, w)
            else:  # neutral slots: no token of the entry is in the lexicon
                assert v == 0.0 and not any(t.lower() in lex for t in w.split()), (slot, w)
    assert len(vocab["pos_adj"]) >= 60 and len(vocab["neg_adj"]) >= 60 and len(vocab["a"]) >= 20


def test_many_templates():
    assert len(SENTIMENT_TEMPLATES) + len(NEUTRAL_TEMPLATES) >= 25
    assert any("not {oadj}" in t for t in SENTIMENT_TEMPLATES) and any(", but" in t for t in SENTIMENT_TEMPLATES)


def test_prompts_are_neutral_openings_the_corpus_continues(corpus, sia):
    assert 28 <= len(PROMPTS) <= 40 and len(set(PROMPTS)) == len(PROMPTS)
    assert all(isinstance(p, str) and p.strip() == p and p for p in PROMPTS)
    assert all(sia.polarity_scores(p)["compound"] == 0.0 for p in PROMPTS)
    for p in PROMPTS:
        assert sum(s.startswith(p + " ") or s.startswith(p + ",") for s in corpus) >= 2, p  # 40k-sentence corpus: >= 40


def test_get_prompts_is_deterministic_and_cycles():
    assert get_prompts(100, seed=1) == get_prompts(100, seed=1)
    assert get_prompts(100, seed=1) != get_prompts(100, seed=2)
    assert sorted(get_prompts(len(PROMPTS), seed=5)) == sorted(PROMPTS)  # every prompt once per cycle
    assert len(get_prompts(7)) == 7 and get_prompts(0) == []


def test_articles():
    assert _fix_articles("It was a excellent film with a ugly score.") == "It was an excellent film with an ugly score."
    assert _fix_articles("a useless scene, a honest take") == "a useless scene, an honest take"
