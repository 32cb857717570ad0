"""The TTS text front end: numbers, times, dates, money and abbreviations read as the built-in grammar
speaks them; text the model cannot say refused by name; the identity on the grammar's own text."""
import random

import pytest

from nanospeechrl.builtin.grammar import number_words, passage, sentence, vocabulary, year_words
from nanospeechrl.rewards import normalize
from nanospeechrl.tokenizer import Tokenizer
from nanospeechrl.tts.text_front import cardinal, ordinal, speakable, spoken
from nanospeechrl.tts.token_lm import prompt_ids

READINGS = [
    ("Call 911 at 3:45 pm on 12/25/2026.",
     "Call nine one one at three forty five p m on December twenty fifth twenty twenty six."),
    # cardinals, decimals, ordinals, decades, years
    ("I have 42 cats.", "I have forty two cats."),
    ("42 cats.", "Forty two cats."),  # a sentence starts with a capital, as the grammar writes it
    ("There were 115 and 12,345 people.", "There were one hundred and fifteen and twelve thousand three hundred and "
                                          "forty five people."),
    ("About 2,500,000 or 1000000 stars, 1,000 or 1,005.", "About two million five hundred thousand or one million "
                                                          "stars, one thousand or one thousand and five."),
    ("It is 3.5 or 0.25 or .5 m.", "It is three point five or zero point two five or point five m."),
    ("The 1st, 2nd, 3rd, 12th and 21st.", "The first, second, third, twelfth and twenty first."),
    ("In the 1990s and the 80s.", "In the nineteen nineties and the eighties."),
    ("She was born in 1987 and moved here since 2005.", "She was born in nineteen eighty seven and moved here since "
                                                         "two thousand and five."),
    ("It was -5 and 5kg.", "It was minus five and five kg."),
    ("Read pages 10-20, it ended 3 - 2.", "Read pages ten to twenty, it ended three to two."),
    # digit by digit: phone numbers, leading zeros, after "call" or "dial"
    ("Agent 007 called.", "Agent zero zero seven called."),
    ("Dial 112 or call 555-1234.", "Dial one one two or call five five five, one two three four."),
    ("Ring (555) 123-4567.", "Ring five five five, one two three, four five six seven."),
    ("Or +44 20 7946 0958.", "Or plus four four, two zero, seven nine four six, zero nine five eight."),
    # times
    ("At 12:00 and 3:05 and 9 am.", "At twelve o'clock and three oh five and nine a m."),
    ("Meet at 3:30 p.m. on Monday.", "Meet at three thirty p m on Monday."),
    ("Meet at 3:30 p.m. Then go.", "Meet at three thirty p m. Then go."),  # the "." also ends the sentence
    # dates
    ("On 2026-12-25 or 1/2/2000.", "On December twenty fifth twenty twenty six or January second two thousand."),
    # money, percent
    ("It costs $5, $1, $3.50 or $0.50.", "It costs five dollars, one dollar, three dollars and fifty cents or fifty "
                                         "cents."),
    ("Pay €10, £2, £1.01 or ¥300.", "Pay ten euros, two pounds, one pound and one penny or three hundred yen."),
    ("A $5 million deal, 50% off.", "A five million dollars deal, fifty percent off."),
    # abbreviations, symbols
    ("Dr. Smith met Mr. and Mrs. Jones and Ms. Lee.", "Doctor Smith met mister and missus Jones and miz Lee."),
    ("He lives on Main St. near St. Paul's church.", "He lives on Main street near saint Paul's church."),
    ("St. Louis is on Elm St.", "Saint Louis is on Elm street."),
    ("Take No. 5, e.g. this, i.e. that, etc.", "Take number five, for example this, that is that, et cetera."),
    ("Tom vs. Jerry & friends @ home, #1 fan.", "Tom versus Jerry and friends at home, number one fan."),
    # letters: accents stripped, typographic punctuation made plain, invisible characters dropped
    ("Café naïve Zürich Straße “quoted” — it’s fine…\u200b",
     "Cafe naive Zurich Strasse \"quoted\" - it's fine..."),
]


