"""
Audio of any length: test utterances joined back to back into long recordings (~90 s each),
transcribed whole (cut into windows at pauses, as sample.py transcribe does) and one by one.
The two WERs on the same words should be within a few points: windowing loses little.

    python bench/longform.py [--ckpt out/asr/stage1] [--seconds 90] [--n 5] [--window 10]

Needs a finished train_asr.py run on the built-in corpus. The last line is WER(whole) - WER(one
by one) in points, as a bare number.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402

from nanospeechrl.asr.evaluate import transcribe_all  # noqa: E402
from nanospeechrl.asr.speechlm import load_speechlm  # noqa: E402
from nanospeechrl.builtin.corpus import CorpusConfig, build_corpus  # noqa: E402
from nanospeechrl.checkpoint import read_config  # noqa: E402
from nanospeechrl.data import features, load_examples  # noqa: E402
from nanospeechrl.devices import pick_device  # noqa: E402
from nanospeechrl.encoder import FRAMES_PER_SECOND  # noqa: E402
from nanospeechrl.metrics import error_counts  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="out/asr/stage1", help="a speech-LLM checkpoint of train_asr.py")
    parser.add_argument("--seconds", type=float, default=90.0, help="length of each long recording")
    parser.add_argument("--n", type=int, default=5, help="long recordings")
    parser.add_argument("--window", type=float, default=10.0, help="longest window, seconds (as sample.py transcribe)")
    parser.add_argument("--nbest", type=int, default=16, help="decoding, as train_asr.py evaluates (0: greedy)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.ckpt, "state.json")):
        sys.exit(f"no checkpoint in {args.ckpt}: run `python train_asr.py` first, or pass --ckpt")
    train = read_config(args.ckpt)["train"]
    if train["data"] != "builtin":
        sys.exit("this benchmark joins the built-in corpus's test utterances: the run must use --data builtin")
    root = build_corpus(CorpusConfig(seed=train["seed"], n_train=train["n_train"] + train.get("rl_holdout", 0),
                                     n_test=train["n_test"]))
    examples = load_examples(os.path.join(root, "test.jsonl"))[0]
    feats, examples, _ = features(examples)
    device = pick_device(args.device)
    model, tokenizer = load_speechlm(args.ckpt, device)
    groups, start = [], 0  # consecutive test utterances, about args.seconds each
    while len(groups) < args.n and start < len(feats):
        end, frames = start, 0
        while end < len(feats) and frames < args.seconds * FRAMES_PER_SECOND:
            frames += len(feats[end])
            end += 1
        groups.append(range(start, end))
        start = end
    refs = [" ".join(examples[i].text for i in g) for g in groups]
    decode = dict(device=device, nbest=args.nbest)
    t0 = time.perf_counter()
    alone = transcribe_all(model, tokenizer, feats[:start], **decode)
    t_alone = time.perf_counter() - t0
    joined = [torch.cat([feats[i] for i in g]) for g in groups]
    t0 = time.perf_counter()
    whole = transcribe_all(model, tokenizer, joined, **decode, window_frames=int(args.window * FRAMES_PER_SECOND))
    t_whole = time.perf_counter() - t0
    one_by_one = [" ".join(alone[i] for i in g) for g in groups]
    r_whole, r_alone = error_counts(refs, whole), error_counts(refs, one_by_one)
    seconds = sum(len(f) for f in joined) / FRAMES_PER_SECOND
    print(f"{len(groups)} recordings of {seconds / len(groups):.0f} s on average ({start} test utterances), "
          f"{args.ckpt}, windows of at most {args.window:.0f} s")
    for name, r, t in (("whole, in windows", r_whole, t_whole), ("one by one", r_alone, t_alone)):
        print(f"{name:18s} WER {100 * r['wer']:5.1f}%  (sub {r['sub']}, del {r['del']}, ins {r['ins']} of "
              f"{r['ref_words']} words; {r['loops']} looping or runaway)  {t:.1f} s")
    print(f"{100 * (r_whole['wer'] - r_alone['wer']):+.1f}")


if __name__ == "__main__":
    main()
