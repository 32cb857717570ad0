"""
How much of the speech tokens the text cannot predict, in a finished train_tts.py run:

  - code entropy H(code) and how much of it the voice explains: I(code; voice) = H(code) -
    H(code | voice), from unigram counts over the training utterances' tokens, minus the same
    estimate with the voice labels shuffled (the plug-in estimate's bias at these counts);
  - code use per voice (share of the codebook a voice's utterances use) against all voices';
  - the same text in two voices (the test texts in held-out and in training voices): the token
    edit distance between their sequences per token, against two different texts;
  - the LM's dev loss (nats per token, from metrics.jsonl): an upper bound on H(tokens | text).

    python bench/tts_tokens.py [--run out/tts] [--n 3000]
"""
import argparse
import json
import math
import os
import random
import sys
from collections import Counter
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import jiwer  # noqa: E402

from nanospeechrl.checkpoint import read_config  # noqa: E402
from nanospeechrl.devices import pick_device  # noqa: E402
from nanospeechrl.tts.corpora import SEEN, UNSEEN, load_tts_data  # noqa: E402
from nanospeechrl.tts.synthesis import load_model  # noqa: E402
from nanospeechrl.tts.tokens import tokenize_all  # noqa: E402


def entropy(counts):
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values() if c)


def voice_information(tokens, voices):
    """I(code; voice) in bits by plug-in: H(code) - sum_v p(v) H(code | v)."""
    pooled, per = Counter(), {}
    for t, v in zip(tokens, voices):
        pooled.update(t)
        per.setdefault(v, Counter()).update(t)
    n = sum(pooled.values())
    conditional = sum(sum(c.values()) / n * entropy(c) for c in per.values())
    return entropy(pooled), entropy(pooled) - conditional, per


def token_distance(a, b):
    """Edit distance per token of b (jiwer on tokens as words)."""
    return jiwer.wer(" ".join(map(str, b)), " ".join(map(str, a)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="out/tts")
    p.add_argument("--n", type=int, default=3000, help="training utterances counted")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = pick_device(args.device)
    train = read_config(os.path.join(args.run, "lm"))["train"]
    run = load_tts_data(SimpleNamespace(**{**train, "out": args.run}))
    tok = load_model(os.path.join(args.run, "tokenizer")).to(device)
    n_codes = tok.config.n_codes
    tokens = tokenize_all(tok, run.feats[:args.n], 32, device)
    voices = [ex.speaker for ex in run.train[:args.n]]
    h, info, per = voice_information(tokens, voices)
    shuffled = voices[:]
    random.Random(0).shuffle(shuffled)
    _, bias, _ = voice_information(tokens, shuffled)
    print(f"{len(tokens)} training utterances, {sum(map(len, tokens))} tokens, {len(per)} voices, {n_codes} codes")
    print(f"H(code) {h:.2f} bits (max {math.log2(n_codes):.2f}); I(code; voice) {info:.3f} bits, "
          f"{bias:.3f} with shuffled voices: {info - bias:.3f} bits ({100 * (info - bias) / h:.1f}% of H) from the voice")
    use = [len(c) / n_codes for c in per.values()]
    print(f"codes used per voice: mean {100 * sum(use) / len(use):.1f}% (min {100 * min(use):.1f}%, max "
          f"{100 * max(use):.1f}%); all voices together {100 * len(Counter(c for t in tokens for c in t)) / n_codes:.1f}%")
    seen = {it["text"]: it["feats"] for it in run.voice_sets[SEEN]}
    pairs = [(seen[it["text"]], it["feats"]) for it in run.voice_sets[UNSEEN] if it["text"] in seen]
    if pairs:
        a = tokenize_all(tok, [x for x, _ in pairs], 32, device)
        b = tokenize_all(tok, [y for _, y in pairs], 32, device)
        same = sum(token_distance(x, y) for x, y in zip(a, b)) / len(a)
        other = sum(token_distance(x, y) for x, y in zip(a, b[1:] + b[:1])) / len(a)
        print(f"same text, two voices ({len(a)} pairs): token edit distance {same:.3f} per token; "
              f"two different texts: {other:.3f}")
    rows = [json.loads(line) for line in open(os.path.join(args.run, "metrics.jsonl"))]
    dev = [r["best_dev_loss"] for r in rows if r.get("stage") == "lm" and "best_dev_loss" in r]
    if dev:
        print(f"LM dev loss {dev[-1]:.3f} nats/token = {dev[-1] / math.log(2):.2f} bits/token: an upper bound on "
              f"H(tokens | text)")


if __name__ == "__main__":
    main()
