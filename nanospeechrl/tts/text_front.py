"""
The TTS text front end: written text -> the words the model says, before tokenizing.

    spoken("Call 911 at 3:45 pm on 12/25/2026.")
    -> "Call nine one one at three forty five p m on December twenty fifth twenty twenty six."
    speakable(text)   # spoken(text), or a one-line ValueError: no words, or characters it cannot say

The LM learned to speak only the built-in grammar's text, where every number is a word
(grammar.number_words: "one hundred and fifteen", no hyphens; years as "nineteen eighty
seven"), so digits, symbols and abbreviations become such words here. On text that is already
words, such as the grammar's, spoken() is the identity. Readings, each a judgment call:

  cardinals   42 -> forty two, 12,345 -> twelve thousand three hundred and forty five;
              3.5 -> three point five; 1st -> first; 1990s -> nineteen nineties
  digit by    phone-shaped numbers (555-1234, (555) 123-4567), numbers with a leading zero
  digit       (007), and numbers of 3+ digits right after "call", "dial", ... (call 911)
  years       after "in", "since", "by", ... (in 1987) and in dates, as grammar.year_words
  times       3:45 -> three forty five, 3:05 -> three oh five, 3:00 -> three o'clock; am/pm -> a m / p m
  dates       12/25/2026 (US month first) and 2026-12-25 -> December twenty fifth twenty twenty six
  money       $3.50 -> three dollars and fifty cents; also euros, pounds and yen; 50% -> fifty percent
  ranges      10-20 -> ten to twenty (a score, 3-2, too)
  titles      Dr. Mr. Mrs. Ms. -> doctor, mister, missus, miz; No. 5 -> number five;
              St. -> street after a capitalised word (Main St.), saint before one (St. Louis)
  letters     accents are stripped (cafe, Zurich, naive: Unicode NFKD); anything else that is
              not English in Latin letters (Cyrillic, CJK, emoji) is refused by name

tts/token_lm.prompt_ids applies spoken(), the one place that training, RL, evaluation and
synthesis all go through, so a manifest's "42" is learnt as the words it is later read as.
TTS.pieces applies speakable(), the refusals, to text a person asks it to say.
"""
import re
import string
import unicodedata

from nanospeechrl.builtin.grammar import number_words, year_words
from nanospeechrl.builtin.lexicon import MONTHS, ONES
from nanospeechrl.rewards import normalize

# Letters NFKD does not take apart, and typographic punctuation: their plain ASCII forms.
_FOLD = {"ß": "ss", "æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L",
         "đ": "d", "Đ": "D", "ð": "d", "þ": "th", "ı": "i", "\u2018": "'", "\u2019": "'", "\u201c": '"',
         "\u201d": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-"}
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}
_SCALES = ((10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"))
_MONEY = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
          "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", None, None)}


def cardinal(n: int) -> str:
    """A whole number in words, in number_words' style: 2500000 -> "two million five hundred thousand"."""
    if n < 10000:
        return number_words(n)  # exactly as the grammar says it, "one thousand and five" included
    parts = []
    for value, name in _SCALES:
        if n >= value:
            parts.append(f"{cardinal(n // value)} {name}")
            n %= value
    if n:
        parts.append(("and " if n < 100 else "") + number_words(n))
    return " ".join(parts)


def ordinal(n: int) -> str:
    """25 -> "twenty fifth", 40 -> "fortieth", 100 -> "one hundredth"."""
    *head, last = cardinal(n).split()
    last = _ORDINAL.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return " ".join(head + [last])


def digits(s: str) -> str:
    """"0911" -> "zero nine one one": any other character (a separator) is dropped."""
    return " ".join(ONES[int(d)] for d in s if d.isdigit())


def number(s: str) -> str:
    """A written number, "12,345" or "3.14" -> words; one too long to say as a cardinal goes digit by digit."""
    whole, _, frac = s.replace(",", "").partition(".")
    said = cardinal(int(whole)) if len(whole) <= 15 else digits(whole)
    return said + (" point " + digits(frac) if frac else "")


def _period(m) -> str:
    """Keep an abbreviation's final "." when it also ends the sentence (end of text, or a capital next)."""
    return "." if m.group(0).endswith(".") and re.match(r"\s*$|\s+[A-Z]", m.string[m.end():]) else ""


def _time(m):
    hour, minute, half = int(m["h"]), int(m["m"] or 0), m["ap"]
    said = number_words(hour)
    if minute:
        said += (" oh " if minute < 10 else " ") + number_words(minute)
    elif not half:
        said += " o'clock"  # as the grammar says it
    return said + (f" {half.lower()} m" + _period(m) if half else "")


def _date(m):
    month, day, year = int(m["mo"]), int(m["d"]), int(m["y"])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)  # not a date: its numbers are read one by one later
    return f"{MONTHS[month - 1]} {ordinal(day)} {year_words(year)}"


def _money(m):
    one, many, cent, cents = _MONEY[m["cur"]]
    amount, scale = m["n"].replace(",", ""), m["scale"]
    whole, _, frac = amount.partition(".")
    if scale or not cent or len(frac) not in (0, 2):  # $5 million, 300 yen, $3.5: the number, then the unit
        return " ".join(filter(None, [number(amount), scale, one if amount == "1" and not scale else many]))
    big, small = int(whole), int(frac or 0)
    said = [f"{cardinal(big)} {one if big == 1 else many}"] if big or not small else []  # $0.50: fifty cents
    if small:
        said.append(f"{cardinal(small)} {cent if small == 1 else cents}")
    return " and ".join(said)


