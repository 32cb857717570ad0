"""
Benchmark the TTS pipeline of a finished train_tts.py run (default out/tts), one process:

  - flow matching: real-time factor (seconds of audio per second of compute) at N = 10 and N = 4
    Euler steps, on the tokenizer's tokens of real test utterances, batched;
  - the text-to-token LM: speech tokens/s of the KV-cached sampler vs its naive twin (a full
    forward per step), same prompts, same number of tokens (EOS ignored), batch 8;
  - the whole pipeline (LM sampling -> flow N = 10 -> Griffin-Lim): real-time factor;
  - RL: a few steps of `train_tts.py --stages rl` with --rl grpo and --rl diffro from the run's
    checkpoints, in a scratch directory: seconds per phase of a GRPO step (rollout, token2mel,
    reward, reference, update) and of a DiffRO step, the first step of each dropped (warm-up).

    python bench/tts.py [--run out/tts] [--n 32] [--rl-steps 4]

The last line is the whole pipeline's real-time factor, as a bare number.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402

from nanospeechrl.audio import SAMPLE_RATE, HOP_LENGTH  # noqa: E402
from nanospeechrl.checkpoint import load_checkpoint, read_config  # noqa: E402
from nanospeechrl.data import load_examples, features  # noqa: E402
from nanospeechrl.devices import autocast, pick_device  # noqa: E402
from nanospeechrl.sampler import generate, generate_naive  # noqa: E402
from nanospeechrl.tts.synthesis import load_tts, vocode  # noqa: E402
from nanospeechrl.tts.tokens import SpeechTokenizer, TokenizerConfig, tokenize_all  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RL_PHASES = ("rollout", "token2mel", "reward", "reference", "update")
RL_INPUTS = ("tokenizer", "speaker", "flow", "lm", "reward_asr", "token2text")


def rl_steps(run, method, steps, device):
    """Per-phase seconds of RL steps 2..steps of `--rl method` from run's checkpoints, -> {phase: s}.
    Run from where train_tts.py ran: the built-in corpus is found in ./data, as it was then."""
    run = os.path.abspath(run)
    train = read_config(os.path.join(run, "lm"))["train"]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "tts")
        for name in RL_INPUTS:
            shutil.copytree(os.path.join(run, name), os.path.join(out, name))
        shutil.copy(os.path.join(run, "tokenizer.json"), out)
        cache = os.path.join(os.path.dirname(run), "feature-cache")  # the run's log-mel, not computed again
        if os.path.isdir(cache):
            os.symlink(cache, os.path.join(tmp, "feature-cache"))
        subprocess.run([sys.executable, os.path.join(ROOT, "train_tts.py"), "--stages", "rl", "--rl", method,
                        "--rl-steps", str(steps), "--no-evaluate", "--out", out, "--device", device,
                        "--data", train["data"], "--n-train", str(train["n_train"]), "--n-test", str(train["n_test"]),
                        "--seed", str(train["seed"])], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    rows = [r for r in rows if r.get("stage") == f"rl-{method}"][1:]
    return {p: sum(r.get(f"time/{p}", 0) for r in rows) / len(rows) for p in RL_PHASES}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="out/tts", help="output dir of a finished train_tts.py run")
    parser.add_argument("--n", type=int, default=32, help="test utterances to synthesise")
    parser.add_argument("--lm-tokens", type=int, default=150, help="speech tokens per row in the sampler comparison")
    parser.add_argument("--rl-steps", type=int, default=4, help="RL steps per method (the first is a warm-up; 0: skip)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.run, "lm", "state.json")):
        sys.exit(f"no finished TTS run in {args.run}: run `python train_tts.py` first, or pass --run")
    device = pick_device(args.device)
    tts = load_tts(os.path.join(args.run, "lm")).to(device)
    tok = SpeechTokenizer(TokenizerConfig(**read_config(os.path.join(args.run, "tokenizer"))["tokenizer"]))
    load_checkpoint(os.path.join(args.run, "tokenizer"), tok)
    tok.to(device).eval()
    train = read_config(os.path.join(args.run, "lm"))["train"]
    manifest = train["data"] if train["data"] != "builtin" else None
    if manifest is None:  # the built-in corpus the run trained on
        from nanospeechrl.tts.corpora import manifests
        manifest = manifests(argparse.Namespace(**train))[1]["test"]
    examples = load_examples(manifest)[0][:args.n]
    feats, examples, _ = features(examples)
    texts = [ex.text for ex in examples]
    print(f"device {device}, {torch.get_num_threads()} threads, {len(texts)} test utterances")

    with torch.no_grad(), autocast(device):
        voices = tts.voice(feats)
        tokens = tokenize_all(tok, feats, 32, device)
        audio_s = sum(4 * len(t) for t in tokens) * HOP_LENGTH / SAMPLE_RATE
        for steps in (10, 4):
            tts.mels(tokens[:4], voices[:4], steps)  # warm-up
            _, sec = timed(lambda: tts.mels(tokens, voices, steps))
            print(f"flow matching, N = {steps:2d}: {audio_s:.1f} s of audio in {sec:.2f} s: "
                  f"{audio_s / sec:.1f}x real time")

        lm = tts.lm
        prompts = lm.embed_prompts([lm.prompt(tts.tokenizer, t) for t in texts[:8]])
        rates = {}
        for name, fn in (("KV cache", generate), ("naive", generate_naive)):
            gen = torch.Generator(device).manual_seed(0)
            _, sec = timed(lambda: fn(lm, prompts, max_new_tokens=args.lm_tokens, temperature=1.0, generator=gen))
            rates[name] = len(prompts) * args.lm_tokens / sec
            print(f"LM sampling, {name:8s}: {rates[name]:.0f} speech tokens/s (batch {len(prompts)}, "
                  f"{args.lm_tokens} tokens)")
        print(f"LM sampling: KV cache / naive = {rates['KV cache'] / rates['naive']:.1f}x")

        t0 = time.perf_counter()
        sampled, _ = tts.tokens(texts, generator=torch.Generator(device).manual_seed(0))
        t_lm = time.perf_counter() - t0
        mels = tts.mels(sampled, voices, 10)
        t_flow = time.perf_counter() - t0 - t_lm
    wavs = [vocode(m) for m in mels]
    total = time.perf_counter() - t0
    audio_s = sum(len(w) for w in wavs) / SAMPLE_RATE
    print(f"pipeline: {audio_s:.1f} s of audio in {total:.2f} s (LM {t_lm:.2f} s, flow {t_flow:.2f} s, "
          f"Griffin-Lim {total - t_lm - t_flow:.2f} s): {audio_s / total:.1f}x real time")
    if args.rl_steps > 1:
        grpo, diffro = (rl_steps(args.run, m, args.rl_steps, str(device)) for m in ("grpo", "diffro"))
        step = sum(grpo.values())
        print(f"TTS GRPO step ({args.rl_steps - 1} steps after warm-up; the run's --rl-batch and G):")
        for p, t in grpo.items():
            print(f"  {p:10s} {t:7.3f} s  {100 * t / step:5.1f}%")
        print(f"  {'step':10s} {step:7.3f} s")
        print(f"DiffRO step: {sum(diffro.values()):.3f} s (rollout {diffro['rollout']:.3f}, reference "
              f"{diffro['reference']:.3f}, update {diffro['update']:.3f}) = "
              f"{sum(diffro.values()) / step:.2f}x a GRPO step")
    print(f"{audio_s / total:.1f}")


if __name__ == "__main__":
    main()
