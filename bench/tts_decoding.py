"""
Choose the TTS LM's decoding on dev, never on test: the speech tokens of n dev texts (training
voices), sampled with each setting below, through the flow (N = 10) and read by the reward ASR,
the model RL already optimises against (the judge never selects anything). Prints each
setting's CER, its length-cap failures, and its CER minus the default's with a paired-bootstrap
95% interval, all from one run.

    python bench/tts_decoding.py [--run out/tts] [--n 128]

The setting train_tts.py evaluates with is --eval-temperature / --eval-top-k / --eval-top-p
(default T 1, top-k 25, top-p 0.8, CosyVoice's); this is where that choice can be checked.
"""
import argparse
import os
import random
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402

from nanospeechrl.checkpoint import read_config  # noqa: E402
from nanospeechrl.devices import pick_device  # noqa: E402
from nanospeechrl.metrics import bootstrap_wer_diff, error_counts  # noqa: E402
from nanospeechrl.tts.corpora import load_tts_data  # noqa: E402
from nanospeechrl.tts.judge import ctc_model_transcriber  # noqa: E402
from nanospeechrl.tts.synthesis import load_model, load_tts  # noqa: E402

SETTINGS = {  # name -> sampling; the first is the baseline the others are compared with
    "T 1, top-k 25, top-p 0.8 (default)": dict(temperature=1.0, top_k=25, top_p=0.8),
    "T 1, no truncation (as RL samples)": dict(temperature=1.0),
    "T 0.8": dict(temperature=0.8),
    "T 0.6": dict(temperature=0.6),
    "T 1, top-k 10": dict(temperature=1.0, top_k=10),
    "greedy": dict(temperature=0.0),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="out/tts", help="a finished train_tts.py run (lm, flow, speaker, reward_asr)")
    p.add_argument("--n", type=int, default=128, help="dev texts")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="flow Euler steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = pick_device(args.device)
    train = read_config(os.path.join(args.run, "lm"))["train"]
    run = load_tts_data(SimpleNamespace(**{**train, "out": args.run}))  # the run's corpus (built, cached)
    texts = [ex.text for ex in run.dev[0][:args.n]]  # dev: held-out voices' texts, none in train or test
    rng = random.Random(args.seed)
    conds = [run.feats[rng.randrange(len(run.feats))] for _ in texts]  # a training voice each, as RL and (d) use
    tts = load_tts(os.path.join(args.run, "lm")).to(device)
    reward = ctc_model_transcriber(load_model(os.path.join(args.run, "reward_asr")).to(device), args.batch, device)
    voices = tts.voice(conds)
    print(f"{len(texts)} dev texts, training voices, flow N = {args.steps}, read by {args.run}/reward_asr")
    hyps, base = {}, None
    for name, sampling in SETTINGS.items():
        t0, tokens, capped = time.time(), [], 0
        for start in range(0, len(texts), args.batch):
            sampled, cut = tts.tokens(texts[start:start + args.batch], **sampling,
                                      generator=torch.Generator(device).manual_seed(args.seed + start))
            tokens, capped = tokens + sampled, capped + int(cut.sum())
        mels = [m for start in range(0, len(texts), args.batch)
                for m in tts.mels(tokens[start:start + args.batch], voices[start:start + args.batch], args.steps,
                                  torch.Generator().manual_seed(args.seed))]
        hyps[name] = reward(mels)
        r = error_counts(texts, hyps[name])
        line = f"{name:38s} CER {100 * r['cer']:5.1f}%  WER {100 * r['wer']:5.1f}%  capped {100 * capped / len(texts):4.1f}%"
        if base is None:
            base = name
        else:
            d, lo, hi = bootstrap_wer_diff(texts, hyps[base], hyps[name], unit="char")
            line += f"  CER - default {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        print(line + f"  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
