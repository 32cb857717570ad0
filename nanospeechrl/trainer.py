"""
The plain supervised training loop shared by the training scripts.

`train_stage` runs length-bucketed batches -> loss_fn(batch indices) -> AdamW step on the
trainable parameters, with warmup + cosine learning rate (or any lr_fn), gradient clipping,
tqdm, a metrics row every cfg.log_every steps and an atomic checkpoint every cfg.ckpt_every
steps. It runs a number of steps, or for a time budget (an equal-time control). With
cfg.resume it continues exactly where a killed run stopped: model, optimizer, data cursor,
RNGs and the augmentation generator all come back from the checkpoint.
With a dev measure it stops early: every cfg.dev_every steps the loss on a dev set (or another
measure, lower is better) is taken, the best weights so far are kept in <out>/<name>-best, and
after cfg.patience evaluations without a lower one the stage ends, its checkpoint holding them.
`cfg` is the script's config: any object with out, lr, resume, seed, batch_frames,
log_every and ckpt_every (and dev_every, patience for early stopping). Under torchrun each
rank trains on its shard of every batch and the gradients are summed over ranks
(distributed.py); the loss logged is rank 0's.
"""
import itertools
import math
import os
import shutil
import time

import torch
from tqdm import tqdm

from nanospeechrl import distributed
from nanospeechrl.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from nanospeechrl.data import SHAPE_MULTIPLE, batches_forever, bucket_batches
from nanospeechrl.devices import autocast


def lr_at(step, total, peak):
    """Linear warmup over the first 5% of steps, then cosine down to peak / 10."""
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


@torch.no_grad()
def mean_loss(loss_fn, lengths, batch_frames, units=len):
    """The mean of loss_fn(batch indices) over a whole set, batched by length, weighted by units."""
    total = count = 0.0
    for idx in bucket_batches(lengths, batch_frames, shuffle=False, multiple=SHAPE_MULTIPLE):
        n = units(idx)
        total, count = total + loss_fn(idx).float().item() * n, count + n
    return total / max(count, 1)


class EarlyStopping:
    """A dev measure every `every` steps (lower is better); the best weights kept in `best_path`;
    stop after `patience` evaluations without a lower one. measure() -> a float, or a dict of
    values that holds `metric` (the others are logged beside it). Its state rides in the
    stage's checkpoint, so a resumed run continues mid-patience exactly."""

    def __init__(self, measure, every, patience, best_path, metric="dev_loss"):
        self.measure, self.every, self.patience, self.best_path = measure, every, patience, best_path
        self.metric, self.what = metric, metric.replace("_", " ")  # its key in the log, its name in messages
        self.best, self.best_step, self.stale = float("inf"), 0, 0

    def state(self):
        return {"best": self.best, "best_step": self.best_step, "stale": self.stale}

    def load(self, state):
        self.best, self.best_step, self.stale = state["best"], state["best_step"], state["stale"]

    def check(self, model, step, save_best):
        """After `step` steps: measure, keep the weights if best (save_best()) -> a reason to stop, or None."""
        model.eval()
        with autocast(next(model.parameters()).device):
            values = self.measure()
        model.train()
        self.values = values if isinstance(values, dict) else {self.metric: values}
        value = self.values[self.metric]
        if value < self.best:
            self.best, self.best_step, self.stale = value, step, 0
            save_best()
        else:
            self.stale += 1
        self.last = value
        if self.stale >= self.patience:
            return (f"{self.what} has not improved for {self.stale} evaluations ({self.stale * self.every} steps); "
                    f"best {self.best:.4f} at step {self.best_step}")
        return None


