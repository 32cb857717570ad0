"""
Evaluation: batched greedy transcription, WER / CER with substitution, deletion and
insertion counts on normalised text (jiwer), looping outputs, and a paired bootstrap
interval for the WER difference between two systems on the same utterances.
"""
import random
import time

import jiwer
import torch

from nanospeechrl.corpus import normalize
from nanospeechrl.encoder import ctc_greedy_decode, ctc_text
from nanospeechrl.rewards import is_hallucination
from nanospeechrl.speechlm import load_speechlm
from nanospeechrl.trainer import autocast, to_batch


def error_counts(refs, hyps):
    """Word and character error rates with S/D/I counts and the number of looping outputs."""
    refs, hyps = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return {"wer": words.wer, "cer": chars.cer, "sub": words.substitutions, "del": words.deletions,
            "ins": words.insertions, "ref_words": sum(len(r.split()) for r in refs),
            "loops": sum(is_hallucination(h, r) for h, r in zip(hyps, refs))}


def word_errors(refs, hyps):
    """Per-utterance (errors, reference words) on normalised text."""
    out = []
    for r, h in zip(refs, hyps):
        r, h = normalize(r), normalize(h)
        if not r:
            out.append((len(h.split()), 0))
            continue
        w = jiwer.process_words(r, h)
        out.append((w.substitutions + w.deletions + w.insertions, len(r.split())))
    return out


def bootstrap_wer_diff(refs, hyps_a, hyps_b, n_resamples=2000, seed=0):
    """WER(b) - WER(a) on these utterances and its paired-bootstrap 95% interval (resampling
    utterances with replacement): (diff, low, high). Negative: b makes fewer errors."""
    a, b = word_errors(refs, hyps_a), word_errors(refs, hyps_b)
    rng = random.Random(seed)

    def diff(idx):
        words = sum(a[i][1] for i in idx)
        return (sum(b[i][0] for i in idx) - sum(a[i][0] for i in idx)) / max(1, words)

    stats = sorted(diff([rng.randrange(len(a)) for _ in a]) for _ in range(n_resamples))
    return diff(range(len(a))), stats[int(0.025 * n_resamples)], stats[int(0.975 * n_resamples) - 1]


@torch.no_grad()
def transcribe_all(model, tokenizer, feats, device, batch_size=32, max_new_tokens=160):
    """Greedy transcripts of a list of log-mel features, batched by length, in input order."""
    model.eval()
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]))
    hyps = [None] * len(feats)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        b = to_batch(feats, idx, device)
        with autocast(device):
            out = model.transcribe(b["feats"], b["feat_lens"], tokenizer, max_new_tokens=max_new_tokens)
        for i, h in zip(idx, out):
            hyps[i] = h
    return hyps


def print_result(name, r, n):
    print(f"{name:12s} WER {100 * r['wer']:5.1f}%  CER {100 * r['cer']:5.1f}%  (sub {r['sub']}, del {r['del']}, "
          f"ins {r['ins']} of {r['ref_words']} words; {r['loops']} looping; {n} utts)")


@torch.no_grad()
def evaluate_ctc(encoder, head, examples, feats, batch_size, device, log):
    """Greedy CTC decoding of a stage-0 encoder: how well it hears, before any LLM."""
    encoder.eval(), head.eval()
    hyps = []
    for start in range(0, len(feats), batch_size):
        b = to_batch(feats, range(start, min(start + batch_size, len(feats))), device)
        hidden, out_lens = encoder(b["feats"], b["feat_lens"])
        hyps += [ctc_text(ids) for ids in ctc_greedy_decode(head(hidden).float(), out_lens)]
    r = error_counts([ex.text for ex in examples], hyps)
    log({"stage": "eval_ctc", **r, "n": len(examples)})
    print(f"stage0 CTC greedy: WER {100 * r['wer']:.1f}%  CER {100 * r['cer']:.1f}%\n    ref: {examples[0].text}\n"
          f"    hyp: {hyps[0]}")


def evaluate_models(models, evals, device, batch_size, max_new_tokens, log):
    """models: [(name, checkpoint dir)]; evals: {split: (examples, feats)}. Prints and logs each
    model's results; then, for every model after the first, its WER difference to the first
    with a paired-bootstrap 95% interval. Returns {(name, split): hypotheses}."""
    hyps = {}
    for name, path in models:
        model, tokenizer = load_speechlm(path, device)
        print(f"== {name} ({path})")
        for split, (examples, feats) in evals.items():
            t0 = time.time()
            hyps[name, split] = transcribe_all(model, tokenizer, feats, device, batch_size, max_new_tokens)
            r = error_counts([ex.text for ex in examples], hyps[name, split])
            log({"stage": "eval", "model": name, "split": split, **r, "n": len(examples), "time": time.time() - t0})
            print_result(split, r, len(examples))
            for ex, h in list(zip(examples, hyps[name, split]))[:2]:
                print(f"    ref: {ex.text}\n    hyp: {h}")
    base = models[0][0]
    for name, _ in models[1:]:
        for split, (examples, _) in evals.items():
            d, lo, hi = bootstrap_wer_diff([ex.text for ex in examples], hyps[base, split], hyps[name, split])
            log({"stage": "compare", "model": name, "base": base, "split": split, "wer_diff": d, "low": lo, "high": hi})
            print(f"{split:12s} WER({name}) - WER({base}) = {100 * d:+.1f} points, 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    return hyps
