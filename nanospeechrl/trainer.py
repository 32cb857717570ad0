"""
The plain supervised training loop shared by the training scripts, and its helpers.

`train_stage` runs length-bucketed batches -> loss_fn(batch indices) -> AdamW step on the
trainable parameters, with warmup + cosine learning rate, gradient clipping, tqdm, a
metrics row every cfg.log_every steps and an atomic checkpoint every cfg.ckpt_every steps.
With cfg.resume it continues exactly where a killed run stopped: model, optimizer, data
cursor, RNGs and the augmentation generator all come back from the checkpoint.
`cfg` is the script's config: any object with out, lr, resume, seed, batch_frames,
log_every, ckpt_every and eval_batch.
"""
import itertools
import math
import os
import time

import torch
from tqdm import tqdm

from nanospeechrl import data
from nanospeechrl.audio import spec_augment
from nanospeechrl.checkpoint import load_checkpoint, restore_rng, save_checkpoint


# Batches are padded to a multiple of this many frames: few distinct shapes, so the oneDNN
# kernels that bf16 autocast runs on a CPU, compiled once per shape, are reused (bench/bf16.py).
SHAPE_MULTIPLE = 32


def batches_forever(lengths, cfg, cursor, batch_size=None):
    """Length-bucketed batches (under cfg.batch_frames, or of batch_size), epoch after epoch;
    cursor = [epoch, index] is advanced in place so a checkpoint can resume mid-epoch."""
    while True:
        frames = None if batch_size else cfg.batch_frames
        epoch_batches = data.bucket_batches(lengths, frames, batch_size, seed=cfg.seed + cursor[0],
                                            multiple=SHAPE_MULTIPLE)
        while cursor[1] < len(epoch_batches):
            cursor[1] += 1
            yield epoch_batches[cursor[1] - 1]
        cursor[0], cursor[1] = cursor[0] + 1, 0


def to_batch(feats, idx, device, augment=False, generator=None, token_ids=None):
    """Padded batch of feats[idx] (SpecAugment-ed if asked) and token_ids, on device."""
    b = data.collate([feats[i] for i in idx], token_ids, multiple=SHAPE_MULTIPLE)
    if augment:
        b["feats"] = spec_augment(b["feats"], generator=generator)
    return {k: v.to(device) for k, v in b.items()}


def _cpu_has_amx():
    """Does this CPU have AMX bf16 matrix units (Intel Xeon 4th gen and later)? There a bf16
    matmul runs ~4x faster than fp32; without them CPU bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:  # not Linux
        return False


CPU_AMX = _cpu_has_amx()
BF16 = True  # bf16 autocast where it is fast (AMX CPUs); train_asr.py --no-bf16 sets it False


def uses_bf16(device):
    """bf16 autocast on CPUs with AMX, where training steps run 1.3-1.4x faster (bench/bf16.py).
    Not on CUDA: on an H100 both presets' steps ran at 0.6-1.0x fp32's speed in bf16 (too small
    to gain from it, so the casts cost more than they save)."""
    return BF16 and device.type == "cpu" and CPU_AMX


def autocast(device):
    """bf16 autocast where uses_bf16 (weights and optimizer state stay fp32); a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device))


@torch.no_grad()
def encode_all(encoder, feats, batch_size, device):
    """A frozen encoder's output for every utterance, once: a list of (T', D) float32 CPU tensors."""
    encoder.eval()
    out = [None] * len(feats)
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="encode", leave=False):
        idx = order[start:start + batch_size]
        b = to_batch(feats, idx, device)
        with autocast(device):
            hidden, lens = encoder(b["feats"], b["feat_lens"])
        for i, h, n in zip(idx, hidden.float().cpu(), lens.tolist()):
            out[i] = h[:n].clone()
    return out


def lr_at(step, total, peak):
    """Linear warmup over the first 5% of steps, then cosine down to peak / 10."""
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def train_stage(name, model, loss_fn, feats, steps, cfg, device, ckpt_config, tokenizer, log, gen,
                lr_fn=None, seconds=None, init_opt=None):
    """Train `model` for `steps` steps of loss_fn(batch indices), checkpointing to
    <cfg.out>/<name>; feats gives the lengths to batch by. lr_fn(step) defaults to warmup +
    cosine; with `seconds` the stage ends once that much training time has passed. gen is the
    augmentation generator, saved with the checkpoint so a resumed run continues exactly.
    init_opt: a checkpoint whose optimizer state (AdamW moments) a fresh start continues from."""
    path = os.path.join(cfg.out, name)
    lr_fn = lr_fn or (lambda step: lr_at(step, steps, cfg.lr))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.98),
                            weight_decay=0.01)
    step, cursor, elapsed = 0, [0, 0], 0.0
    if cfg.resume and os.path.exists(os.path.join(path, "state.json")):
        state = load_checkpoint(path, model, opt)["state"]
        step, cursor, elapsed = state["step"], state["cursor"], state.get("elapsed", 0.0)
        restore_rng(state)
        gen.set_state(torch.tensor(state["augment_rng"], dtype=torch.uint8))
        if state.get("done"):
            print(f"{name}: already done ({step} steps), skipping")
            return
        print(f"{name}: resuming at step {step}")
    elif init_opt:
        load_checkpoint(init_opt, optimizer=opt)
    model.train()
    batches = batches_forever([len(f) for f in feats], cfg, cursor)
    bar = tqdm(itertools.count(step) if seconds else range(step, steps), desc=name, initial=step,
               total=None if seconds else steps)
    t0 = time.time() - elapsed
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_fn(step)
        with autocast(device):
            loss = loss_fn(next(batches))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss is {loss.item()} at step {step}; last checkpoint in {path}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        last = step == steps - 1 or (seconds is not None and time.time() - t0 >= seconds)
        if step % cfg.log_every == 0 or last:
            log({"stage": name, "step": step, "loss": loss.item(), "grad_norm": grad_norm.item(),
                 "lr": opt.param_groups[0]["lr"], "epoch": cursor[0], "time": time.time() - t0})
        if (step + 1) % cfg.ckpt_every == 0 or last:
            state = {"step": step + 1, "cursor": cursor, "done": last, "elapsed": time.time() - t0,
                     "augment_rng": gen.get_state().tolist()}
            save_checkpoint(path, model, ckpt_config, tokenizer, opt, state)
        if last:
            break
