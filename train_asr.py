"""
Train a speech recognizer from scratch, then evaluate it.

    python train_asr.py                                   # tiny preset, built-in corpus, CPU
    python train_asr.py --preset small --device cuda      # one GPU
    python train_asr.py --data train.jsonl --eval dev=dev.jsonl
    python train_asr.py --data LibriSpeech/train-clean-100 --eval dev=LibriSpeech/dev-clean

Stage 0: CTC pretraining of the conformer encoder (characters).
Stage 1: SFT of the speech LLM, encoder initialised from stage 0: cross-entropy on the
         target text given [audio embeddings][task token].
Each stage checkpoints to <out>/stage<k> (atomic) and `--resume` continues where a run
stopped. Metrics go to <out>/metrics.jsonl, one JSON object per logged step.
"""
import argparse
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, fields

import jiwer
import torch
from tqdm import tqdm

from nanospeechrl import data
from nanospeechrl.audio import AudioError, spec_augment
from nanospeechrl.builtin import SPLITS, CorpusConfig, build_corpus
from nanospeechrl.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from nanospeechrl.corpus import normalize
from nanospeechrl.devices import pick_device
from nanospeechrl.encoder import CTCHead, Encoder, EncoderConfig, ctc_greedy_decode, ctc_loss
from nanospeechrl.llm import LLM, LLMConfig
from nanospeechrl.speechlm import ProjectorConfig, SpeechLM
from nanospeechrl.tokenizer import Tokenizer


@dataclass
class TrainConfig:
    preset: str = "tiny"  # tiny (CPU, minutes) or small (one GPU)
    data: str = "builtin"  # "builtin", a JSONL manifest, or a LibriSpeech-style directory
    eval: str = ""  # extra eval sets: name=spec,name=spec (built-in: dev,test,test_accent,test_long)
    out: str = "out/asr"  # checkpoints, tokenizer and metrics.jsonl
    seed: int = 0  # data generation, init and batching are deterministic in it
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps
    stages: str = "0,1"  # which stages to run
    resume: bool = False  # continue from the checkpoints in --out
    skip_bad: bool = False  # skip (and count) bad manifest lines / audio instead of failing
    n_train: int = 4000  # built-in corpus: training utterances
    vocab_size: int = 384  # BPE vocabulary (text tokens + specials)
    # model
    d_model: int = 144  # encoder width
    enc_layers: int = 4  # conformer blocks
    n_embd: int = 256  # LLM width
    llm_layers: int = 4  # LLM blocks
    dropout: float = 0.0  # encoder and LLM dropout
    stack: int = 2  # encoder frames per LLM audio embedding
    # optimisation
    ctc_steps: int = 600  # stage 0 steps
    sft_steps: int = 1400  # stage 1 steps
    lr: float = 2e-3  # peak learning rate (AdamW, warmup then cosine)
    batch_frames: int = 6000  # padded feature frames per batch (100 frames = 1 s)
    spec_augment: bool = False  # time and frequency masking in training (off: measured slower to learn in minutes)
    log_every: int = 25  # steps between metrics lines
    ckpt_every: int = 300  # steps between checkpoints
    eval_batch: int = 32  # utterances per decoding batch
    max_new_tokens: int = 160  # decoding budget per utterance


PRESETS = {
    "tiny": {},
    "small": dict(d_model=256, enc_layers=12, n_embd=512, llm_layers=8, vocab_size=1024, dropout=0.1,
                  ctc_steps=20000, sft_steps=20000, lr=1e-3, batch_frames=40000, n_train=40000, eval_batch=64,
                  spec_augment=True),
}
CTC_CHARS = " 'abcdefghijklmnopqrstuvwxyz0123456789"  # CTC labels 1..N on normalised text; 0 = blank


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=type(f.default), default=None)
    args = {k: v for k, v in vars(parser.parse_args()).items() if v is not None}
    preset = args.get("preset", "tiny")
    if preset not in PRESETS:
        parser.error(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset], **args})  # command line > preset > defaults


