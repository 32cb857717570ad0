import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nanospeechrl.checkpoint as ckpt
from nanospeechrl.checkpoint import load_checkpoint, read_config, restore_rng, save_checkpoint
from nanospeechrl.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    def __init__(self, hidden=8, vocab=11):
        super().__init__()
        self.emb = nn.Embedding(vocab, 4)
        self.proj = nn.Linear(4, hidden)
        self.out = nn.Linear(hidden, vocab)
        self.norm = nn.LayerNorm(hidden)
        self.register_buffer("scale", torch.tensor([2.0]))

    def forward(self, x):  # (B, T) -> (B, T, vocab)
        return self.out(self.norm(self.proj(self.emb(x))))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.emb.weight  # tied, as in GPT-2 / nanoGPT


def train_steps(model, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randint(0, 11, (2, 5), generator=g)
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_round_trip_weights_config_tokenizer(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    tok = Tokenizer.train(["hello world"] * 5, vocab_size=270)
    save_checkpoint(tmp_path / "ck", model, {"hidden": 8, "name": "tiny"}, tokenizer=tok)
    fresh = Tiny()
    out = load_checkpoint(tmp_path / "ck", fresh)
    assert out["config"] == {"hidden": 8, "name": "tiny"} and out["state"] is None
    assert read_config(tmp_path / "ck") == {"hidden": 8, "name": "tiny"}
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    assert Tokenizer.load(out["dir"]).encode("hello") == tok.encode("hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp/backup left


def test_tied_weights(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    save_checkpoint(tmp_path / "ck", model, {})
    fresh = Tied()
    load_checkpoint(tmp_path / "ck", fresh)
    assert torch.equal(fresh.emb.weight, model.emb.weight)
    assert fresh.head.weight is fresh.emb.weight  # still tied after loading


def test_optimizer_resume_is_exact(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    train_steps(model, opt, 3, seed=1)
    save_checkpoint(tmp_path / "ck", model, {}, optimizer=opt, state={"step": 3})
    train_steps(model, opt, 3, seed=2)

    torch.manual_seed(123)  # different init: everything must come from the checkpoint
    model2 = Tiny()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=5.0)
    out = load_checkpoint(tmp_path / "ck", model2, opt2)
    assert out["state"]["step"] == 3
    assert opt2.param_groups[0]["lr"] == 1e-2
    train_steps(model2, opt2, 3, seed=2)
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), k


def test_optimizer_with_non_tensor_state(tmp_path):
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, opt, 2, seed=0)
    save_checkpoint(tmp_path / "ck", model, {}, optimizer=opt)
    opt2 = torch.optim.SGD(Tiny().parameters(), lr=0.5, momentum=0.1)
    load_checkpoint(tmp_path / "ck", optimizer=opt2)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        assert torch.equal(a["state"][i]["momentum_buffer"], b["state"][i]["momentum_buffer"])


def test_missing_optimizer_file(tmp_path):
    save_checkpoint(tmp_path / "ck", Tiny(), {})
    with pytest.raises(FileNotFoundError, match="optimizer.safetensors"):
        load_checkpoint(tmp_path / "ck", optimizer=torch.optim.Adam(Tiny().parameters()))


def test_rng_resume(tmp_path):
    random.seed(5); np.random.seed(5); torch.manual_seed(5)
    torch.rand(3)  # advance the streams away from a fresh seed
    save_checkpoint(tmp_path / "ck", Tiny(), {}, state={"cursor": 17})
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(99); np.random.seed(99); random.seed(99)
    state = load_checkpoint(tmp_path / "ck")["state"]
    assert state["cursor"] == 17
    restore_rng(state)
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(4), expected[1])
    assert [random.random() for _ in range(4)] == expected[2]


def test_shape_mismatch_names_tensor(tmp_path):
    save_checkpoint(tmp_path / "ck", Tiny(hidden=8), {})
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path / "ck", Tiny(hidden=16))
    msg = str(e.value)
    assert str(tmp_path / "ck") in msg
    assert "tensor 'proj.weight' has shape (8, 4) in checkpoint but (16, 4) in model" in msg


def test_missing_and_unexpected_keys(tmp_path):
    save_checkpoint(tmp_path / "ck", Tiny(), {})
    with pytest.raises(ValueError, match="'out.weight' is in checkpoint but not in the model"):
        load_checkpoint(tmp_path / "ck", Tied())
    with pytest.raises(ValueError, match="'head.weight' with shape .* missing from checkpoint"):
        load_checkpoint(tmp_path / "ck", Tied())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_checkpoint(tmp_path / "nope", Tiny())
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_config(tmp_path / "empty")


def test_failure_while_writing_keeps_old(tmp_path, monkeypatch):
    path = tmp_path / "ck"
    save_checkpoint(path, Tiny(), {"version": 1})
    real = ckpt.save_file

    def fail_on_optimizer(tensors, filename, metadata=None):
        if filename.endswith("optimizer.safetensors"):
            raise OSError("disk full")
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", fail_on_optimizer)
    model = Tiny()
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, {"version": 2}, optimizer=torch.optim.Adam(model.parameters()))
    assert read_config(path) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # temp dir cleaned up


def test_kill_between_renames_loads_backup(tmp_path, monkeypatch):
    path = tmp_path / "ck"
    torch.manual_seed(0)
    old = Tiny()
    save_checkpoint(path, old, {"version": 1})
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # path -> backup done, tmp -> path not yet
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, Tiny(), {"version": 2})
    monkeypatch.setattr(os, "rename", real_rename)
    assert not path.exists()
    fresh = Tiny()
    assert load_checkpoint(path, fresh)["config"] == {"version": 1}
    assert torch.equal(fresh.proj.weight, old.proj.weight)
    save_checkpoint(path, Tiny(), {"version": 3})  # next save recovers and cleans up
    assert read_config(path) == {"version": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


WRITER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from nanospeechrl.checkpoint import save_checkpoint
    model = nn.Sequential(nn.Linear(512, 1024), nn.Linear(1024, 512))  # ~4 MB of weights
    i = int(sys.argv[2])
    while True:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(i))
        save_checkpoint(sys.argv[1], model, {"version": i}, state={"step": i})
        print(i, flush=True)
        i += 1
""")


def test_sigkill_mid_save_leaves_complete_checkpoint(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "ck"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(0)
    start = 0
    for _ in range(2):  # two kills at different moments; the second resumes over the first's debris
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(start)],
                                stdout=subprocess.PIPE, text=True, env=env)
        last = int(proc.stdout.readline())  # first save finished
        t0 = time.perf_counter()
        last = int(proc.stdout.readline())  # second save finished: time one save
        time.sleep(rng.uniform(0, 3 * (time.perf_counter() - t0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:  # saves reported finished before the kill
            last = int(line)
        proc.stdout.close()

        out = load_checkpoint(path)
        version = out["config"]["version"]
        assert version >= last  # a save that returned is never lost
        assert out["state"]["step"] == version  # all files from the same save
        weights = ckpt.load_file(str(out["dir"] / "model.safetensors"))
        assert all(torch.all(w == version) for w in weights.values())
        start = version + 1
