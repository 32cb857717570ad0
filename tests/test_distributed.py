"""Data parallelism (distributed.py) on CPU with gloo and 2 processes: one GRPO update and one
stage-1 SFT step on two shards give the weights one process gets on their union (fp32,
atol 1e-5: only the order of float sums differs); rank 0 alone writes; bad world sizes fail."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from asr_helpers import ROOT, TINY, make_corpus, train_asr
from nanospeechrl import distributed
from nanospeechrl.grpo import Completions, GRPOConfig, grpo_update
from nanospeechrl.llm import LLM, LLMConfig
from nanospeechrl.sampler import sequence_logprobs

B, G, L = 4, 3, 6  # prompts, completions per prompt, completion slots


def grpo_batch(rows, kept=True):
    """A fixed GRPO batch (the same on every call) and the rows `rows` of it."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 40, (B * G, L), generator=g)
    lengths = torch.randint(1, L + 1, (B * G,), generator=g)
    mask = (torch.arange(L)[None] < lengths[:, None]).float()
    adv = torch.randn(B * G, generator=g)
    prompts = torch.randn(B, 3, 32, generator=g)
    r = torch.tensor(rows)
    full_rows = torch.cat([torch.arange(p * G, (p + 1) * G) for p in rows])
    batch = Completions(r, tokens[full_rows], lengths[full_rows], mask[full_rows], adv[full_rows],
                        torch.zeros(len(full_rows), dtype=torch.bool))
    return batch, prompts[r]


def update(rows, cfg):
    """One GRPO update of a seeded tiny LLM on the prompts `rows` -> its weights."""
    torch.manual_seed(0)
    model = LLM(LLMConfig(vocab_size=40, n_layer=1, n_embd=32, n_head=2, n_kv_head=1, max_seq_len=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch, prompts = grpo_batch(rows) if rows else (None, None)
    logprobs = lambda: sequence_logprobs(model, prompts, None, batch.tokens, batch.lengths)  # noqa: E731
    assert grpo_update(logprobs, model.parameters(), opt, batch, None, cfg) is not None
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rank(rank, init_file, shards, loss_type, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.save(update(shards[rank], GRPOConfig(loss_type=loss_type, beta=0.0)), out + f".{rank}")
    dist.destroy_process_group()


@pytest.mark.parametrize("loss_type,shards", [("dapo", ([0, 2], [1, 3])), ("grpo", ([0, 1, 3], [2])),
                                               ("dapo", ([0, 1, 2, 3], []))])
def test_grpo_update_on_two_ranks_equals_one_process_on_the_union(tmp_path, loss_type, shards):
    """Uneven shards and a rank with nothing to learn included: the token-level (dapo) and
    per-completion (grpo) means are shared by units, so the union's gradient comes out."""
    out = str(tmp_path / "weights")
    mp.spawn(_rank, args=(str(tmp_path / "init"), shards, loss_type, out), nprocs=2)
    alone = update([0, 1, 2, 3], GRPOConfig(loss_type=loss_type, beta=0.0))
    for rank in (0, 1):
        weights = torch.load(out + f".{rank}")
        for k in alone:
            torch.testing.assert_close(weights[k], alone[k], atol=1e-5, rtol=0)


def test_single_process_helpers_are_the_identity():
    loss = torch.tensor(2.5, requires_grad=True)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.shard([1, 2, 3]) == [1, 2, 3] and distributed.share(loss, 7) is loss
    assert distributed.any_true(True) and not distributed.all_true(False)


def torchrun(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29531", str(ROOT / "train_asr.py"), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_sft_step_equals_one_process_and_rank_0_writes(tmp_path):
    make_corpus(tmp_path)
    common = ["--data", tmp_path / "train.jsonl", "--eval", f"dev={tmp_path / 'dev.jsonl'}", *TINY, "--no-bf16",
              "--no-sft-augment", "--sft-steps", "1", "--batch-frames", "100000"]  # one batch: all 6 utterances
    r = train_asr(*common, "--out", tmp_path / "one", "--stages", "0", "--no-evaluate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    r = train_asr(*common, "--out", tmp_path / "one", "--stages", "1", "--no-evaluate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun(*common, "--out", tmp_path / "two", "--stages", "1,2", "--rl-batch", "16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 1 of 2 (torchrun)" in r.stdout and r.stdout.count("== sft ") == 1  # rank 0 evaluates
    assert (tmp_path / "one" / "tokenizer.json").read_text() == (tmp_path / "two" / "tokenizer.json").read_text()
    one, two = (load_file(tmp_path / d / "stage1" / "model.safetensors") for d in ("one", "two"))
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=0)
    rows = [line for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines() if '"stage2"' in line]
    assert len(rows) == 2  # 2 GRPO steps, logged once (rank 0)
    r = torchrun(*common, "--out", tmp_path / "two", "--stages", "1,2", "--rl-batch", "12", cwd=tmp_path)
    assert r.returncode != 0 and "2 ranks cannot share evenly" in r.stderr and "multiple of 8" in r.stderr
