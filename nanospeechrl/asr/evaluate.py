"""
Evaluation of speech-LLM checkpoints: decode every eval split (greedy, or CTC-rescored for
ASR), score it (metrics.py), print and log the results, and compare each model with the
first by paired bootstrap. evaluate_ctc checks a stage-0 CTC encoder before any LLM.
"""
import time

import torch

from nanospeechrl.asr.speechlm import load_speechlm, prompt_ids
from nanospeechrl.asr.windows import transcribe_windows
from nanospeechrl.data import to_batch
from nanospeechrl.devices import autocast
from nanospeechrl.encoder import ctc_greedy_decode, ctc_text
from nanospeechrl.metrics import bootstrap_bleu_diff, bootstrap_wer_diff, error_counts, text_scores


@torch.no_grad()
def transcribe_all(model, tokenizer, feats, device, batch_size=32, max_new_tokens=160, prompts=None, nbest=0,
                   ctc_weight=0.1, seed=0, window_frames=None):
    """Outputs for a list of log-mel features, batched by length, in input order: greedy, or with
    nbest > 0 the CTC-rescored best of greedy + nbest samples (SpeechLM.decode; ASR only).
    prompts: each utterance's prompt ids ([<task>] + prompt tokens); default the ASR prompt.
    window_frames (ASR): inputs longer than this are cut at pauses, their windows' texts joined."""
    if window_frames:
        if prompts is not None:
            raise ValueError("windows are for ASR: a question or translation needs the whole audio at once")
        return transcribe_windows(lambda fs: transcribe_all(model, tokenizer, fs, device, batch_size, max_new_tokens,
                                                            None, nbest, ctc_weight, seed), feats, window_frames)
    model.eval()
    prompts = prompts or [[tokenizer.task_id("asr")]] * len(feats)
    generator = torch.Generator(device).manual_seed(seed)  # the samples, when nbest > 0
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]))
    hyps = [None] * len(feats)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        b = to_batch(feats, idx, device)
        with autocast(device):
            texts = model.decode(b["feats"], b["feat_lens"], [prompts[i] for i in idx], tokenizer, max_new_tokens,
                                 nbest=nbest, ctc_weight=ctc_weight, generator=generator)
        for i, text in zip(idx, texts):
            hyps[i] = text
    return hyps


def print_result(name, r, n):
    if r.get("ref_words") == 0:  # nothing said in any clip (no_speech): only insertions can happen
        print(f"{name:16s} {r['nonempty']} of {n} transcripts not empty ({r['ins']} words inserted)")
    elif "bleu" in r:
        print(f"{name:16s} BLEU {r['bleu']:5.1f}  chrF {r['chrf']:5.1f}  exact {100 * r['exact']:5.1f}%  ({n} items)")
    else:
        print(f"{name:16s} WER {100 * r['wer']:5.1f}%  CER {100 * r['cer']:5.1f}%  (sub {r['sub']}, del {r['del']}, "
              f"ins {r['ins']} of {r['ref_words']} words; {r['loops']} looping or runaway; {n} utts)")


@torch.no_grad()
def evaluate_ctc(encoder, head, examples, feats, batch_size, device, log):
    """Greedy CTC decoding of a stage-0 encoder: how well it hears, before any LLM."""
    if not all(ex.spoken for ex in examples):
        print("stage0 CTC greedy: not scored (the eval set does not say what its audio says)")
        return
    encoder.eval(), head.eval()
    hyps = []
    for start in range(0, len(feats), batch_size):
        b = to_batch(feats, range(start, min(start + batch_size, len(feats))), device)
        hidden, out_lens = encoder(b["feats"], b["feat_lens"])
        hyps += [ctc_text(ids) for ids in ctc_greedy_decode(head(hidden).float(), out_lens)]
    r = error_counts([ex.spoken for ex in examples], hyps)
    log({"stage": "eval_ctc", **r, "n": len(examples)})
    print(f"stage0 CTC greedy: WER {100 * r['wer']:.1f}%  CER {100 * r['cer']:.1f}%\n    ref: {examples[0].spoken}\n"
          f"    hyp: {hyps[0]}")


def scores(examples, hyps):
    """WER and friends for ASR examples, BLEU / chrF / exact match for the other tasks."""
    refs = [ex.text for ex in examples]
    return error_counts(refs, hyps) if examples[0].task == "asr" else text_scores(refs, hyps)


