"""
The numbers evaluation reports, on normalised text (rewards.normalize): WER / CER with
substitution, deletion and insertion counts (jiwer) and looping outputs; corpus BLEU, chrF
(sacrebleu) and exact match; paired-bootstrap intervals for the WER or BLEU difference
between two systems on the same items.
"""
import random

import jiwer
import sacrebleu
from sacrebleu.metrics import BLEU

from nanospeechrl.rewards import is_hallucination, normalize


def error_counts(refs, hyps):
    """Word and character error rates with S/D/I counts and the number of looping outputs."""
    refs, hyps = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return {"wer": words.wer, "cer": chars.cer, "sub": words.substitutions, "del": words.deletions,
            "ins": words.insertions, "ref_words": sum(len(r.split()) for r in refs),
            "loops": sum(is_hallucination(h, r) for h, r in zip(hyps, refs)),
            "nonempty": sum(bool(h) for h, r in zip(hyps, refs) if not r)}  # words where nothing was said


def word_errors(refs, hyps, unit="word"):
    """Per-utterance (errors, reference words) on normalised text; unit="char": characters."""
    out = []
    for r, h in zip(refs, hyps):
        r, h = normalize(r), normalize(h)
        if unit == "char":  # spaces count, as in jiwer's CER ("_" never survives normalize)
            r, h = list(r.replace(" ", "_")), list(h.replace(" ", "_"))
        else:
            r, h = r.split(), h.split()
        if not r:
            out.append((len(h), 0))
            continue
        w = jiwer.process_words(" ".join(r), " ".join(h))
        out.append((w.substitutions + w.deletions + w.insertions, len(r)))
    return out


def text_scores(refs, hyps):
    """Corpus BLEU and chrF (sacrebleu, 0-100) and exact match (0-1) on normalised text."""
    refs, hyps = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score, "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
            "exact": sum(h == r for h, r in zip(hyps, refs)) / max(1, len(refs))}


def bleu_stats(refs, hyps):
    """Per-sentence BLEU sufficient statistics (n-gram matches, n-gram totals, lengths), so a
    resample's corpus BLEU is a sum, not a rescoring."""
    out = []
    for r, h in zip(refs, hyps):
        s = sacrebleu.sentence_bleu(normalize(h), [normalize(r)])
        out.append((s.counts, s.totals, s.sys_len, s.ref_len))
    return out


def corpus_bleu_from(stats, idx):
    """Corpus BLEU (as sacrebleu.corpus_bleu) of the sentences idx, from bleu_stats."""
    pick = [stats[i] for i in idx]
    counts = [sum(s[0][n] for s in pick) for n in range(4)]
    totals = [sum(s[1][n] for s in pick) for n in range(4)]
    return BLEU.compute_bleu(counts, totals, sum(s[2] for s in pick), sum(s[3] for s in pick),
                             smooth_method="exp").score


def bootstrap_diff(metric, n, n_resamples=2000, seed=0):
    """metric(indices) -> the difference of two systems on those items; returns the
    difference on all n items and its paired-bootstrap 95% interval (resampling items with
    replacement): (diff, low, high)."""
    rng = random.Random(seed)
    stats = sorted(metric([rng.randrange(n) for _ in range(n)]) for _ in range(n_resamples))
    return metric(range(n)), stats[int(0.025 * n_resamples)], stats[int(0.975 * n_resamples) - 1]


def bootstrap_wer_diff(refs, hyps_a, hyps_b, n_resamples=2000, seed=0, unit="word"):
    """WER(b) - WER(a) (unit="char": CER) and its 95% interval. Negative: b makes fewer errors."""
    a, b = word_errors(refs, hyps_a, unit), word_errors(refs, hyps_b, unit)

    def diff(idx):
        words = sum(a[i][1] for i in idx)
        return (sum(b[i][0] for i in idx) - sum(a[i][0] for i in idx)) / max(1, words)

    return bootstrap_diff(diff, len(refs), n_resamples, seed)


def bootstrap_bleu_diff(refs, hyps_a, hyps_b, n_resamples=1000, seed=0):
    """BLEU(b) - BLEU(a) (corpus BLEU points) and its 95% interval. Positive: b is better."""
    a, b = bleu_stats(refs, hyps_a), bleu_stats(refs, hyps_b)
    return bootstrap_diff(lambda idx: corpus_bleu_from(b, idx) - corpus_bleu_from(a, idx), len(refs),
                          n_resamples, seed)
