"""
The TTS choices, made on dev, never on test: n dev texts (training voices), read by the reward
ASR (the model RL already optimises against; the judge never selects anything), similarity by
the run's own speaker encoder. Each comparison prints every option's CER (and similarity) and
its difference to the first option with a paired-bootstrap 95% interval, all in one run.

    python bench/tts_dev.py [--run out/tts] [--n 128] [--only decoding,vocoder,guidance,models]

  decoding   the LM's sampling (train_tts.py's --eval-temperature / --eval-top-k / --eval-top-p)
  vocoder    mel -> linear inversion before Griffin-Lim: the NNLS fit (audio.mel_to_linear) vs
             the filters' pseudo-inverse clamped at 0, on real dev log-mel and on the flow's
  guidance   the flow's CFG strength and Euler steps, from the tokenizer's tokens of dev audio
  models     other LM checkpoints (--lms dir,dir: RL settings, a control) with the default decoding
  flows      the flows of other runs (--flows run,run: copies of this run with another flow trained
             in them), from the tokenizer's tokens of dev audio
  runs       whole pipelines of other runs (--runs run,run: e.g. another --tok-stride, with its own
             tokenizer, flow and LM): (c) the flow from the run's own tokens of dev audio, (d) its LM
"""
import argparse
import os
import random
import sys
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402

from nanospeechrl import audio  # noqa: E402
from nanospeechrl.checkpoint import read_config  # noqa: E402
from nanospeechrl.devices import pick_device  # noqa: E402
from nanospeechrl.metrics import bootstrap_wer_diff, error_counts  # noqa: E402
from nanospeechrl.tts.corpora import load_tts_data  # noqa: E402
from nanospeechrl.tts.evaluate import report_tokenizer  # noqa: E402
from nanospeechrl.tts.judge import ctc_model_transcriber  # noqa: E402
from nanospeechrl.tts.speaker import embed_all  # noqa: E402
from nanospeechrl.tts.synthesis import load_model, load_tts  # noqa: E402
from nanospeechrl.tts.tokens import tokenize_all  # noqa: E402

DECODINGS = {  # name -> sampling; the first is train_tts.py's evaluation default
    "T 1, top-k 25, top-p 0.8 (default)": dict(temperature=1.0, top_k=25, top_p=0.8),
    "T 1, no truncation (as RL samples)": dict(temperature=1.0),
    "T 0.8": dict(temperature=0.8),
    "T 0.6": dict(temperature=0.6),
    "T 1, top-k 10": dict(temperature=1.0, top_k=10),
    "greedy": dict(temperature=0.0),
}


def pinv_to_linear(logmel):
    """The old inversion: the mel filters' pseudo-inverse, clamped at 0 (exact only for a real mel)."""
    fb = audio.mel_filters().double()
    mel_power = 10.0 ** (logmel.double() * 4.0 - 4.0).T
    return (torch.linalg.pinv(fb) @ mel_power).clamp(min=0).sqrt().float()


