"""
Rule-based rewards for RL. Each is a plain function

    reward(hyps: list[str], refs: list[str], **fields) -> list[float]

on raw strings (they normalise internally with `normalize`, the one text normaliser, which
every metric in metrics.py uses too), so a reward is exactly the metric it stands for.
`parse_rewards("wer:1,hallucination:0.5")` checks names and weights once at start-up;
`score()` runs them all and returns the weighted sum plus each reward on its own (logged
as rewards/<name>).
"""
import math
import re
from collections import Counter

import jiwer
import sacrebleu

_PUNCT = re.compile(r"[^\w\s']|_")  # everything but letters, digits, spaces and apostrophes
_QUOTE = re.compile(r"\B'|'\B")  # an apostrophe not between two word characters


def normalize(text: str) -> str:
    """THE text normaliser for every WER/CER/BLEU number and reward: lowercase, punctuation
    to spaces (apostrophes inside words kept: "don't"), whitespace collapsed."""
    text = text.lower().replace("\u2019", "'")  # typographic apostrophe -> ASCII
    text = _PUNCT.sub(" ", text)  # punctuation, hyphens included, becomes a space
    text = _QUOTE.sub(" ", text)  # quotes go; "don't" keeps its apostrophe
    return " ".join(text.split())


def _error_rate(hyp, ref, measure):
    if not ref:  # nothing to say: any output is an insertion
        return 0.0 if not hyp else 1.0
    return measure(ref, hyp)


def wer(hyps, refs, **fields):
    """1 - word error rate, floored at 0."""
    return [max(0.0, 1.0 - _error_rate(normalize(h), normalize(r), jiwer.wer)) for h, r in zip(hyps, refs)]


def cer(hyps, refs, **fields):
    """1 - character error rate, floored at 0."""
    return [max(0.0, 1.0 - _error_rate(normalize(h), normalize(r), jiwer.cer)) for h, r in zip(hyps, refs)]


def ngrams(words, n):
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def is_hallucination(hyp, ref, n=3, max_ratio=2.0, slack=4):
    """True when hyp loops (some n-gram occurs more than once and more often than in ref), is far
    longer than ref (more than max_ratio * len(ref) + slack words), or says anything where
    nothing was said (an empty ref: silence or noise)."""
    h, r = normalize(hyp).split(), normalize(ref).split()
    if not r:
        return bool(h)
    if len(h) > max_ratio * len(r) + slack:
        return True
    ref_counts = ngrams(r, n)
    return any(c > 1 and c > ref_counts[g] for g, c in ngrams(h, n).items())


def hallucination(hyps, refs, **fields):
    """-1 for a looping or runaway hypothesis, or words where nothing was said; else 0."""
    return [-1.0 if is_hallucination(h, r) else 0.0 for h, r in zip(hyps, refs)]


STOPWORDS = set("""a an the and or but if of to in on at by for with from into onto over under up down
out off as is are was were be been being am do does did has have had it its this that these those there
here he she they we you i me him her them us my your his their our what which who whom whose where when
why how not no yes so than then too very can could will would shall should may might must s""".split())


def keywords(text):
    return Counter(w for w in normalize(text).split() if w not in STOPWORDS)


def keyword(hyps, refs, **fields):
    """Mean of precision and recall of content words (not in STOPWORDS), counted with multiplicity."""
    out = []
    for h, r in zip(hyps, refs):
        hk, rk = keywords(h), keywords(r)
        if not rk:
            out.append(1.0 if not hk else 0.0)
            continue
        hit = sum((hk & rk).values())
        out.append(0.5 * (hit / max(1, sum(hk.values())) + hit / sum(rk.values())))
    return out


def bleu(hyps, refs, **fields):
    """sacrebleu sentence BLEU / 100 on normalised text (smoothed, so short answers score)."""
    return [sacrebleu.sentence_bleu(normalize(h), [normalize(r)]).score / 100 for h, r in zip(hyps, refs)]


def chrf(hyps, refs, **fields):
    """sacrebleu sentence chrF / 100 on normalised text: character n-grams, so a near-miss word
    (a wrong inflection, a misheard name) earns partial credit where BLEU's word n-grams give none."""
    return [sacrebleu.sentence_chrf(normalize(h), [normalize(r)]).score / 100 for h, r in zip(hyps, refs)]


REWARDS = {"wer": wer, "cer": cer, "hallucination": hallucination, "keyword": keyword, "bleu": bleu, "chrf": chrf}
TASK_REWARDS = {"asr": "wer:1,hallucination:1", "sqa": "bleu:1", "ast": "bleu:1"}  # when --reward is not given


def parse_rewards(spec, known=None):
    """"wer:1,hallucination:0.5" (weight 1 when left out) -> {name: weight}; names not in
    `known` (default REWARDS; tts/rewards.py has its own) fail."""
    known = REWARDS if known is None else known
    weights = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, w = (part.strip() for part in item.partition(":"))
        if name not in known:
            raise ValueError(f"unknown reward {name!r} in {spec!r}; choose from {', '.join(known)}")
        try:
            weights[name] = float(w) if w else 1.0
        except ValueError:
            weights[name] = math.nan
        if not math.isfinite(weights[name]):
            raise ValueError(f"reward weight {w!r} for {name!r} is not a finite number (write name:weight)")
    if not weights:
        raise ValueError(f"no reward in {spec!r}; choose from {', '.join(known)}")
    return weights


def score(weights, hyps, refs, known=None, **fields):
    """-> (weighted total per hypothesis, {name: per-hypothesis list}); known: as parse_rewards."""
    parts = {name: (REWARDS if known is None else known)[name](hyps, refs, **fields) for name in weights}
    total = [sum(weights[name] * parts[name][i] for name in weights) for i in range(len(hyps))]
    return total, parts


def score_tasks(task_weights, hyps, refs, tasks):
    """score() with each hypothesis scored by its own task's rewards (task_weights: {task:
    weights}). Parts hold None where a reward is not one of that task's."""
    total, parts = [0.0] * len(hyps), {}
    for task in dict.fromkeys(tasks):
        rows = [i for i, t in enumerate(tasks) if t == task]
        t, p = score(task_weights[task], [hyps[i] for i in rows], [refs[i] for i in rows])
        for j, i in enumerate(rows):
            total[i] = t[j]
            for name, values in p.items():
                parts.setdefault(name, [None] * len(hyps))[i] = values[j]
    return total, parts