# ----------------------------------------------------------------------------- data

def load_data(cfg):
    """-> (train examples, {eval name: examples}, skipped Counter)."""
    if cfg.data == "builtin":
        root = build_corpus(CorpusConfig(seed=cfg.seed, n_train=cfg.n_train))
        specs = {split: os.path.join(root, f"{split}.jsonl") for split in SPLITS}
        train_spec = specs.pop("train")
    else:
        train_spec, specs = cfg.data, {}
    for item in filter(None, cfg.eval.split(",")):
        name, _, spec = item.partition("=")
        if not spec:
            raise SystemExit(f"--eval expects name=path items, got {item!r}")
        specs[name] = spec
    # Empty transcripts in training data are skipped and counted; other bad lines need --skip-bad.
    train, skipped = data.load_examples(train_spec, skip_bad=cfg.skip_bad, skip_empty=True)
    evals = {}
    for name, spec in specs.items():
        evals[name], eval_skipped = data.load_examples(spec, skip_bad=cfg.skip_bad)
        if eval_skipped:
            print(f"skipped in eval set {name}: {dict(eval_skipped)}")
    if not evals:  # no eval set given: hold out a slice of the training data
        random.Random(cfg.seed).shuffle(train)
        n = max(1, min(200, len(train) // 50))
        evals, train = {"heldout": train[:n]}, train[n:]
    return train, evals, skipped


def ctc_labels(text):
    return [CTC_CHARS.index(c) + 1 for c in normalize(text) if c in CTC_CHARS]


def batches_forever(lengths, cfg, cursor):
    """Length-bucketed batches, epoch after epoch; cursor = [epoch, index] is advanced in place
    so a checkpoint can resume mid-epoch."""
    while True:
        epoch_batches = data.bucket_batches(lengths, cfg.batch_frames, seed=cfg.seed + cursor[0])
        while cursor[1] < len(epoch_batches):
            cursor[1] += 1
            yield epoch_batches[cursor[1] - 1]
        cursor[0], cursor[1] = cursor[0] + 1, 0


def lr_at(step, total, peak):
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


# ----------------------------------------------------------------------------- training

def train_stage(name, model, loss_fn, feats, steps, cfg, device, ckpt_config, tokenizer, log, gen):
    """The plain training loop shared by stages 0 and 1: bucketed batches -> loss_fn(batch
    indices) -> AdamW step; checkpoints every cfg.ckpt_every steps and at the end. gen is the
    augmentation generator, saved with the checkpoint so a resumed run continues exactly."""
    path = os.path.join(cfg.out, name)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    step, cursor = 0, [0, 0]
    if cfg.resume and os.path.exists(os.path.join(path, "state.json")):
        state = load_checkpoint(path, model, opt)["state"]
        step, cursor = state["step"], state["cursor"]
        restore_rng(state)
        gen.set_state(torch.tensor(state["augment_rng"], dtype=torch.uint8))
        if state.get("done"):
            print(f"{name}: already done ({step} steps), skipping")
            return
        print(f"{name}: resuming at step {step}")
    model.train()
    batches = batches_forever([len(f) for f in feats], cfg, cursor)
    bar = tqdm(range(step, steps), desc=name, initial=step, total=steps)
    t0 = time.time()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, cfg.lr)
        idx = next(batches)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(idx)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss is {loss.item()} at step {step}; last checkpoint in {path}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.log_every == 0 or step == steps - 1:
            log({"stage": name, "step": step, "loss": loss.item(), "grad_norm": grad_norm.item(),
                 "lr": opt.param_groups[0]["lr"], "epoch": cursor[0], "time": time.time() - t0})
        if (step + 1) % cfg.ckpt_every == 0 or step == steps - 1:
            state = {"step": step + 1, "cursor": cursor, "done": step == steps - 1,
                     "augment_rng": gen.get_state().tolist()}
            save_checkpoint(path, model, ckpt_config, tokenizer, opt, state)


def to_batch(feats, idx, device, augment, generator, token_ids=None):
    """Padded batch of feats[idx] (SpecAugment-ed if asked) and token_ids, on device."""
    b = data.collate([feats[i] for i in idx], token_ids)
    if augment:
        b["feats"] = spec_augment(b["feats"], generator=generator)
    return {k: v.to(device) for k, v in b.items()}


# ----------------------------------------------------------------------------- evaluation

def error_counts(refs, hyps):
    """Word and character error rates on normalised text, with S/D/I counts (jiwer)."""
    refs, hyps = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return {"wer": words.wer, "cer": chars.cer, "sub": words.substitutions, "del": words.deletions,
            "ins": words.insertions, "ref_words": sum(len(r.split()) for r in refs)}


@torch.no_grad()
def transcribe_all(model, tokenizer, feats, cfg, device):
    model.eval()
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]))
    hyps = [None] * len(feats)
    for start in range(0, len(order), cfg.eval_batch):
        idx = order[start:start + cfg.eval_batch]
        b = to_batch(feats, idx, device, False, None)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model.transcribe(b["feats"], b["feat_lens"], tokenizer, max_new_tokens=cfg.max_new_tokens)
        for i, h in zip(idx, out):
            hyps[i] = h
    return hyps


