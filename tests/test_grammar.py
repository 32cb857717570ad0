import random
import re

import pytest

from nanospeechrl.builtin import grammar, lexicon
from nanospeechrl.rewards import normalize

NUMBER_WORDS = set(lexicon.ONES + lexicon.TENS[2:] + ["hundred", "thousand"])
NAMES = set(grammar.GRAMMAR["name"])
# Homophone pairs an ASR model could not tell apart in eSpeak audio. ("to", "two") is
# unavoidable and allowed; "four" stays because the templates never say "for".
HOMOPHONES = [
    ("red", "read"), ("eight", "ate"), ("one", "won"), ("two", "too"), ("four", "for"),
    ("new", "knew"), ("no", "know"), ("right", "write"), ("sea", "see"), ("son", "sun"),
    ("week", "weak"), ("hour", "our"), ("meat", "meet"), ("flour", "flower"), ("pair", "pear"),
    ("sale", "sail"), ("tail", "tale"), ("road", "rode"), ("made", "maid"), ("blue", "blew"),
    ("through", "threw"), ("there", "their"), ("here", "hear"), ("would", "wood"), ("by", "buy"),
    ("wait", "weight"), ("piece", "peace"), ("whole", "hole"), ("steal", "steel"),
    ("plain", "plane"), ("mail", "male"), ("bear", "bare"), ("dear", "deer"), ("night", "knight"),
    ("be", "bee"), ("sent", "cent"), ("heard", "herd"), ("passed", "past"), ("fair", "fare"),
    ("break", "brake"), ("which", "witch"), ("wear", "where"), ("its", "it's"), ("i", "eye"),
    ("flew", "flu"), ("missed", "mist"), ("guessed", "guest"), ("tied", "tide"),
    ("weather", "whether"), ("prints", "prince"), ("tents", "tense"), ("rose", "rows"),
    ("caught", "court"), ("saw", "sore"), ("draw", "drawer"), ("metal", "medal"),
    ("bored", "board"), ("sweet", "suite"), ("cereal", "serial"), ("eric", "erik"),
]


@pytest.fixture(scope="module")
def splits():
    return grammar.split_texts(seed=0, n_train=20_000, n_dev=300, n_test=300, n_test_accent=300,
                              n_test_long=20)


@pytest.fixture(scope="module")
def sample():
    rng = random.Random(0)
    return [grammar.sentence(rng) for _ in range(20_000)]


def sentences_of(passage):
    return re.split(r"(?<=[.?!]) ", passage)


def test_number_words():
    cases = {0: "zero", 7: "seven", 13: "thirteen", 20: "twenty", 42: "forty two",
             100: "one hundred", 115: "one hundred and fifteen", 300: "three hundred",
             1005: "one thousand and five", 2026: "two thousand and twenty six",
             3400: "three thousand four hundred",
             9999: "nine thousand nine hundred and ninety nine"}
    for n, words in cases.items():
        assert grammar.number_words(n) == words
    for bad in (-1, 10_000, 2.5):
        with pytest.raises(ValueError, match="0..9999"):
            grammar.number_words(bad)


def test_year_words():
    assert grammar.year_words(1987) == "nineteen eighty seven"
    assert grammar.year_words(1950) == "nineteen fifty"
    assert grammar.year_words(2005) == "two thousand and five"
    assert grammar.year_words(2026) == "twenty twenty six"


def test_inflection():
    plural = {"cup": "cups", "box": "boxes", "bus": "buses", "watch": "watches", "brush": "brushes",
              "cherry": "cherries", "key": "keys", "child": "children", "knife": "knives",
              "sheep": "sheep", "potato": "potatoes", "mouse": "mice"}
    for noun, want in plural.items():
        assert lexicon.pluralise(noun) == want
    third = {"walk": "walks", "watch": "watches", "carry": "carries", "play": "plays",
             "go": "goes", "fix": "fixes", "have": "has"}
    for verb, want in third.items():
        assert lexicon.third_person(verb) == want


def test_expand_fixed_slots_articles_and_errors():
    rng = random.Random(0)
    text = grammar.expand(rng, "{name} lives in {city}.", name="Anna")
    city = text.removeprefix("Anna lives in ").removesuffix(".")
    assert city in lexicon.CITIES
    text = grammar.expand(rng, "a {x} and a {y} {z}.", x="old cup", y="useful box", z="")
    assert text == "An old cup and a useful box."
    with pytest.raises(KeyError, match=r"unknown slot \{nope\}"):
        grammar.expand(rng, "the {nope}")