def _phone(m):
    """A phone number, group by group, digit by digit: "plus one, five five five, one two three four"."""
    return ("plus " if m[0].startswith("+") else "") + ", ".join(map(digits, re.findall(r"\d+", m[0])))


def _street_or_saint(m):
    before = m.string[:m.start()].split()
    if before and before[-1][:1].isupper() and before[-1][-1:].isalpha():  # Main St.
        return "street" + _period(m)
    return "saint" if re.match(r"\s+[A-Z]", m.string[m.end():]) else "street" + _period(m)


def _plural(words):
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


_N = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"  # 12,345.67
_A = r"(?<![A-Za-z])"  # an abbreviation starts where no letter is before it: "4Dr." is "four doctor"
# (pattern, replacement) in order: abbreviations before numbers ("No. 5"), the most specific numbers first.
RULES = [(re.compile(p, re.ASCII), f) for p, f in [
    (_A + r"Dr\.", "doctor"), (_A + r"Mrs\.", "missus"), (_A + r"Mr\.", "mister"), (_A + r"Ms\.", "miz"),
    (_A + r"St\.", _street_or_saint), (_A + r"[Nn]o\.(?=\s*\d)", "number"), (r"#(?=\d)", "number "),
    (_A + r"etc\b\.?", lambda m: "et cetera" + _period(m)), (_A + r"[Ee]\.g\.", "for example"),
    (_A + r"[Ii]\.e\.", "that is"), (_A + r"vs\b\.?", "versus"), (r"&", "and"), (r"@", "at"),
    (r"\b(?P<mo>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})\b", _date),
    (r"\b(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})\b", _date),
    (r"\b(?P<h>\d{1,2})(?::(?P<m>[0-5]\d)\b|(?=\s*[AaPp]\.?[Mm]\b))(?:\s*(?P<ap>[AaPp])\.?[Mm]\b\.?)?", _time),
    (r"\+\d[\d\s().-]*\d", _phone),  # +44 (20) 7946 0958: international, every group
    (r"(?:\((\d{3})\)\s?|\b(\d{3})[.-])(\d{3})[.-](\d{4})\b", _phone),  # (555) 123-4567, 555.123.4567
    (r"\b(\d{3})-(\d{4})\b", _phone),  # 555-1234
    (r"(?<=\d)\s?-\s?(?=\d)", " to "),  # a range, or a score: 10-20 -> ten to twenty
    (r"\b((?i:call|dial|phone|ring|text|fax)\s+)(\d{3,})\b", lambda m: m[1] + digits(m[2])),  # call 911
    (r"(?P<cur>[$€£¥])\s?(?P<n>" + _N + r")(?:\s(?P<scale>thousand|million|billion|trillion)\b)?", _money),
    (r"(" + _N + r")\s?%", lambda m: number(m[1]) + " percent"),
    (r"\b(\d+)(?:st|nd|rd|th)\b", lambda m: ordinal(int(m[1]))),
    (r"\b(\d*0)s\b", lambda m: _plural(year_words(int(m[1])) if len(m[1]) == 4 else number(m[1]))),
    (r"\b((?i:in|since|by|from|until|till|before|after|during|year|around))\s+(\d{4})\b(?![.,]\d)",
     lambda m: f"{m[1]} {year_words(int(m[2]))}"),
    (r"(?<![,.])\b0\d+\b(?![.,]\d)", lambda m: digits(m[0])),  # 007, not the 000 of 1,000
    (r"(?<![\w.])-(?=\d)", "minus "), (r"(?<![\w.])\.(\d+)", lambda m: "point " + digits(m[1])),
    (_N, lambda m: number(m[0])), (r"%", "percent"),
]]


def _fold(ch: str) -> str:
    """One character -> plain ASCII where it is a Latin letter with marks or typographic punctuation; kept
    otherwise (a currency sign is read by RULES, anything else left is refused by name)."""
    if ch.isascii() or ch in _MONEY:
        return ch
    if ch in _FOLD:
        return _FOLD[ch]
    if ch.isspace():
        return " "
    if unicodedata.category(ch) == "Cf":  # zero-width space, byte-order mark: invisible, nothing to say
        return ""
    plain = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return plain if plain.isascii() else ch


def _fit(m, said: str) -> str:
    """A replacement, spaced off the letters it touches and capitalised where it starts a sentence."""
    text, start, end = m.string, m.start(), m.end()
    before = text[:start].rstrip()
    if (not before or (before[-1] in ".!?" and text[start - 1].isspace())) and not text[start].islower():
        said = said[:1].upper() + said[1:]
    pad_left = " " if start and text[start - 1].isalnum() and said[:1].isalnum() else ""
    pad_right = " " if end < len(text) and text[end].isalnum() and said[-1:].isalnum() else ""
    return pad_left + said + pad_right


def spoken(text: str) -> str:
    """Written text -> the words the TTS says (punctuation kept: sentences still split). Never raises."""
    text = "".join(_fold(ch) for ch in text)
    for pattern, replace in RULES:
        text = pattern.sub(lambda m: _fit(m, replace if isinstance(replace, str) else replace(m)), text)
    return text


def _sayable(ch: str) -> bool:
    return ch.isascii() and (ch.isalpha() or ch.isspace() or ch in string.punctuation)


def speakable(text: str) -> str:
    """spoken(text), or a one-line ValueError: characters the model cannot say (named), or no words at all."""
    said = spoken(text)
    shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
    bad = list(dict.fromkeys(ch for ch in said if not _sayable(ch)))
    if bad:
        names = ", ".join(map(repr, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise ValueError(f"cannot say {names} in {shown}: this model speaks English written in Latin letters")
    if not normalize(said):
        raise ValueError(f"nothing to say in {shown}: the text has no words")
    return said