@torch.no_grad()
def evaluate_ctc(ctc, examples, feats, cfg, device, log):
    """Greedy CTC decoding of the stage-0 encoder: how well it hears, before any LLM."""
    ctc.eval()
    hyps = []
    for start in range(0, len(feats), cfg.eval_batch):
        b = to_batch(feats, range(start, min(start + cfg.eval_batch, len(feats))), device, False, None)
        hidden, out_lens = ctc["encoder"](b["feats"], b["feat_lens"])
        for ids in ctc_greedy_decode(ctc["head"](hidden).float(), out_lens):
            hyps.append("".join(CTC_CHARS[i - 1] for i in ids))
    r = error_counts([ex.text for ex in examples], hyps)
    log({"stage": "eval_ctc", **r, "n": len(examples)})
    print(f"stage0 CTC greedy: WER {100 * r['wer']:.1f}%  CER {100 * r['cer']:.1f}%\n    ref: {examples[0].text}\n"
          f"    hyp: {hyps[0]}")


def evaluate(model, tokenizer, evals, cfg, device, log):
    results = {}
    for name, (examples, feats) in evals.items():
        t0 = time.time()
        hyps = transcribe_all(model, tokenizer, feats, cfg, device)
        r = error_counts([ex.text for ex in examples], hyps)
        results[name] = r
        log({"stage": "eval", "split": name, **r, "n": len(examples), "time": time.time() - t0})
        print(f"{name:12s} WER {100 * r['wer']:5.1f}%  CER {100 * r['cer']:5.1f}%  "
              f"(sub {r['sub']}, del {r['del']}, ins {r['ins']} of {r['ref_words']} words, {len(examples)} utts)")
        for ex, h in list(zip(examples, hyps))[:2]:
            print(f"    ref: {ex.text}\n    hyp: {h}")
    return results


# ----------------------------------------------------------------------------- main