@pytest.mark.parametrize("text, said", READINGS, ids=[t for t, _ in READINGS])
def test_written_forms_are_read_as_words(text, said):
    assert spoken(text) == said
    assert spoken(said) == said  # idempotent: prompt_ids may read text that TTS.pieces already read
    assert speakable(text) == said


def test_numbers_are_the_grammars_words():
    """cardinal() is number_words() where that reaches, the same style beyond it (no hyphens, British
    "and"), and every word it uses for any number is one the grammar already speaks."""
    assert all(cardinal(n) == number_words(n) for n in range(10000))
    assert cardinal(10 ** 6 + 5) == "one million and five"
    assert cardinal(123_456_789) == ("one hundred and twenty three million four hundred and fifty six thousand "
                                     "seven hundred and eighty nine")
    known = vocabulary() | {"zero", "million", "billion", "trillion"}  # the grammar never counts to 0 or 10**6
    rng = random.Random(0)
    for n in [rng.randrange(10 ** rng.randrange(1, 13)) for _ in range(2000)]:
        assert set(cardinal(n).split()) <= known, n
        assert "-" not in cardinal(n)
    assert [ordinal(n) for n in (1, 2, 3, 5, 8, 9, 12, 20, 25, 40, 100, 1000)] == [
        "first", "second", "third", "fifth", "eighth", "ninth", "twelfth", "twentieth", "twenty fifth", "fortieth",
        "one hundredth", "one thousandth"]
    assert spoken("in 1987") == "in " + year_words(1987) and spoken("12/25/2026").endswith(year_words(2026))


def test_no_digit_survives_the_front_end_and_reading_twice_changes_nothing():
    """Random strings of digits, separators, signs, abbreviations' letters and a few characters it cannot
    say: the result never holds a digit, and reading it again leaves it as it is."""
    rng = random.Random(0)
    alphabet = "0123456789" * 3 + " .,:;/-+()$%€£¥#&@'\"!? apmstndrhStDrMNoeé½²П😀"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30)))
        said = spoken(text)
        assert not any(c in "0123456789" for c in said) and spoken(said) == said, (text, said)


@pytest.mark.parametrize("text, named", [
    ("Привет, мир!", "cannot say 'П', 'р', 'и', 'в', 'е', 'т', 'м'"),
    ("Hello 😀 there", "cannot say '😀'"),
    ("我爱你", "cannot say '我', '爱', '你'"),
    ("Price: 5 € ©", "cannot say '€', '©'"),  # a currency sign with no amount after it is not read
    ("abcдеёжзийклмно", "cannot say 'д', 'е', 'ё', 'ж', 'з', 'и', 'й', 'к', 'л', 'м' ..."),  # 10 named, then ...
])
def test_characters_it_cannot_say_are_refused_by_name(text, named):
    with pytest.raises(ValueError) as e:
        speakable(text)
    message = str(e.value)
    assert message.startswith(named) and "\n" not in message and "Latin letters" in message


@pytest.mark.parametrize("text", ["", "   ", "?!", "... -- ...", "\u200b", "“ ”"])
def test_text_with_nothing_to_say_is_refused(text):
    with pytest.raises(ValueError, match="the text has no words") as e:
        speakable(text)
    assert "\n" not in str(e.value)


def test_the_grammars_own_text_is_unchanged_and_so_are_its_prompts():
    """The LM was trained on these sentences: the front end must not change one character of them, so
    prompt_ids gives exactly the ids it gave before the front end existed."""
    rng = random.Random(0)
    texts = [sentence(rng) for _ in range(500)] + [passage(rng, 55, 85) for _ in range(20)]
    changed = [t for t in texts if spoken(t) != t]
    assert changed == []
    assert all(speakable(t) == t for t in texts[:100])
    tok = Tokenizer.train(texts[:200], vocab_size=300)
    for t in texts:
        assert prompt_ids(tok, t, 7) == [8 + i for i in [tok.task_id("tts")] + tok.encode(t) + [tok.bos_id]]
    assert prompt_ids(tok, "I have 42 cats.", 7) == prompt_ids(tok, "I have forty two cats.", 7)
    assert normalize(spoken("I paid $5.")) == "i paid five dollars"
