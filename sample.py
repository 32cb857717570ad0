"""
Use a trained speech LLM from the command line.

    python sample.py transcribe --ckpt out/asr/stage1 a.wav b.flac     # greedy + 16 samples, CTC-rescored
    python sample.py transcribe --ckpt out/asr/stage1 --nbest 0 a.wav   # greedy only
    python sample.py transcribe --ckpt out/asr/stage1 --temperature 0.7 --top-p 0.9 --seed 1 a.wav
    python sample.py answer --ckpt out/asr/stage2 --question "Where does Anna live?" passage.wav
    python sample.py translate --ckpt out/asr/stage2 english.wav        # -> Spanish text
    python sample.py synthesize --ckpt out/tts/lm --text "Hello there." --voice ref.wav -o hello.wav
    python sample.py synthesize --ckpt out/tts/lm --text "One." --text "Two." --speaker en-us+f3 -o out.wav

Speech -> text prints one line per input file on stdout, "<path>\\t<output>", in the order
given. transcribe takes audio of any length: a file longer than --window (10 s) is cut into
windows at pauses (asr/windows.py) and their texts joined. A file that
cannot be used (unreadable, empty; for answer and translate, longer than the encoder accepts)
prints "error: <path>: <why>" on stderr instead; the others still run, and the exit code is 1.
synthesize writes one wav per --text (several: out-0.wav, out-1.wav, ...) in the voice of a
reference clip (--voice, at least 0.5 s) or of a built-in eSpeak voice (--speaker), and prints
their paths. Numbers, times, dates, money and abbreviations are read as words ("3:45 pm" ->
"three forty five p m"; tts/text_front.py). Any bad input (no words, characters the model cannot
say, an unknown voice, a silent or short clip, a missing output folder, not a TTS checkpoint) is
one line on stderr, exit code 1, before a file is written.
"""
import argparse
import os
import sys

import torch

from nanospeechrl import audio
from nanospeechrl.checkpoint import read_config
from nanospeechrl.data import collate
from nanospeechrl.devices import pick_device
from nanospeechrl.encoder import FRAMES_PER_SECOND
from nanospeechrl.asr.speechlm import load_speechlm
from nanospeechrl.asr.windows import transcribe_windows


def read_features(paths, max_frames=None):
    """-> [(path, log-mel (T, N_MELS))] for the usable files (no longer than max_frames, if given);
    the others are reported on stderr."""
    feats = []
    for path in paths:
        try:
            feat = audio.log_mel(audio.load(path))  # (T, N_MELS)
            if max_frames and len(feat) > max_frames:  # the encoder would refuse the whole batch
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
    max_frames = model.encoder.config.max_frames
    window = min(max_frames, int(getattr(args, "window", 0) * FRAMES_PER_SECOND) or max_frames)
    feats = read_features(args.audio, None if task == "asr" else max_frames)
    generator = torch.Generator(device).manual_seed(args.seed)  # sampling only; greedy ignores it

    def run(batch):  # a list of log-mel, each at most max_frames -> texts
        texts = []
        for start in range(0, len(batch), args.batch_size):
            b = collate(batch[start:start + args.batch_size])  # zero-padded (B, T, N_MELS), (B,)
            texts += model.transcribe(b["feats"].to(device), b["feat_lens"].to(device), tokenizer, task=task,
                                      prompt=prompt, max_new_tokens=args.max_new_tokens,
                                      temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                      generator=generator, **decoding)
        return texts

    for start in range(0, len(feats), args.batch_size):
        paths, batch = zip(*feats[start:start + args.batch_size])
        texts = transcribe_windows(run, list(batch), window) if task == "asr" else run(list(batch))
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


def output_paths(output, n):
    """The wav paths synthesize writes for n texts (one: output itself; several: <stem>-<i><suffix>), or a
    ValueError when they cannot be written: checked before any synthesis, so a bad -o costs nothing."""
    import soundfile
    stem, suffix = os.path.splitext(output)
    folder = os.path.dirname(output) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"{output}: the output folder {folder} does not exist")
    if suffix and not soundfile.check_format(suffix[1:].upper()):
        raise ValueError(f"{output}: cannot write audio as {suffix!r}; use .wav, .flac or .ogg")
    paths = [output] if n == 1 else [f"{stem}-{i}{suffix or '.wav'}" for i in range(n)]
    for path in paths:
        if os.path.isdir(path):
            raise ValueError(f"{path}: is a folder, not a file to write")
    return paths