def main():
    cfg = parse_args()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = pick_device(cfg.device)
    os.makedirs(cfg.out, exist_ok=True)
    metrics = open(os.path.join(cfg.out, "metrics.jsonl"), "a")

    def log(row):
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()

    print(f"device {device}, config {json.dumps(asdict(cfg))}")
    train, evals, skipped = load_data(cfg)
    enc_cfg = EncoderConfig(d_model=cfg.d_model, n_layer=cfg.enc_layers, dropout=cfg.dropout,
                            vocab_size=len(CTC_CHARS) + 1)
    cache = os.path.join(os.path.dirname(cfg.out.rstrip("/")) or ".", "feature-cache")
    feats, train, bad = data.features(train, cache, cfg.skip_bad, enc_cfg.max_frames)
    skipped.update(bad)
    for name, examples in evals.items():
        eval_feats, kept, eval_skipped = data.features(examples, cache, cfg.skip_bad, enc_cfg.max_frames)
        if eval_skipped:
            print(f"skipped in eval set {name}: {dict(eval_skipped)}")
        evals[name] = (kept, eval_feats)
    if skipped:
        print(f"skipped training examples: {dict(skipped)}")
    print(f"train: {len(train)} utterances, {sum(len(f) for f in feats) / 360000:.2f} h; "
          + ", ".join(f"{k}: {len(v[0])}" for k, v in evals.items()))

    tok_path = os.path.join(cfg.out, "tokenizer.json")
    if cfg.resume and os.path.exists(tok_path):
        tokenizer = Tokenizer.load(tok_path)
    else:
        tokenizer = Tokenizer.train([ex.text for ex in train], vocab_size=cfg.vocab_size)
        tokenizer.save(tok_path)
    gen = torch.Generator().manual_seed(cfg.seed)
    stages = [s.strip() for s in cfg.stages.split(",")]

    # Stage 0: CTC pretraining of the encoder
    ctc = torch.nn.ModuleDict({"encoder": Encoder(enc_cfg), "head": CTCHead(enc_cfg)}).to(device)
    labels = [ctc_labels(ex.text) for ex in train]

    def ctc_step(idx):
        b = to_batch(feats, idx, device, cfg.spec_augment, gen, [labels[i] for i in idx])
        hidden, out_lens = ctc["encoder"](b["feats"], b["feat_lens"])
        return ctc_loss(ctc["head"](hidden), out_lens, b["tokens"], b["token_lens"])

    ckpt_config = {"train": asdict(cfg), "encoder": asdict(enc_cfg)}
    if "0" in stages:
        train_stage("stage0", ctc, ctc_step, feats, cfg.ctc_steps, cfg, device, ckpt_config, tokenizer, log, gen)
        evaluate_ctc(ctc, *next(iter(evals.values())), cfg, device, log)

    # Stage 1: SFT of the speech LLM
    llm_cfg = LLMConfig(vocab_size=tokenizer.vocab_size, n_layer=cfg.llm_layers, n_embd=cfg.n_embd,
                        dropout=cfg.dropout, max_seq_len=640)
    model = SpeechLM(enc_cfg, LLM(llm_cfg), ProjectorConfig(cfg.stack)).to(device)
    ckpt_config = {"train": asdict(cfg), "encoder": asdict(enc_cfg), "llm": asdict(llm_cfg),
                   "projector": {"stack": cfg.stack}}
    if "1" in stages:
        if not (cfg.resume and os.path.exists(os.path.join(cfg.out, "stage1", "state.json"))):
            load_checkpoint(os.path.join(cfg.out, "stage0"), ctc)  # encoder from stage 0
            model.encoder.load_state_dict(ctc["encoder"].state_dict())
        targets = [tokenizer.encode(ex.text) + [tokenizer.eos_id] for ex in train]
        prompts = [[tokenizer.task_id(ex.task)] + tokenizer.encode(ex.prompt) for ex in train]

        def sft_step(idx):
            b = to_batch(feats, idx, device, cfg.spec_augment, gen)
            return model.sft_loss(b["feats"], b["feat_lens"], [prompts[i] for i in idx], [targets[i] for i in idx])

        train_stage("stage1", model, sft_step, feats, cfg.sft_steps, cfg, device, ckpt_config, tokenizer, log, gen)
    elif os.path.exists(os.path.join(cfg.out, "stage1")):
        load_checkpoint(os.path.join(cfg.out, "stage1"), model)
    else:
        return  # stage 0 only: its CTC evaluation above is the result

    evaluate(model, tokenizer, evals, cfg, device, log)


if __name__ == "__main__":
    try:
        main()
    except (data.DataError, AudioError) as e:  # bad input: name the file and line, no traceback
        raise SystemExit(f"error: {e}")
