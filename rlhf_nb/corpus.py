"""A synthetic, seed-determined corpus of one-sentence movie reviews, balanced positive / negative / neutral by VADER."""
from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import vaderSentiment
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

VADER_LEXICON = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
NEUTRAL_BAND = 0.05  # VADER's own convention: |compound| < 0.05 reads as neutral
MIN_VALENCE = 1.0  # sentiment words must be clearly signed; milder ones (fine 0.8, okay 0.9) blur the classes

# RL prompts: openings the base model has seen many times. Each is VADER-neutral (compound 0),
# so any reward the policy earns comes from its own words. ("Honestly," scores +2.0 in VADER, hence "Frankly,".)
PROMPTS = [
    "The acting was", "The plot was", "I thought the plot", "The soundtrack", "Frankly, the ending",
    "The script", "The cast", "The dialogue was", "The cinematography", "The pacing felt",
    "This movie", "This film", "Overall, the film", "The director", "The story", "I found the",
    "The characters", "The ending was", "In the end, the", "The first half", "The lead actor",
    "The visual effects", "The final scene", "Watching this film", "The whole movie", "The opening scene",
    "The music", "The performances were", "After the screening, I", "The second act", "I have to say the",
    "The editing",
]  # fmt: skip

# Curated candidates. Only the lexicon decides which survive and with what valence (see `vocabulary`).
_POS_ADJ = """great good excellent wonderful brilliant superb amazing fantastic beautiful lovely charming delightful
clever fun funny enjoyable fresh stunning impressive gorgeous perfect strong engaging entertaining inspiring powerful
elegant thrilling magnificent marvelous outstanding terrific awesome exciting sweet smart creative graceful pleasant
nice adorable admirable attractive bold brave cheerful confident cute dynamic effective energetic fabulous
fascinating flawless glorious heartwarming heroic hilarious hopeful humorous ideal intelligent interesting joyful
lively lovable meaningful original passionate playful pleasing rich romantic satisfying sincere splendid successful
super superior sympathetic thoughtful vibrant wise worthy classy breathtaking rewarding"""
_NEG_ADJ = """bad terrible awful boring dull poor weak horrible dreadful stupid ugly lame painful annoying disappointing
messy pathetic bland confusing frustrating ridiculous miserable appalling bitter bizarre broken careless chaotic cruel
crude cynical depressing desperate dire dismal disturbing dreary dumb embarrassing exhausting fake flawed foolish
gloomy grim gross harsh heartbreaking hopeless horrendous idiotic incompetent inferior insipid insulting irritating
lazy lousy meaningless nasty obnoxious offensive pitiful problematic rotten rude sad shameful sickening sluggish tense
tired tragic troubling unpleasant upsetting useless vile weird worthless wrong crappy joyless mindless repetitive
clueless disastrous"""
_POS_NOUN = "masterpiece triumph joy treat pleasure delight success gift miracle beauty blessing winner"
_NEG_NOUN = "disaster mess failure waste bore flop catastrophe tragedy insult embarrassment travesty fiasco"
_POS_VERB = "loved enjoyed liked adored admired appreciated cherished praised"
_NEG_VERB = "hated disliked despised loathed resented regretted mocked rejected"
_POS_FEEL = """happy inspired delighted satisfied amused cheerful thrilled glad excited hopeful grateful relieved
pleased entertained energized"""
_NEG_FEEL = """sad bored disappointed depressed annoyed frustrated angry confused upset worried miserable irritated
disgusted exhausted tired cheated insulted uneasy lonely restless embarrassed heartbroken"""
# Neutral slots: words VADER does not list, i.e. valence 0 by VADER's own rule.
_NEU_ADJ = """long short slow quiet loud familiar conventional colorful modern dense fast minimal old new plain
subtle direct traditional heavy straightforward unusual unexpected different similar lengthy brief predictable
mild moderate standard usual technical silent busy dark simple typical formal talky episodic understated"""
_INTENSIFIERS = "really very incredibly extremely quite so remarkably genuinely deeply utterly totally absolutely"
_ASPECTS = """acting plot script soundtrack pacing ending cast dialogue cinematography story direction editing music
score premise screenplay climax lighting final_scene opening_scene lead_actor first_half second_act camera_work
production_design main_character"""
_PLURAL_ASPECTS = "characters performances jokes visuals costumes songs sets visual_effects action_scenes supporting_actors"
_FILMS = "movie film picture sequel"
_GENRES = "drama thriller western musical mystery documentary period_piece road_movie courtroom_drama heist_movie"
_PLACES = "Paris Tokyo a_small_town the_desert New_York a_farm the_suburbs Berlin the_mountains a_big_city Chicago"
_PEOPLE = "teacher farmer nurse lawyer pilot stranger singer boxer detective young_woman retired_man chef student"
_PEERS = "brother sister cousin roommate parents dad mom neighbor coworker"
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday"
_TIMES = "morning afternoon evening night"
_DEVICES = "close-ups long_takes voiceover flashbacks handheld_shots piano strings narration wide_shots slow_motion"

