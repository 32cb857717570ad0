"""
Data parallelism under torchrun, by hand: what DistributedDataParallel does, without its
module wrapper (our losses are methods such as sft_loss_from_audio, not forward()).

    torchrun --nproc-per-node 2 train_asr.py ...      # gloo on CPUs, NCCL on GPUs

Every rank builds the same length-bucketed batches from the same seed and takes its shard
(shard); its loss is scaled to its share of the whole batch's mean (share), and after
backward the gradients are summed over ranks (sync_grads), so every rank holds the gradient
of the union's mean loss and takes the same optimizer step: the weights stay identical
without ever being broadcast. Rank 0 alone writes checkpoints, metrics and evaluation
(is_main). Without torchrun (WORLD_SIZE unset or 1) every function here is the identity.
"""
import contextlib
import os

import torch
import torch.distributed as dist


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def is_main():
    return rank() == 0


def setup(device):
    """Join the torchrun process group if there is one -> this rank's device (cuda:LOCAL_RANK
    for a CUDA run, else the device given)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard(items):
    """This rank's share of a batch (every world_size-th item from its rank)."""
    return items[rank()::world_size()]


def total(n, device="cpu"):
    """The sum of a count over ranks."""
    if world_size() == 1:
        return n
    t = torch.tensor(float(n), device=device)
    dist.all_reduce(t)
    return t.item()


def share(loss, n):
    """A rank's mean loss over its n units (tokens, utterances) -> its part of the mean over all
    ranks' units: loss * n / (n summed over ranks). Summed over ranks, the gradients are the
    union's; n = 0 (an empty shard) gives a zero part."""
    if world_size() == 1:
        return loss
    return loss * (n / max(total(n, loss.device), 1.0))


def sync_grads(parameters):
    """Sum the gradients of every rank (a missing gradient counts as zeros), in one all-reduce."""
    if world_size() == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p))


def all_true(flag):
    """True on every rank only if flag is true on every rank (a skipped update must be skipped everywhere)."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor(float(bool(flag)))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def any_true(flag):
    """True on every rank if flag is true on any rank (a time budget one rank has spent ends the stage for all)."""
    return not all_true(not flag)


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier():
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (building a corpus, a feature cache), the others after it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