def through_gl(mels, to_linear, seed):
    """Griffin-Lim each log-mel from to_linear's magnitude, and take the log-mel of the waveform again."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for mel in mels:
        wav = audio.griffin_lim(to_linear(mel.float().cpu()), generator=g)
        out.append(audio.log_mel(wav * min(1.0, 0.9 / (wav.abs().max().item() + 1e-9))))
    return out


class Compare:
    """Options of one choice, each scored on the same texts; differences to the first."""

    def __init__(self, title, texts, reward, speaker, ref_emb):
        self.texts, self.reward, self.speaker, self.ref_emb, self.first = texts, reward, speaker, ref_emb, None
        print(f"\n== {title} ({len(texts)} dev texts)")

    def __call__(self, name, mels, extra="", target_voice=True):
        """target_voice False: the mels are the dev speaker's own (real audio), not the target
        voice's, so their similarity to the target voice means nothing and is not printed."""
        hyps = self.reward(mels)
        r = error_counts(self.texts, hyps)
        sim = (embed_all(self.speaker, mels, 32, self.ref_emb.device) * self.ref_emb).sum(-1).mean().item()
        sim = f"{sim:.3f}" if target_voice else "  -  "
        line = f"{name:40s} CER {100 * r['cer']:5.1f}%  WER {100 * r['wer']:5.1f}%  sim {sim}{extra}"
        if self.first is None:
            self.first = hyps
        else:
            d, lo, hi = bootstrap_wer_diff(self.texts, self.first, hyps, unit="char")
            line += f"  CER - first {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        print(line, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="out/tts", help="a finished train_tts.py run (lm, flow, speaker, reward_asr)")
    p.add_argument("--n", type=int, default=128, help="dev texts")
    p.add_argument("--only", default="decoding,vocoder,guidance,models,flows")
    p.add_argument("--lms", default="", help="models: LM checkpoint dirs, comma-separated (default: every rl-* "
                                             "and lm-control* of the run)")
    p.add_argument("--flows", default="", help="flows: other run dirs (their lm and flow, this run's tokenizer)")
    p.add_argument("--runs", default="", help="runs: other run dirs (their tokenizer, flow and lm)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device, only = pick_device(args.device), args.only.split(",")
    train = read_config(os.path.join(args.run, "lm"))["train"]
    run = load_tts_data(SimpleNamespace(**{**train, "out": args.run}))  # the run's corpus (built, cached)
    dev, feats = run.dev[0][:args.n], run.dev[1][:args.n]  # held-out voices' dev utterances: in no train or test split
    texts, rng = [ex.text for ex in dev], random.Random(args.seed)
    conds = [run.feats[rng.randrange(len(run.feats))] for _ in texts]  # a training voice each, as RL and (d) use
    tts = load_tts(os.path.join(args.run, "lm")).to(device)
    reward = ctc_model_transcriber(load_model(os.path.join(args.run, "reward_asr")).to(device), args.batch, device)
    speaker = load_model(os.path.join(args.run, "speaker")).to(device)
    voices = tts.voice(conds)
    ref_emb = embed_all(speaker, conds, args.batch, device)  # similarity to the conditioning clip's voice
    print(f"{args.run}: dev texts in training voices, read by reward_asr, similarity by speaker")

    def flow(tokens, steps=10, cfg_strength=None, model=tts):  # the same noise for every option
        g, v = torch.Generator().manual_seed(args.seed), voices if model is tts else model.voice(conds)
        return [m for s in range(0, len(tokens), args.batch)
                for m in model.mels(tokens[s:s + args.batch], v[s:s + args.batch], steps, g, cfg_strength)]

    def sample(model, sampling):
        tokens, capped = [], 0
        for s in range(0, len(texts), args.batch):
            sampled, cut = model.tokens(texts[s:s + args.batch], **sampling,
                                        generator=torch.Generator(device).manual_seed(args.seed + s))
            tokens, capped = tokens + sampled, capped + int(cut.sum())
        return tokens, f"  capped {100 * capped / len(texts):.1f}%"

    if "decoding" in only:
        compare = Compare("decoding: the LM's sampling, flow N = 10", texts, reward, speaker, ref_emb)
        for name, sampling in DECODINGS.items():
            tokens, extra = sample(tts, sampling)
            compare(name, flow(tokens), extra)
    real_tokens = tokenize_all(load_model(os.path.join(args.run, "tokenizer")).to(device), feats, args.batch, device)
    if "vocoder" in only:
        compare = Compare("vocoder: mel -> magnitude before Griffin-Lim", texts, reward, speaker, ref_emb)
        flow_mels = flow(real_tokens)
        for name, mels in (("real log-mel, NNLS (default)", feats), ("real log-mel, pinv", feats),
                           ("flow from real tokens, NNLS", flow_mels), ("flow from real tokens, pinv", flow_mels)):
            compare(name, through_gl(mels, pinv_to_linear if "pinv" in name else audio.mel_to_linear, args.seed),
                    target_voice=name.startswith("flow"))
    if "guidance" in only:
        compare = Compare("guidance: the flow from real tokens, CFG strength w and Euler steps N", texts, reward,
                          speaker, ref_emb)
        w0 = tts.flow.config.cfg_strength  # the run's
        for w, n in dict.fromkeys(((w0, 10), (0.0, 10), (0.7, 10), (2.0, 10), (w0, 4), (w0, 25))):
            compare(f"w {w}, N {n}" + (" (the run's)" if (w, n) == (w0, 10) else ""), flow(real_tokens, n, w))
    if "flows" in only and args.flows:
        compare = Compare("flows: from real tokens, each flow's w, N 10", texts, reward, speaker, ref_emb)
        for run_dir in [args.run, *args.flows.split(",")]:
            model = load_tts(os.path.join(run_dir, "lm")).to(device)
            compare(run_dir, flow(real_tokens, model=model))
    if "runs" in only and args.runs:
        own = Compare("runs (c): the flow from the run's own tokens of dev audio, its w, N 10", texts, reward,
                      speaker, ref_emb)
        full = Compare("runs (d): the run's LM with the default decoding, then its flow", texts, reward, speaker,
                       ref_emb)
        for run_dir in [args.run, *args.runs.split(",")]:
            model = load_tts(os.path.join(run_dir, "lm")).to(device)
            tok = load_model(os.path.join(run_dir, "tokenizer")).to(device)
            report_tokenizer(tok, dev, feats, args.batch, device, log=lambda row: None)  # its CTC CER, bottleneck
            own(run_dir, flow(tokenize_all(tok, feats, args.batch, device), model=model))
            tokens, extra = sample(model, next(iter(DECODINGS.values())))
            full(run_dir, flow(tokens, model=model), extra)
    if "models" in only:
        lms = [d for d in args.lms.split(",") if d] or sorted(
            os.path.join(args.run, d) for d in os.listdir(args.run) if d.startswith(("lm-control", "rl-")) and
            os.path.exists(os.path.join(args.run, d, "state.json")))
        compare = Compare("models: each LM with the default decoding", texts, reward, speaker, ref_emb)
        for path in [os.path.join(args.run, "lm"), *lms]:
            model = load_tts(path).to(device)
            tokens, extra = sample(model, next(iter(DECODINGS.values())))
            compare(os.path.basename(path.rstrip("/")), flow(tokens, model=model), extra)


if __name__ == "__main__":
    main()