# Sentiment templates: {adj}/{noun}/{verb}/{feel} take the sentence's class, {oadj} the opposite class (used under
# negation, or before a "but", which VADER weighs 0.5x against 1.5x after it).
SENTIMENT_TEMPLATES = [
    "The {a} was {adj}.",
    "The {a} was {adv} {adj}.",
    "The {as} were {adj}.",
    "The {as} were {adv} {adj}.",
    "The {a} was {adj} and {adj2}.",
    "The {a} was not {oadj}.",
    "The {a} was not {oadj} at all, it was {adj}.",
    "The {a} was {oadj}, but the {a2} was {adj}.",
    "The {a} was {adj}, and the {as} were {adj2}.",
    "The {a} felt {adj}.",
    "The {a} felt {adv} {adj} to me.",
    "I thought the {a} was {adj}.",
    "I thought the {as} were {adv} {adj}.",
    "I found the {a} {adj}.",
    "I found the {as} {adv} {adj}.",
    "Frankly, the {a} was {adj}.",
    "Frankly, the {a} was {adv} {adj}, and the {a2} was {adj2}.",
    "In the end, the {a} was {adj}.",
    "In the end, the {a} felt {adv} {adj}.",
    "I have to say the {a} was {adj}.",
    "I have to say the {as} were {adj}.",
    "This {film} was {adj}.",
    "This {film} is {adv} {adj}.",
    "This {film} is a {noun}.",
    "Overall, the film was {adj}.",
    "Overall, the film was a {noun}.",
    "Overall, the film was {oadj} at first, but the {a} was {adj}.",
    "The whole movie felt {adj}.",
    "The whole movie was a {adj} {noun}.",
    "The director did a {adj} job with the {a}.",
    "The director made the {a} {adv} {adj}.",
    "Watching this film made me feel {feel}.",
    "Watching this film left me {adv} {feel}.",
    "After the screening, I felt {feel}.",
    "After the screening, I {verb} the {a}.",
    "I {verb} the {a}.",
    "I {verb} the {a} and the {as}.",
    "I {verb} the {as}, and the {a} was {adj}.",
    "The {a} was a {noun}.",
    "The {a} is {adj}, {adj2} and {adj3}.",
    "The {a} could have been {oadj}, but it was {adv} {adj}.",
    "It was a {adj} {film} with a {adj2} {a}.",
]
NEUTRAL_TEMPLATES = [
    "The {a} was {nadj}.",
    "The {a} was {adv} {nadj}.",
    "The {as} were {nadj}.",
    "The {a} felt {nadj} at times.",
    "The {a} uses a lot of {device}.",
    "The {a} reminded me of an older {genre}.",
    "I thought the {a} was {nadj}, and the {a2} was {nadj2}.",
    "I found the {a} {nadj}.",
    "Frankly, the {a} was {nadj}.",
    "In the end, the {a} was {nadj} and {nadj2}.",
    "I have to say the {a} was {nadj}.",
    "This {film} runs about {num} minutes.",
    "This {film} is a {genre} set in {place}.",
    "Overall, the film is a {nadj} {genre} about a {person}.",
    "The story follows a {person} who moves to {place}.",
    "The director shot most of it in {place}.",
    "The whole movie takes place in {place}.",
    "Watching this film took me about {num} minutes.",
    "After the screening, I went home with my {peer}.",
    "I watched it on a {day} {time} with my {peer}.",
    "The first half is mostly about the {person}.",
    "This {film} came out in {year}.",
]


def _split(s: str) -> list[str]:
    return [w.replace("_", " ") for w in s.split()]  # "_" joins multi-word entries


@lru_cache(maxsize=1)
def vader_lexicon() -> dict[str, float]:
    """Word -> mean valence (-4..4) from the lexicon file vaderSentiment ships."""
    lex = {}
    for line in VADER_LEXICON.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            lex[parts[0]] = float(parts[1])
    return lex


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, dict[str, float]]:
    """Slot name -> {word: VADER valence}; sentiment slots keep clearly signed lexicon words, neutral slots unlisted words."""
    lex = vader_lexicon()

    def signed(words: str, sign: int) -> dict[str, float]:
        return {w: lex[w] for w in _split(words) if w.isalpha() and sign * lex.get(w, 0.0) >= MIN_VALENCE}

    def neutral(words: str) -> dict[str, float]:
        return {w: 0.0 for w in _split(words) if not any(t.lower() in lex for t in w.split())}

    return {
        "pos_adj": signed(_POS_ADJ, 1), "neg_adj": signed(_NEG_ADJ, -1),
        "pos_noun": signed(_POS_NOUN, 1), "neg_noun": signed(_NEG_NOUN, -1),
        "pos_verb": signed(_POS_VERB, 1), "neg_verb": signed(_NEG_VERB, -1),
        "pos_feel": signed(_POS_FEEL, 1), "neg_feel": signed(_NEG_FEEL, -1),
        "nadj": neutral(_NEU_ADJ), "adv": neutral(_INTENSIFIERS), "a": neutral(_ASPECTS),
        "as": neutral(_PLURAL_ASPECTS), "film": neutral(_FILMS), "genre": neutral(_GENRES),
        "place": neutral(_PLACES), "person": neutral(_PEOPLE), "peer": neutral(_PEERS),
        "day": neutral(_DAYS), "time": neutral(_TIMES), "device": neutral(_DEVICES),
    }  # fmt: skip