def evaluate_models(models, evals, device, batch_size, max_new_tokens, log, max_prompt_tokens=64, nbest=0,
                    ctc_weight=0.1, window_frames=None):
    """models: [(name, checkpoint dir)]; evals: {split: (examples, feats)}, one task per split;
    nbest, ctc_weight: ASR decoding (transcribe_all), greedy for the other tasks. ASR audio longer
    than the encoder takes is transcribed in windows cut at pauses; a split with utterances longer
    than window_frames is scored again as "<split> (windows)", each cut into windows of at most
    that many frames (so a reader sees whether errors come from length or from content).
    Prints and logs each model's results; then, for every model after the first, its WER
    (asr) or BLEU difference to the first with a paired-bootstrap 95% interval.
    Returns {(name, split): hypotheses}."""
    runs = []  # (label, examples, feats, window frames or None)
    for split, (examples, feats) in evals.items():
        runs.append((split, examples, feats, None))
        if examples[0].task == "asr" and window_frames and max(len(f) for f in feats) > window_frames:
            runs.append((f"{split} (windows)", examples, feats, window_frames))
    hyps = {}
    for name, path in models:
        model, tokenizer = load_speechlm(path, device)
        print(f"== {name} ({path})")
        for split, examples, feats, window in runs:
            t0 = time.time()
            if examples[0].task == "asr":
                hyps[name, split] = transcribe_all(model, tokenizer, feats, device, batch_size, max_new_tokens, None,
                                                   nbest, ctc_weight, window_frames=window or
                                                   model.encoder.config.max_frames)
            else:
                prompts = [prompt_ids(tokenizer, ex, max_prompt_tokens)[0] for ex in examples]
                hyps[name, split] = transcribe_all(model, tokenizer, feats, device, batch_size, max_new_tokens,
                                                   prompts)
            r = scores(examples, hyps[name, split])
            log({"stage": "eval", "model": name, "split": split, **r, "n": len(examples), "time": time.time() - t0})
            print_result(split, r, len(examples))
            for ex, h in list(zip(examples, hyps[name, split]))[:2]:
                print((f"    question: {ex.prompt}\n" if ex.prompt else "") + f"    ref: {ex.text}\n    hyp: {h}")
    base = models[0][0]
    for name, _ in models[1:]:
        for split, examples, _, _ in runs:
            refs, asr = [ex.text for ex in examples], examples[0].task == "asr"
            d, lo, hi = (bootstrap_wer_diff if asr else bootstrap_bleu_diff)(refs, hyps[base, split], hyps[name, split])
            metric, k = ("wer", 100) if asr else ("bleu", 1)
            log({"stage": "compare", "model": name, "base": base, "split": split, f"{metric}_diff": d, "low": lo,
                 "high": hi})
            print(f"{split:16s} {metric.upper()}({name}) - {metric.upper()}({base}) = {k * d:+.1f} points, "
                  f"95% CI [{k * lo:+.1f}, {k * hi:+.1f}]")
    return hyps


def seed_summary(methods, evals, hyps, log):
    """Replicates (--seeds): per split, each method's mean and spread (sample sd) over its
    replicates, and the paired-bootstrap interval of the difference of mean scores to the
    equal-time control ("sft+", else "sft"), so item noise and seed noise both show.
    methods: {method: [model names]}; hyps: evaluate_models' result."""
    base = "sft+" if "sft+" in methods else "sft"
    for split, (examples, _) in evals.items():
        refs, asr = [ex.text for ex in examples], examples[0].task == "asr"
        metric, k = ("wer", 100) if asr else ("bleu", 1)
        for method, names in methods.items():
            rows = [scores(examples, hyps[name, split]) for name in names]
            keys = ("wer", "cer", "ins", "loops") if asr else ("bleu", "chrf", "exact")
            mean = {key: sum(r[key] for r in rows) / len(rows) for key in keys}
            sd = (sum((r[metric] - mean[metric]) ** 2 for r in rows) / max(1, len(rows) - 1)) ** 0.5
            row = {"stage": "seeds", "method": method, "split": split, "seeds": len(rows), **mean, f"{metric}_sd": sd}
            line = f"{split:16s} {method:11s} {metric.upper()} {k * mean[metric]:5.1f} ± {k * sd:.1f} ({len(rows)} seeds)"
            if method != base:
                d, lo, hi = (bootstrap_wer_diff if asr else bootstrap_bleu_diff)(
                    refs, [hyps[name, split] for name in methods[base]], [hyps[name, split] for name in names])
                row.update(base=base, diff=d, low=lo, high=hi)
                line += f"  mean - mean({base}) = {k * d:+.1f} [{k * lo:+.1f}, {k * hi:+.1f}]"
            log(row)
            print(line)
