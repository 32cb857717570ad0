"""
The numbers evaluation reports, on normalised text (rewards.normalize): WER / CER with
substitution, deletion and insertion counts (jiwer) and looping outputs; corpus BLEU, chrF
(sacrebleu) and exact match; paired-bootstrap intervals for the WER or BLEU difference
between two systems on the same items.
"""
import jiwer
import numpy as np
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
    """Per-sentence BLEU sufficient statistics, an (items, 10) array of n-gram matches (4),
    n-gram totals (4), hypothesis and reference lengths, so a resample's corpus BLEU is a sum."""
    out = []
    for r, h in zip(refs, hyps):
        s = sacrebleu.sentence_bleu(normalize(h), [normalize(r)])
        out.append([*s.counts, *s.totals, s.sys_len, s.ref_len])
    return np.array(out, dtype=np.int64).reshape(len(out), 10)


def corpus_bleu_from(stats, idx):
    """Corpus BLEU (as sacrebleu.corpus_bleu) of the sentences idx, from bleu_stats."""
    c = stats[np.asarray(idx, dtype=np.int64)].sum(0).tolist()
    return BLEU.compute_bleu(c[:4], c[4:8], c[8], c[9], smooth_method="exp").score


def bootstrap_diff(metric, n, n_resamples=2000, seed=0):
    """metric(indices) -> the difference of two systems on those items; returns the
    difference on all n items and its paired-bootstrap 95% interval (resampling items with
    replacement): (diff, low, high)."""
    rng = np.random.default_rng(seed)
    stats = sorted(metric(rng.integers(0, n, n)) for _ in range(n_resamples))
    return metric(np.arange(n)), stats[int(0.025 * n_resamples)], stats[int(0.975 * n_resamples) - 1]


def _systems(hyps):
    """One system's hypotheses (a list of str) or several systems' (seeds): a list of systems."""
    return [hyps] if isinstance(hyps[0], str) else hyps


def bootstrap_wer_diff(refs, hyps_a, hyps_b, n_resamples=2000, seed=0, unit="word"):
    """WER(b) - WER(a) (unit="char": CER) and its 95% interval. Negative: b makes fewer errors.
    hyps_a, hyps_b: one system each, or each a list of systems (seeds): their mean WERs."""
    errors = [[np.array(word_errors(refs, h, unit)) for h in _systems(hyps)] for hyps in (hyps_a, hyps_b)]

    def mean_wer(systems, idx):
        return sum(e[idx, 0].sum() for e in systems) / len(systems) / max(1, systems[0][idx, 1].sum())

    return bootstrap_diff(lambda idx: mean_wer(errors[1], idx) - mean_wer(errors[0], idx), len(refs), n_resamples,
                          seed)


def bootstrap_bleu_diff(refs, hyps_a, hyps_b, n_resamples=1000, seed=0):
    """BLEU(b) - BLEU(a) (corpus BLEU points) and its 95% interval. Positive: b is better.
    hyps_a, hyps_b: one system each, or each a list of systems (seeds): their mean BLEUs."""
    stats = [[bleu_stats(refs, h) for h in _systems(hyps)] for hyps in (hyps_a, hyps_b)]

    def mean_bleu(systems, idx):
        return sum(corpus_bleu_from(s, idx) for s in systems) / len(systems)

    return bootstrap_diff(lambda idx: mean_bleu(stats[1], idx) - mean_bleu(stats[0], idx), len(refs), n_resamples,
                          seed)
