"""Benchmark bf16 autocast against fp32 for the two supervised training steps of train_asr.py.

    python bench/bf16.py [--steps 40] [--preset small]

Stage 0 (CTC step of the preset's conformer) and stage 1 (SFT step of its speech LLM on
cached encoder outputs; no dropout or SpecAugment, whatever the preset), each on the same
length-bucketed batches (the preset's frames, lengths drawn like the built-in corpus's),
three ways: fp32; bf16 autocast with batches of exact lengths; bf16 with lengths padded to
data.SHAPE_MULTIPLE frames, as training does. On a CPU, bf16 runs on oneDNN kernels
compiled once per shape: without the padding almost every batch is a new shape. Needs a CPU
with AMX or AVX512-BF16 to show a speed-up (on CUDA train_asr.py keeps fp32: see docs/RESULTS.md). The last
line is the stage-0 speed-up of padded bf16 over fp32, as a bare number.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402

from nanospeechrl import data, devices  # noqa: E402
from nanospeechrl.asr.speechlm import ProjectorConfig, SpeechLM  # noqa: E402
from nanospeechrl.devices import pick_device  # noqa: E402
from nanospeechrl.encoder import CTC_CHARS, CTCHead, Encoder, EncoderConfig, ctc_loss  # noqa: E402
from nanospeechrl.llm import LLM, LLMConfig  # noqa: E402
from train_asr import PRESETS, TrainConfig  # noqa: E402


def run(step, lengths, n_steps, bf16, multiple, device, batch_frames):
    """Seconds per step over n_steps bucketed batches, the first few (warm-up) not counted."""
    data.SHAPE_MULTIPLE = multiple
    batches = data.batches_forever(lengths, [0, 0], seed=0, max_frames=batch_frames)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for _ in range(3):
            step(next(batches))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step(next(batches))
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n_steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per configuration")
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model sizes and batch of train_asr.py")
    args = parser.parse_args()
    cfg = TrainConfig(**{k: v for k, v in PRESETS[args.preset].items() if k in TrainConfig.__dataclass_fields__})
    device = pick_device(args.device)
    torch.manual_seed(0)
    # Utterance lengths in frames like the built-in corpus (47-949, mean ~230).
    lengths = (47 + torch.distributions.Exponential(1 / 180).sample((3000,))).clamp(max=949).long().tolist()
    feats = [torch.randn(n, 80) for n in lengths]
    labels = [torch.randint(1, len(CTC_CHARS) + 1, (max(1, n // 16),)).tolist() for n in lengths]

    enc_cfg = EncoderConfig(d_model=cfg.d_model, n_layer=cfg.enc_layers, dropout=0.0, vocab_size=len(CTC_CHARS) + 1)
    ctc = torch.nn.ModuleDict({"encoder": Encoder(enc_cfg), "head": CTCHead(enc_cfg)}).to(device)

    def ctc_step(idx):
        b = data.to_batch(feats, idx, device, token_ids=[labels[i] for i in idx])
        hidden, out_lens = ctc["encoder"](b["feats"], b["feat_lens"])
        ctc_loss(ctc["head"](hidden), out_lens, b["tokens"], b["token_lens"]).backward()

    llm_cfg = LLMConfig(vocab_size=cfg.vocab_size, n_embd=cfg.n_embd, n_layer=cfg.llm_layers, max_seq_len=640)
    model = SpeechLM(enc_cfg, LLM(llm_cfg), ProjectorConfig(cfg.stack)).to(device)
    hidden = [torch.randn((n + 3) // 4, cfg.d_model) for n in lengths]  # a frozen encoder's cached outputs
    targets = [torch.randint(3, cfg.vocab_size, (max(2, n // 12),)).tolist() for n in lengths]

    def sft_step(idx):
        b = data.to_batch(hidden, idx, device)
        audio = model.projector(b["feats"], b["feat_lens"])
        model.sft_loss_from_audio(*audio, [[1]] * len(idx), [targets[i] for i in idx]).backward()

    print(f"device {device}, {torch.get_num_threads()} threads, native bf16: {devices.CPU_BF16}, {args.steps} steps each, "
          f"preset {args.preset} ({cfg.batch_frames} frames per batch)")
    speedups = {}
    for name, step in [("stage 0 CTC", ctc_step), ("stage 1 SFT", sft_step)]:
        fp32, exact, padded = (run(step, lengths, args.steps, bf16, multiple, device, cfg.batch_frames)
                               for bf16, multiple in [(False, 32), (True, 1), (True, 32)])
        speedups[name] = fp32 / padded
        print(f"{name}: fp32 {fp32 * 1000:.0f} ms/step | bf16 exact lengths {exact * 1000:.0f} ms "
              f"({fp32 / exact:.2f}x) | bf16 padded to 32 frames {padded * 1000:.0f} ms ({fp32 / padded:.2f}x)")
    print(f"{speedups['stage 0 CTC']:.2f}")


if __name__ == "__main__":
    main()