def _fix_articles(s: str) -> str:
    # "a excellent" -> "an excellent"; "u" only when not "us-" (a useless, a usual; an ugly, an upsetting)
    return re.sub(r"\b([Aa]) (?=[aeio]|u(?!s)|hon)", r"\1n ", s)


def _fill(template: str, cls: str, rng: random.Random) -> str:
    """Fill one template for class 'pos', 'neg' or 'neu'."""
    v = vocabulary()
    other = {"pos": "neg", "neg": "pos"}.get(cls, "neg")

    def pick(slot: str, k: int = 1) -> list[str]:
        return rng.sample(sorted(v[slot]), k)

    cls_ = cls if cls != "neu" else "pos"  # neutral templates carry no sentiment slots
    adjs, aspects, nadjs = pick(f"{cls_}_adj", 3), pick("a", 2), pick("nadj", 2)
    fields = {
        "adj": adjs[0], "adj2": adjs[1], "adj3": adjs[2], "oadj": pick(f"{other}_adj")[0],
        "noun": pick(f"{cls_}_noun")[0], "verb": pick(f"{cls_}_verb")[0], "feel": pick(f"{cls_}_feel")[0],
        "a": aspects[0], "a2": aspects[1], "as": pick("as")[0], "adv": pick("adv")[0], "film": pick("film")[0],
        "nadj": nadjs[0], "nadj2": nadjs[1], "genre": pick("genre")[0], "place": pick("place")[0],
        "person": pick("person")[0], "peer": pick("peer")[0], "day": pick("day")[0], "time": pick("time")[0],
        "device": pick("device")[0], "num": str(rng.randrange(80, 181)), "year": str(rng.randrange(1950, 2025)),
    }  # fmt: skip
    return _fix_articles(template.format(**fields))


def vader_class(compound: float) -> str:
    """'pos', 'neg' or 'neu' from a VADER compound score, with VADER's ±0.05 band."""
    return "pos" if compound >= NEUTRAL_BAND else "neg" if compound <= -NEUTRAL_BAND else "neu"


def build_corpus(n_sentences: int = 40_000, seed: int = 0) -> list[str]:
    """`n_sentences` review sentences, a third each positive / negative / neutral as VADER itself scores them."""
    rng, sia = random.Random(seed), SentimentIntensityAnalyzer()
    quota = {c: n_sentences // 3 + (i < n_sentences % 3) for i, c in enumerate(("pos", "neg", "neu"))}
    out: list[str] = []
    while len(out) < n_sentences:
        cls = rng.choice([c for c, q in quota.items() if q > 0])
        template = rng.choice(NEUTRAL_TEMPLATES if cls == "neu" else SENTIMENT_TEMPLATES)
        s = _fill(template, cls, rng)
        # bucket by what VADER actually says (negation and "but" can flip or cancel a template's intent)
        got = vader_class(sia.polarity_scores(s)["compound"])
        if quota[got] > 0:
            quota[got] -= 1
            out.append(s)
    return out


def corpus_text(n_sentences: int = 40_000, seed: int = 0, eos: str = "\n") -> str:
    """The corpus as one string, sentences joined by `eos` (newline for reading, `<|endoftext|>` for training)."""
    return eos.join(build_corpus(n_sentences, seed)) + eos


def get_prompts(n: int, seed: int = 0, prompts: Sequence[str] = PROMPTS) -> list[str]:
    """`n` prompts drawn from `prompts` (default: the review prompts): every prompt once per cycle, cycles shuffled by
    `seed`."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        cycle = list(prompts)
        rng.shuffle(cycle)
        out.extend(cycle)
    return out[:n]


@lru_cache(maxsize=1)
def _template_patterns() -> list[re.Pattern]:
    v = vocabulary()
    alt = lambda *slots: "(?:" + "|".join(re.escape(w) for s in slots for w in v[s]) + ")"  # noqa: E731
    slot_re = {
        "adj": alt("pos_adj", "neg_adj"), "noun": alt("pos_noun", "neg_noun"), "verb": alt("pos_verb", "neg_verb"),
        "feel": alt("pos_feel", "neg_feel"), "nadj": alt("nadj"), "num": r"\d+", "year": r"\d+",
    }  # fmt: skip
    pats = []
    for t in SENTIMENT_TEMPLATES + NEUTRAL_TEMPLATES:
        parts = re.split(r"(\{\w+\})", re.sub(r"\ba ", "\0", t))
        rx = ""
        for part in parts:
            if part.startswith("{"):
                name = part[1:-1].rstrip("23")
                rx += slot_re.get("adj" if name == "oadj" else name) or alt(name)
            else:
                rx += re.escape(part).replace("\0", "an? ")
        pats.append(re.compile(rx))
    return pats


def matches_template(sentence: str) -> bool:
    """Whether `sentence` is one the corpus grammar could make (any template, any slot word of any class)."""
    return any(p.fullmatch(sentence) for p in _template_patterns())