def test_sentence_is_deterministic():
    a = [grammar.sentence(random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    r1, r2 = random.Random(7), random.Random(8)
    assert [grammar.sentence(r1) for _ in range(20)] != [grammar.sentence(r2) for _ in range(20)]


def test_sentence_form(sample):
    for s in sample:
        assert re.fullmatch(r"[A-Z][A-Za-z ,']*[a-z][.?!]", s), s  # no digits, no stray symbols
        assert "  " not in s and " ," not in s
    lengths = [len(s.split()) for s in sample]
    frac_typical = sum(5 <= n <= 16 for n in lengths) / len(lengths)
    frac_short = sum(n < 5 for n in lengths) / len(lengths)
    assert frac_typical > 0.8 and 0.02 < frac_short < 0.2, (frac_typical, frac_short)


def test_all_shapes_appear(sample):
    n = len(sample)

    def frac(pred):
        return sum(map(pred, sample)) / n

    assert frac(lambda s: s.endswith("?")) > 0.1  # questions
    assert frac(lambda s: s.endswith("!")) > 0.02  # commands
    assert frac(lambda s: bool(NUMBER_WORDS & set(normalize(s).split()))) > 0.15
    assert frac(lambda s: bool(NAMES & set(s.replace(",", "").split()))) > 0.25
    assert frac(lambda s: "," in s and " and " in s) > 0.05  # lists
    assert frac(lambda s: "n't " in s or " never " in s) > 0.05  # negation
    assert frac(lambda s: " o'clock" in s or " past " in s or " quarter to " in s) > 0.01  # clock
    assert any(re.search(r" in nineteen \w+", s) for s in sample)  # years


def test_vocabulary(sample):
    vocab = grammar.vocabulary()
    seen = {w for s in sample for w in normalize(s).split()}
    assert seen <= vocab, seen - vocab  # vocabulary() names every word the generator emits
    assert len(vocab) >= 1200
    assert len(seen) >= 1000, len(seen)  # measured: 1642 distinct words in 20k sentences
    for a, b in HOMOPHONES:
        assert not (a in vocab and b in vocab), (a, b)


def test_lexicon_is_clean():
    vocab = grammar.vocabulary()
    capitalised = set(lexicon.NAMES_FEMALE + lexicon.NAMES_MALE + lexicon.CITIES + lexicon.DAYS
                      + lexicon.MONTHS)
    for w in capitalised:
        assert re.fullmatch(r"[A-Z][a-z]+", w), w
    assert {w.lower() for w in NAMES} & (vocab - {w.lower() for w in NAMES}) == set()
    assert len(NAMES) == len(lexicon.NAMES_FEMALE) + len(lexicon.NAMES_MALE)  # no name twice
    assert set(lexicon.COMMAND_VERBS) <= set(lexicon.VERBS_THING[0::2])
    for words in (lexicon.VERBS_THING, lexicon.VERBS_FOOD, lexicon.VERBS_PERSON,
                  lexicon.VERBS_IDEA, lexicon.VERBS_INTRANS, lexicon.VERBS_MOTION):
        assert len(words) % 2 == 0  # "base past" pairs


def test_splits_are_deterministic_and_disjoint(splits):
    out = splits
    assert list(out) == ["train", "dev", "test", "test_accent", "test_long"]
    assert [len(v) for v in out.values()] == [20_000, 300, 300, 300, 20]
    train = [normalize(s) for s in out["train"]]
    assert len(set(train)) == len(train)  # no duplicates in train
    held = [normalize(s) for split in ("dev", "test", "test_accent") for s in out[split]]
    held += [normalize(s) for p in out["test_long"] for s in sentences_of(p)]
    assert len(held) > 900 + 20 * 4
    assert not set(held) & set(train)
    assert len(set(held)) == len(held)  # held-out splits don't share sentences either
    for p in out["test_long"]:
        assert 55 <= len(normalize(p).split()) <= 85, p

    small = grammar.split_texts(0, 50, 300, 300, 300, 20)
    for split in ("dev", "test", "test_accent", "test_long"):
        assert small[split] == out[split]  # held-out splits don't depend on n_train
    assert small["train"] == grammar.split_texts(0, 50, 300, 300, 300, 20)["train"]
    other = grammar.split_texts(1, 50, 10, 10, 10, 2)
    assert other["dev"] != small["dev"][:10] and other["train"] != small["train"]


def test_passage_bounds():
    rng = random.Random(3)
    for lo, hi in ((55, 85), (20, 24), (8, 8)):
        for _ in range(30):
            p = grammar.passage(rng, lo, hi)
            assert lo <= len(p.split()) <= hi, (lo, hi, p)
            assert all(re.fullmatch(r"[A-Z].*[.?!]", s) for s in sentences_of(p))
    with pytest.raises(ValueError, match="min_words <= max_words"):
        grammar.passage(rng, 30, 20)
