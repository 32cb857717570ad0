"""Resumable, atomic checkpoints: a directory of safetensors + json.

    <path>/model.safetensors      model weights
    <path>/config.json            whatever config dict the caller passes
    <path>/tokenizer.json         optional
    <path>/optimizer.safetensors  optimizer tensors; param_groups/scalars as json in its metadata
    <path>/state.json             caller state (step, data cursor, ...) + RNG states, for resuming

Everything is written to a sibling temp dir, fsynced, and swapped in with renames, so a
kill at any moment leaves either the old or the new checkpoint loadable, never a half one.
One writer per checkpoint path: a save removes leftover temp dirs of earlier (killed) saves.
"""
import base64
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nanospeechrl import distributed

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def _fsync(path: Path):
    fd = os.open(path, os.O_RDONLY)  # works for files and (on POSIX) directories
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def capture_rng() -> dict:
    """JSON-able snapshot of the python, numpy, torch CPU and CUDA generators."""
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"python": [py[0], list(py[1]), py[2]],
            "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
            "torch": _b64(torch.get_rng_state()), "cuda": cuda}


def restore_rng(state: dict):
    """Restore generators from capture_rng()'s dict, or from a loaded state with an "rng" key."""
    rng = state.get("rng", state)
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(_unb64(rng["torch"]))
    if rng["cuda"] and torch.cuda.is_available():  # a GPU run resumed on CPU skips this
        torch.cuda.set_rng_state_all([_unb64(s) for s in rng["cuda"][: torch.cuda.device_count()]])


def _save_optimizer(optimizer: torch.optim.Optimizer, file: Path):
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, per_param in sd["state"].items():
        for name, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = v
    meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    save_file(tensors, str(file), metadata={"optimizer": json.dumps(meta)})


def _load_optimizer(optimizer: torch.optim.Optimizer, file: Path, device):
    with safe_open(str(file), framework="pt", device=str(device)) as f:
        meta = json.loads(f.metadata()["optimizer"])
        state = {int(i): dict(per_param) for i, per_param in meta["scalars"].items()}
        for key in f.keys():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = f.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path, model: torch.nn.Module, config: dict, tokenizer=None,
                    optimizer=None, state: dict | None = None) -> Path:
    """Atomically write a checkpoint dir. `state` gets an "rng" entry with capture_rng().
    Under torchrun only rank 0 writes (the weights are the same on every rank)."""
    path = Path(path)
    if not distributed.is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    backup = path.parent / f".{path.name}.old"
    tmp.mkdir()
    try:
        # clone: safetensors refuses tensors sharing storage (tied embeddings); load copies into both
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / MODEL_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_FILE)
        if optimizer is not None:
            _save_optimizer(optimizer, tmp / OPTIMIZER_FILE)
        if state is not None:
            (tmp / STATE_FILE).write_text(json.dumps({**state, "rng": capture_rng()}))
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Swap: a kill between the two renames leaves only the backup, which load falls back to.
    if path.exists():
        shutil.rmtree(backup, ignore_errors=True)  # path is complete, so an old backup is stale
        os.rename(path, backup)
    os.rename(tmp, path)
    _fsync(path.parent)
    shutil.rmtree(backup, ignore_errors=True)
    return path


def _resolve(path) -> Path:
    path = Path(path)
    backup = path.parent / f".{path.name}.old"
    if not path.exists() and (backup / MODEL_FILE).exists():
        return backup  # killed between the two renames of save_checkpoint
    if not (path / MODEL_FILE).exists():
        raise FileNotFoundError(f"no checkpoint at {path} (missing {MODEL_FILE})")
    return path


def saved_state(out, stage) -> dict:
    """<out>/<stage>/state.json as a dict ({} when there is no checkpoint)."""
    path = os.path.join(out, stage, "state.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def done(out, stage):
    """The finished-flag of a stage's checkpoint in <out>, or None when there is none."""
    return saved_state(out, stage).get("done")


def read_config(path) -> dict:
    return json.loads((_resolve(path) / CONFIG_FILE).read_text())


def _check_weights(ckpt: dict, model: torch.nn.Module, where: Path):
    expected = model.state_dict()
    problems = []
    for k, v in expected.items():
        if k not in ckpt:
            problems.append(f"tensor '{k}' with shape {tuple(v.shape)} is in the model but missing from checkpoint")
        elif ckpt[k].shape != v.shape:
            problems.append(f"tensor '{k}' has shape {tuple(ckpt[k].shape)} in checkpoint "
                            f"but {tuple(v.shape)} in model")
    problems += [f"tensor '{k}' is in checkpoint but not in the model" for k in ckpt if k not in expected]
    if problems:
        raise ValueError(f"checkpoint {where} does not fit the model: " + "; ".join(problems))


def load_checkpoint(path, model=None, optimizer=None, map_location="cpu") -> dict:
    """Load weights (strict) into model and state into optimizer.

    Returns {"config": dict, "state": dict or None, "dir": the directory actually read}.
    Call restore_rng(result["state"]) to continue the random streams exactly.
    """
    where = _resolve(path)
    if model is not None:
        weights = load_file(str(where / MODEL_FILE), device=str(map_location))
        _check_weights(weights, model, where)
        model.load_state_dict(weights, strict=True)
    if optimizer is not None:
        if not (where / OPTIMIZER_FILE).exists():
            raise FileNotFoundError(f"checkpoint {where} has no {OPTIMIZER_FILE} to resume from")
        _load_optimizer(optimizer, where / OPTIMIZER_FILE, map_location)
    state_file = where / STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    return {"config": json.loads((where / CONFIG_FILE).read_text()), "state": state, "dir": where}