def synthesize(args):
    from nanospeechrl.builtin.synth import synthesize as espeak, voices
    from nanospeechrl.tts.synthesis import load_reference, load_tts, vocode
    device = pick_device(args.device)
    try:  # every input checked before anything is written; each problem is one line on stderr
        paths = output_paths(args.output, len(args.text))
        if args.steps < 1:
            raise ValueError(f"--steps {args.steps}: the flow needs at least 1 Euler step")
        tts = load_tts(args.ckpt)
        for text in args.text:
            tts.pieces(text)  # no words, characters it cannot say, a sentence too long for the model
        if args.voice:
            reference = load_reference(args.voice)  # unreadable, too short, silence
        elif args.speaker in voices(include_odd=True):
            reference = audio.log_mel(espeak("The quick brown fox jumps over the lazy dog.", args.speaker))
        else:
            raise ValueError(f"unknown speaker {args.speaker!r}: a built-in eSpeak voice such as en-us+f3 "
                             f"(accent+variant; nanospeechrl.builtin.synth.voices() lists them), or --voice ref.wav")
    except (OSError, ValueError) as e:  # AudioError is a ValueError and names the file
        print(f"error: {e}", file=sys.stderr)
        return 1
    tts.to(device)
    voice = tts.voice([reference])
    generator = torch.Generator(device).manual_seed(args.seed)
    suffix = os.path.splitext(args.output)[1] or ".wav"
    for text, path in zip(args.text, paths):
        mel = tts.synthesize([text], voice, steps=args.steps, generator=generator, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p)[0][0]
        tmp = f"{path}.tmp{suffix}"
        audio.save(tmp, vocode(mel, generator=torch.Generator().manual_seed(args.seed)))
        os.replace(tmp, path)  # a reader never sees half a file
        print(path, flush=True)
    return 0


def add_common(parser):
    """Flags every subcommand shares: the checkpoint, the inputs, sampling and the device."""
    parser.add_argument("--ckpt", required=True, help="checkpoint directory, e.g. out/asr/stage1")
    parser.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, ...)")
    add_sampling(parser, temperature=0.0, help="0 = greedy")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="decoding budget per file")
    parser.add_argument("--batch-size", type=int, default=16, help="files decoded together")


def add_sampling(parser, temperature, help, top_k=0, top_p=1.0):
    """Sampling flags and the device, shared by every subcommand."""
    parser.add_argument("--temperature", type=float, default=temperature, help=help)
    parser.add_argument("--top-k", type=int, default=top_k, help="sample from the k most likely tokens (0 = all)")
    parser.add_argument("--top-p", type=float, default=top_p, help="nucleus sampling mass (1 = all)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
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
    p.add_argument("--window", type=float, default=10.0,
                   help="seconds: longer files are cut into windows of at most this at pauses (0: the encoder's "
                        "limit); the model reads 10 s windows far better than 20-30 s in one go")
    p.set_defaults(run=transcribe)
    p = commands.add_parser("answer", help="spoken QA: answer a question about each audio file")
    add_common(p)
    p.add_argument("--question", required=True, help="the question, asked of every file")
    p.set_defaults(run=answer)
    p = commands.add_parser("translate", help="speech translation: English speech -> Spanish text")
    add_common(p)
    p.set_defaults(run=translate)
    p = commands.add_parser("synthesize", help="text -> speech (TTS), written as wav files")
    p.add_argument("--ckpt", required=True, help="a TTS LM checkpoint, e.g. out/tts/lm (flow and speaker beside it)")
    p.add_argument("--text", action="append", required=True,
                   help="text to speak (repeat for several); digits, dates and the like are read as words")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--voice", help="reference clip of the voice to speak in (wav, flac, ...)")
    who.add_argument("--speaker", help="a built-in eSpeak voice, accent+variant, e.g. en-us+f3")
    p.add_argument("-o", "--output", required=True, help="wav to write (several texts: <stem>-<i>.wav)")
    add_sampling(p, temperature=1.0, help="speech-token sampling temperature", top_k=25, top_p=0.8)  # as train_tts.py
    p.add_argument("--steps", type=int, default=10, help="flow-matching Euler steps")
    p.set_defaults(run=synthesize)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
