"""Built-in text generator: ASR sentences, long-form passages and leak-free splits.

The text comes from a tiny slot grammar: sentence templates and word lists live in
lexicon.py, the slots in GRAMMAR below. A template such as "{subj} {thing_ed} {np}
{place_opt}." names slots; every slot is a list of alternatives, and an alternative may
name further slots ("in the {site}"), so expand() just picks alternatives recursively.
Agreement lives in the slot names ("{subj3} {thing_s}" -> "she cleans", "{subjp}
{thing_v}" -> "we clean"), and later tasks (spoken QA, translation) can pin slots:
expand(rng, "{name} lives in {city}.", name="Anna"). Numbers are always written as
words, so a transcript is exactly what the synthesiser says.
"""
import random
import re

from nanospeechrl.builtin import lexicon as L
from nanospeechrl.rewards import normalize


def number_words(n: int) -> str:
    """0..9999 in words, British style with "and", no hyphens: 115 -> "one hundred and fifteen"."""
    if not isinstance(n, int) or not 0 <= n <= 9999:
        raise ValueError(f"number_words handles integers 0..9999, got {n!r}")
    if n < 20:
        return L.ONES[n]
    if n < 100:
        return L.TENS[n // 10] + ("" if n % 10 == 0 else " " + L.ONES[n % 10])
    thousands, rest = divmod(n, 1000)
    hundreds, tail = divmod(rest, 100)
    parts = []
    if thousands:
        parts.append(L.ONES[thousands] + " thousand")
    if hundreds:
        parts.append(L.ONES[hundreds] + " hundred")
    if tail:
        parts.append("and " + number_words(tail))
    return " ".join(parts)


def year_words(year: int) -> str:
    """Years as people say them: 1987 -> "nineteen eighty seven",
    2005 -> "two thousand and five"."""
    if 2000 <= year <= 2009 or year % 100 < 10:  # no "nineteen oh five": "oh" sounds like "owe"
        return number_words(year)
    return number_words(year // 100) + " " + number_words(year % 100)


def _verb_slots(prefix: str, words: list[str]) -> dict[str, list[str]]:
    """{prefix}_v base form, {prefix}_s he/she form, {prefix}_ed past tense."""
    pairs = L.pairs(words)
    return {f"{prefix}_v": [b for b, _ in pairs],
            f"{prefix}_s": [L.third_person(b) for b, _ in pairs],
            f"{prefix}_ed": [p for _, p in pairs]}


def _optional(slot: str, p_empty: float = 0.5) -> list[str]:
    """Alternatives for an optional slot: empty about p_empty of the time."""
    n_empty = round(p_empty / (1 - p_empty))
    return [""] * n_empty + ["{" + slot + "}"]


_nw = number_words
GRAMMAR: dict[str, list[str]] = {
    # Words straight from the lexicon.
    "name": L.NAMES_FEMALE + L.NAMES_MALE, "name_f": L.NAMES_FEMALE, "name_m": L.NAMES_MALE,
    "city": L.CITIES, "site": L.SITES,
    "thing": L.THINGS, "things": [L.pluralise(w) for w in L.THINGS],
    "food": L.FOODS, "foods": [L.pluralise(w) for w in L.FOODS], "mass": L.MASS_FOODS,
    "animal": L.ANIMALS, "animals": [L.pluralise(w) for w in L.ANIMALS],
    "person": L.PEOPLE, "persons": [L.pluralise(w) for w in L.PEOPLE],
    "family": L.FAMILY, "families": L.FAMILY_GROUPS, "cmd_v": L.COMMAND_VERBS,
    "idea": L.IDEAS, "event": L.EVENTS, "adj_thing": L.ADJ_THING, "adj_food": L.ADJ_FOOD,
    "adj_person": L.ADJ_PERSON, "adj_idea": L.ADJ_IDEA, "weather": L.WEATHER, "adv": L.ADVERBS,
    "colour": L.COLOURS, "day": L.DAYS, "days": [d + "s" for d in L.DAYS], "month": L.MONTHS,
    "day_part": L.DAY_PARTS,
    **_verb_slots("thing", L.VERBS_THING), **_verb_slots("food", L.VERBS_FOOD),
    **_verb_slots("person", L.VERBS_PERSON), **_verb_slots("idea", L.VERBS_IDEA),
    **_verb_slots("intr", L.VERBS_INTRANS), **_verb_slots("motion", L.VERBS_MOTION),
    # Numbers, always as words. Small counts are the most common, as in real speech.
    "count": [_nw(n) for n in range(2, 13)] * 4 + [_nw(n) for n in range(13, 100)]
             + [_nw(n) for n in (100, 120, 150, 200, 250, 300, 500, 1000)],
    "small": [_nw(n) for n in range(2, 11)],
    "bignum": [_nw(n) for n in range(101, 10000, 7)],  # step 7: varied digits without 10k strings
    "price_n": [_nw(n) for n in range(2, 200)] + [_nw(n) for n in range(200, 5000, 25)],
    "year": [year_words(y) for y in range(1950, 2031)],
    "hour": [_nw(n) for n in range(1, 13)],
    "minutes": [_nw(n) for n in range(10, 60, 5)],
    # Phrases.
    "clock": ["{hour} o'clock", "half past {hour}", "a quarter past {hour}", "a quarter to {hour}",
              "{hour} {minutes}", "{hour} {minutes}"],
    "price": ["{price_n} dollars", "{price_n} euros", "{price_n} pounds"],
    "subj": ["{name}", "{name}", "{name}", "I", "you", "he", "she", "we", "they", "the {person}",
             "my {family}", "{name} and {name}", "the {persons}"],
    "subj3": ["{name}", "{name}", "{name}", "he", "she", "the {person}", "my {family}"],
    "subjp": ["I", "you", "we", "they", "the {persons}", "{name} and {name}", "my {families}"],
    "obj": ["{name}", "{name}", "{name}", "the {person}", "my {family}", "him", "her", "them", "us",
            "me"],
    "desc": ["", "", "{adj_thing}", "{colour}", "{adj_thing} {colour}"],
    "det": ["the", "the", "a", "my", "your", "his", "her", "our", "this", "that"],
    "np": ["{det} {desc} {thing}", "{det} {desc} {thing}", "{count} {desc} {things}",
           "these {desc} {things}", "some {desc} {things}"],
    "food_np": ["some {mass}", "some {adj_food} {mass}", "{count} {adj_food_opt} {foods}",
                "a {adj_food_opt} {food}", "the {food}", "{foods}"],
    "item": ["{count} {desc} {things}", "a {desc} {thing}", "some {mass}", "{foods}",
             "the {desc} {thing}", "{count} {foods}"],
    "place": ["in {city}", "at the {site}", "in the {site}", "near the {site}", "behind the {site}",
              "next to the {site}", "outside the {site}"],
    "prep": ["on", "under", "behind", "next to", "near", "in", "beside"],
    "past": ["yesterday", "last week", "last {day}", "on {day}", "this morning", "last night",
             "in the {day_part}", "at {clock}", "{small} days ago", "in {month}", "in {year}",
             "on {day} {day_part}"],
    "future": ["tomorrow", "next week", "next {day}", "on {day}", "at {clock}",
               "tomorrow {day_part}", "in {month}", "later today", "this {day_part}",
               "in {small} minutes"],
    "habit": ["every {day}", "every morning", "every week", "on {days}", "twice a week",
              "in the {day_part}", "every {day_part}", "once a month"],
    "transport": ["train", "bus", "plane", "boat", "ferry"],
    **{s + "_opt": _optional(s) for s in ("adv", "place", "past", "future", "habit", "adj_food")},
    "adj_idea_opt": _optional("adj_idea", 0.67),
}

_SLOT = re.compile(r"\{(\w+)\}")
_SPACE_PUNCT = re.compile(r" ([,.?!])")
_ARTICLE = re.compile(r"\b([Aa]) ([a-z]+)")
_AN_WORDS = {"honest"}  # consonant letter, vowel sound: "an honest"
_A_WORDS = {"useful"}  # vowel letter, consonant sound: "a useful"
_PARSED: dict[str, list] = {}  # slot -> its alternatives, parsed (filled on first use)


def _parse(text: str):
    """"in the {site}" -> ["in the ", "site", ""]: literals at even, slot names at odd
    positions; text without slots stays a plain str (a leaf, the common case)."""
    parts = _SLOT.split(text)
    return text if len(parts) == 1 else parts


def _alternatives(slot: str) -> list:
    if slot not in _PARSED:
        if slot not in GRAMMAR:
            raise KeyError(f"grammar.py: unknown slot {{{slot}}}")
        _PARSED[slot] = [_parse(t) for t in GRAMMAR[slot]]
    return _PARSED[slot]


def _fill(rng: random.Random, parts: list, fixed: dict, out: list, used: set) -> None:
    out.append(parts[0])
    for i in range(1, len(parts), 2):
        slot = parts[i]
        if slot in fixed:
            out.append(fixed[slot])
        else:
            alts = _alternatives(slot)
            for _ in range(3):  # redraw a word this slot already gave: no "Rome, Oslo and Rome"
                alt = alts[int(rng.random() * len(alts))]  # rng.choice, but 3x faster
                if not isinstance(alt, str) or alt == "" or (slot, alt) not in used:
                    break
            if isinstance(alt, str):
                used.add((slot, alt))
                out.append(alt)
            else:
                _fill(rng, alt, fixed, out, used)
        out.append(parts[i + 1])


def _fix_article(m: re.Match) -> str:
    a, word = m.group(1), m.group(2)
    vowel = (word[0] in "aeiou" and word not in _A_WORDS) or word in _AN_WORDS
    return (a + "n " if vowel else a + " ") + word


def expand(rng: random.Random, template: str, **fixed: str) -> str:
    """Fill a template's slots at random (slots in `fixed` get the given text) and tidy it up:
    single spaces, no space before punctuation, "a" -> "an" before vowels, capital first letter."""
    out = []
    _fill(rng, _SLOT.split(template), fixed, out, set())
    text = " ".join("".join(out).split())
    text = _SPACE_PUNCT.sub(r"\1", text)  # an empty optional slot leaves "cup ."
    text = _ARTICLE.sub(_fix_article, text)
    return text[:1].upper() + text[1:]


_SHAPE_LIST = list(L.SHAPES.values())  # shapes are equally likely, whatever their template count


def sentence(rng: random.Random) -> str:
    """One sentence: a random shape (statement, question, number, list, ...), then a template."""
    return expand(rng, rng.choice(rng.choice(_SHAPE_LIST)))


def passage(rng: random.Random, min_words: int, max_words: int, draw=sentence) -> str:
    """Sentences joined by spaces, min_words..max_words words in all (long-form audio).
    `draw(rng)` makes each sentence; split_texts passes one that refuses train sentences."""
    if not 1 <= min_words <= max_words:
        raise ValueError(f"passage needs 1 <= min_words <= max_words, got {min_words}, {max_words}")
    sents, n = [], 0
    for _ in range(100_000):
        s = draw(rng)
        k = len(s.split())
        if n + k <= max_words:
            sents.append(s)
            n += k
            if n >= min_words:
                return " ".join(sents)
        elif sents and rng.random() < 0.1:  # maybe stuck just short of min: drop the last one
            n -= len(sents.pop().split())
    raise RuntimeError(f"passage: no sentences fit {min_words}..{max_words} words")


SPLITS = ("train", "dev", "test", "test_accent", "test_long")


def split_texts(seed: int, n_train: int, n_dev: int, n_test: int, n_test_accent: int,
                n_test_long: int, long_words: tuple[int, int] = (55, 85)) -> dict[str, list[str]]:
    """Texts for every split, deterministic in `seed`. Every sentence is unique across all
    splits after normalize(), including the sentences inside test_long passages, so no test
    sentence is ever seen in training. Held-out splits are drawn first, each from its own
    RNG, so they stay the same whatever n_train is."""
    seen: set[str] = set()

    def fresh(rng: random.Random) -> str:
        for _ in range(1000):
            s = sentence(rng)
            key = normalize(s)
            if key not in seen:
                seen.add(key)
                return s
        raise RuntimeError(f"split_texts: grammar exhausted after {len(seen)} unique sentences")

    def rng_for(split):
        return random.Random(f"{seed}/{split}")  # str seeds are stable across runs and versions

    out = {}
    for split, n in (("dev", n_dev), ("test", n_test), ("test_accent", n_test_accent)):
        rng = rng_for(split)
        out[split] = [fresh(rng) for _ in range(n)]
    rng = rng_for("test_long")
    out["test_long"] = [passage(rng, *long_words, draw=fresh) for _ in range(n_test_long)]
    rng = rng_for("train")
    out["train"] = [fresh(rng) for _ in range(n_train)]
    return {split: out[split] for split in SPLITS}


def vocabulary() -> set[str]:
    """Every word (as normalize() leaves it) that sentence() can emit: the words of all
    templates and of every slot alternative reachable from them."""
    words, todo, done = {"an"}, [t for shape in L.SHAPES.values() for t in shape], set()
    while todo:
        text = todo.pop()
        parts = _SLOT.split(text)
        words.update(normalize(" ".join(parts[0::2])).split())
        for slot in parts[1::2]:
            if slot not in done:
                done.add(slot)
                todo.extend(GRAMMAR[slot])
    return words