def train_stage(name, model, loss_fn, lengths, cfg, device, ckpt_config, tokenizer, log, gen, steps=None,
                seconds=None, lr_fn=None, init_opt=None, batch_frames=None, units=len, dev_loss=None,
                dev_metric="dev_loss"):
    """Train `model` on loss_fn(batch indices) for `steps` steps, or for `seconds` of training
    time (then lr_fn is required: a schedule over an unknown number of steps), checkpointing
    to <cfg.out>/<name>. lengths: each item's length in frames, for batching. gen: the
    augmentation generator, saved with the checkpoint so a resumed run continues exactly.
    init_opt: a checkpoint whose optimizer state (AdamW moments) a fresh start continues from.
    batch_frames: the padded length budget of a batch (default cfg.batch_frames).
    units(batch indices): how many units loss_fn's mean is over (default: items; tokens for a
    token-level mean), so that under torchrun the ranks' shards add up to the whole batch's mean.
    dev_loss() -> float: the dev set's loss (mean_loss), for early stopping (steps mode, with
    cfg.patience > 0); the final checkpoint then holds the best weights, its state says why it stopped.
    dev_metric: what dev_loss measures, its name in the log (it may return a dict holding it, EarlyStopping)."""
    if (steps is None) == (seconds is None) or (seconds is not None and lr_fn is None):
        raise ValueError("train_stage: give steps, or seconds and an lr_fn")
    path = os.path.join(cfg.out, name)
    lr_fn = lr_fn or (lambda step: lr_at(step, steps, cfg.lr))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.98),
                            weight_decay=0.01)
    step, cursor, elapsed = 0, [0, 0], 0.0
    stopper = None
    if dev_loss is not None and steps is not None and getattr(cfg, "patience", 0) > 0:
        stopper = EarlyStopping(dev_loss, cfg.dev_every, cfg.patience, f"{path}-best", dev_metric)
    if cfg.resume and os.path.exists(os.path.join(path, "state.json")):
        state = load_checkpoint(path, model, opt)["state"]
        step, cursor, elapsed = state["step"], state["cursor"], state.get("elapsed", 0.0)
        restore_rng(state)
        gen.set_state(torch.tensor(state["augment_rng"], dtype=torch.uint8))
        if state.get("done"):
            print(f"{name}: already done ({step} steps), skipping")
            return
        if stopper and "early_stopping" in state:
            stopper.load(state["early_stopping"])
        print(f"{name}: resuming at step {step}")
    elif init_opt:
        load_checkpoint(init_opt, optimizer=opt)
    model.train()
    batches = batches_forever(lengths, cursor, cfg.seed, batch_frames or cfg.batch_frames)
    bar = tqdm(itertools.count(step) if steps is None else range(step, steps), desc=name, initial=step, total=steps,
               disable=not distributed.is_main())
    t0 = time.time() - elapsed
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_fn(step)
        mine = distributed.shard(next(batches))  # the whole batch without torchrun
        opt.zero_grad(set_to_none=True)
        if mine:
            with autocast(device):
                loss = loss_fn(mine)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: loss is {loss.item()} at step {step}; last checkpoint in {path}")
            distributed.share(loss, units(mine)).backward()
        else:  # a batch smaller than the world: this rank adds nothing (but takes part in the sums)
            loss = torch.zeros(())
            distributed.share(loss, 0)
        distributed.sync_grads(model.parameters())
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        last = distributed.any_true(time.time() - t0 >= seconds) if steps is None else step == steps - 1
        if step % cfg.log_every == 0 or last:
            log({"stage": name, "step": step, "loss": loss.item(), "grad_norm": grad_norm.item(),
                 "lr": opt.param_groups[0]["lr"], "epoch": cursor[0], "time": time.time() - t0})
        stopped = None
        if stopper and ((step + 1) % stopper.every == 0 or last):
            stopped = stopper.check(model, step + 1, lambda: save_checkpoint(stopper.best_path, model, ckpt_config))
            log({"stage": name, "step": step, **stopper.values, f"best_{stopper.metric}": stopper.best,
                 "best_step": stopper.best_step, "time": time.time() - t0})
            last = last or stopped is not None
        if (step + 1) % cfg.ckpt_every == 0 or last:
            state = {"step": step + 1, "cursor": cursor, "done": last, "elapsed": time.time() - t0,
                     "augment_rng": gen.get_state().tolist()}
            if stopper:
                state["early_stopping"] = stopper.state()
            if stopper and last:  # the stage's weights are its best on dev (rank 0 wrote them)
                distributed.barrier()
                load_checkpoint(stopper.best_path, model)
                distributed.barrier()  # every rank has read them before rank 0 removes them
                state["stopped"] = stopped or (f"the last step; {stopper.what} still {stopper.last:.4f} (best "
                                               f"{stopper.best:.4f} at step {stopper.best_step})")
                print(f"{name}: stopped after {step + 1} steps: {state['stopped']}; its checkpoint holds the "
                      f"weights of step {stopper.best_step}")
                log({"stage": name, "step": step, "stopped": state["stopped"], "best_step": stopper.best_step})
            save_checkpoint(path, model, ckpt_config, tokenizer, opt, state)
            if stopper and last and distributed.is_main():  # the stage's checkpoint holds the best weights now
                shutil.rmtree(stopper.best_path, ignore_errors=True)
        if last:
            break
    distributed.barrier()  # the next stage may read this one's checkpoint on every rank
