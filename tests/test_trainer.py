"""trainer.train_stage's early stopping: it stops where the dev loss stops improving, keeps the
best weights, says why, and a run killed mid-patience resumes to the same weights."""
import json
from types import SimpleNamespace

import pytest
import torch

import nanospeechrl.trainer as trainer
from nanospeechrl.checkpoint import load_checkpoint


def toy(tmp_path, resume=False, patience=2, steps=60):
    """A one-weight model pulled from 0 towards 2 by its training loss; its dev loss (w - 1)^2 is
    lowest where w passes 1, so dev improves and then gets worse as training goes on."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    cfg = SimpleNamespace(out=str(tmp_path), lr=0.05, resume=resume, seed=0, batch_frames=100, log_every=1,
                          ckpt_every=1, dev_every=5, patience=patience)
    rows = []
    trainer.train_stage("sft", model, lambda idx: (model.weight - 2).pow(2).sum(), [10] * 20, cfg,
                        torch.device("cpu"), {"toy": 1}, None, rows.append, torch.Generator().manual_seed(0),
                        steps=steps, dev_loss=lambda: (model.weight - 1).pow(2).sum().item())
    return model, rows


def test_stops_after_patience_with_the_best_weights(tmp_path):
    model, rows = toy(tmp_path)
    state = json.loads((tmp_path / "sft" / "state.json").read_text())
    evals = [r for r in rows if "dev_loss" in r]
    best = min(evals, key=lambda r: r["dev_loss"])
    assert state["done"] and state["step"] < 60, state["step"]  # stopped early
    assert state["early_stopping"]["best_step"] == best["step"] + 1 and best["step"] + 1 == state["step"] - 2 * 5
    assert "has not improved for 2 evaluations (10 steps)" in state["stopped"]
    saved = torch.nn.Linear(1, 1, bias=False)
    load_checkpoint(tmp_path / "sft", saved)
    assert abs(saved.weight.item() - 1) ** 2 == pytest.approx(best["dev_loss"], abs=1e-9)  # the best, not the last
    assert model.weight.item() == saved.weight.item()
    assert evals[-1]["dev_loss"] > best["dev_loss"] and any("stopped" in r for r in rows)


def test_without_patience_it_runs_every_step(tmp_path):
    model, rows = toy(tmp_path, patience=0)
    assert json.loads((tmp_path / "sft" / "state.json").read_text())["step"] == 60
    assert not any("dev_loss" in r for r in rows) and model.weight.item() > 1.5


def test_killed_mid_patience_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole, _ = toy(tmp_path / "whole")
    stop = json.loads((tmp_path / "whole" / "sft" / "state.json").read_text())["step"]
    save = trainer.save_checkpoint

    def save_then_die(path, *args, **kwargs):  # killed after the checkpoint one evaluation past the best
        saved = save(path, *args, **kwargs)
        if kwargs.get("state", args[-1] if len(args) > 3 else {}).get("step") == stop - 5:
            raise KeyboardInterrupt
        return saved

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        toy(tmp_path / "split")
    assert json.loads((tmp_path / "split" / "sft" / "state.json").read_text())["early_stopping"]["stale"] == 1
    monkeypatch.setattr(trainer, "save_checkpoint", save)
    resumed, _ = toy(tmp_path / "split", resume=True)
    assert resumed.weight.item() == whole.weight.item()
    a = json.loads((tmp_path / "whole" / "sft" / "state.json").read_text())
    b = json.loads((tmp_path / "split" / "sft" / "state.json").read_text())
    assert {k: a[k] for k in ("step", "stopped", "early_stopping")} == {k: b[k] for k in ("step", "stopped",
                                                                                         "early_stopping")}
