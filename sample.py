"""
Use a trained speech LLM from the command line.

    python sample.py transcribe --ckpt out/asr/stage1 a.wav b.flac     # greedy + 16 samples, CTC-rescored
    python sample.py transcribe --ckpt out/asr/stage1 --nbest 0 a.wav   # greedy only
    python sample.py transcribe --ckpt out/asr/stage1 --temperature 0.7 --top-p 0.9 --seed 1 a.wav
    python sample.py answer --ckpt out/asr/stage2 --question "Where does Anna live?" passage.wav
    python sample.py translate --ckpt out/asr/stage2 english.wav        # -> Spanish text

Prints one line per input file on stdout, "<path>\\t<output>", in the order given. A file that
cannot be used (unreadable, empty, longer than the encoder accepts) prints
"error: <path>: <why>" on stderr instead; the others still run, and the exit code is 1.
"""
import argparse
import sys

import torch

from nanospeechrl import audio
from nanospeechrl.checkpoint import read_config
from nanospeechrl.data import collate
from nanospeechrl.devices import pick_device
from nanospeechrl.encoder import FRAMES_PER_SECOND
from nanospeechrl.asr.speechlm import load_speechlm


def read_features(paths, max_frames):
    """-> [(path, log-mel (T, N_MELS))] for the usable files; the others are reported on stderr."""
    feats = []
    for path in paths:
        try:
            feat = audio.log_mel(audio.load(path))  # (T, N_MELS)
            if len(feat) > max_frames:  # the encoder would refuse the whole batch
                raise audio.AudioError(f"{path}: {len(feat) / FRAMES_PER_SECOND:.2f} s is longer than this "
                                       f"model accepts ({max_frames / FRAMES_PER_SECOND:.2f} s)")
            feats.append((path, feat))
        except audio.AudioError as e:  # its message starts with the path
            print(f"error: {e}", file=sys.stderr)
    return feats


def speech_to_text(args, task, prompt="", **decoding):
    """The shared body of every speech -> text subcommand (decoding: nbest, ctc_weight). Returns the exit code."""
    device = pick_device(args.device)
    try:
        model, tokenizer = load_speechlm(args.ckpt)
    except (OSError, ValueError) as e:  # no checkpoint there, or not a speech-LLM one
        print(f"error: {e}", file=sys.stderr)
        return 1
    model.to(device)
    budget = read_config(args.ckpt)["train"].get("max_prompt_tokens", 48) - 1  # the task token is one
    if len(tokenizer.encode(prompt)) > budget:  # what training did with long questions: cut, and say so
        print(f"warning: the prompt is longer than this model's {budget} prompt tokens; truncated", file=sys.stderr)
        prompt = tokenizer.decode(tokenizer.encode(prompt)[:budget])
    feats = read_features(args.audio, model.encoder.config.max_frames)
    generator = torch.Generator(device).manual_seed(args.seed)  # sampling only; greedy ignores it
    for start in range(0, len(feats), args.batch_size):
        paths, batch = zip(*feats[start:start + args.batch_size])
        b = collate(list(batch))  # zero-padded (B, T, N_MELS), (B,)
        texts = model.transcribe(b["feats"].to(device), b["feat_lens"].to(device), tokenizer, task=task,
                                 prompt=prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                 top_k=args.top_k, top_p=args.top_p, generator=generator, **decoding)
        for path, text in zip(paths, texts):
            print(f"{path}\t{' '.join(text.split())}", flush=True)  # one line per file, whatever the model emits
    return 0 if len(feats) == len(args.audio) else 1


def transcribe(args):
    nbest = args.nbest if args.nbest is not None else 0 if args.temperature else 16
    if nbest and args.temperature:
        print("error: --nbest rescores greedy decoding and samples of its own; with --temperature use --nbest 0",
              file=sys.stderr)
        return 1
    return speech_to_text(args, task="asr", nbest=nbest, ctc_weight=args.ctc_weight)


def answer(args):
    if not args.question.strip():
        print("error: --question is empty", file=sys.stderr)
        return 1
    return speech_to_text(args, task="sqa", prompt=args.question)


def translate(args):
    return speech_to_text(args, task="ast")


def add_common(parser):
    """Flags every subcommand shares: the checkpoint, the inputs, sampling and the device."""
    parser.add_argument("--ckpt", required=True, help="checkpoint directory, e.g. out/asr/stage1")
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, ...)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 = all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = all)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="decoding budget per file")
    parser.add_argument("--batch-size", type=int, default=16, help="files decoded together")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    # one block per subcommand: its parser, its own flags, the function that runs it
    p = commands.add_parser("transcribe", help="speech -> text (ASR)")
    add_common(p)
    p.add_argument("--nbest", type=int, default=None,
                   help="pick the best of greedy + N samples by LLM and CTC scores, as train_asr.py evaluates "
                        "(default 16; 0 = greedy only; 0 when --temperature samples)")
    p.add_argument("--ctc-weight", type=float, default=0.1, help="weight of the CTC score in that choice")
    p.set_defaults(run=transcribe)
    p = commands.add_parser("answer", help="spoken QA: answer a question about each audio file")
    add_common(p)
    p.add_argument("--question", required=True, help="the question, asked of every file")
    p.set_defaults(run=answer)
    p = commands.add_parser("translate", help="speech translation: English speech -> Spanish text")
    add_common(p)
    p.set_defaults(run=translate)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
