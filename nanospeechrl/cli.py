"""Command-line flags from config dataclasses (one --flag per field, its help the field's
comment), and the start every training script shares (start_run).

    @dataclass
    class TrainConfig:
        lr: float = 2e-3  # peak learning rate      ->   --lr LR   peak learning rate (default: 0.002)

The comment next to a field is its documentation, read from the source, so the two never drift.
"""
import argparse
import inspect
import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, fields

import torch

from nanospeechrl import devices, distributed

_FIELD = re.compile(r"\s+(\w+)\s*:[^=#]*=[^#]*#\s*(.*)$")  # "    name: type = default  # comment"


def field_comments(cls):
    """{field name: the comment on its line} for a dataclass defined in a source file."""
    return {m[1]: m[2] for line in inspect.getsource(cls).splitlines() if (m := _FIELD.match(line))}


def truth(text):
    """A bool flag's value: --bf16 false (or no, off, 0) and --bf16 true (yes, on, 1)."""
    if text.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return text.lower() in ("true", "yes", "on", "1")
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def add_config_flags(parser, *classes):
    """--flag-name for every field of every class (bools as --x, --x false or --no-x); defaults are
    None, so a caller can tell a flag that was given from one that was not (presets fill the rest)."""
    for cls in classes:
        comments, group = field_comments(cls), parser.add_argument_group(f"{cls.__name__} fields")
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if f.name not in comments:
                raise ValueError(f"{cls.__name__}.{f.name} has no comment: it is the flag's --help")
            help = f"{comments[f.name]} (default: {f.default})".replace("%", "%%")
            if f.type is bool or f.type == "bool":
                group.add_argument(flag, nargs="?", const=True, type=truth, default=None, metavar="true|false",
                                   help=help)
                group.add_argument("--no-" + flag[2:], dest=f.name, action="store_false", default=None,
                                   help=argparse.SUPPRESS)
            else:
                group.add_argument(flag, type=type(f.default), default=None, help=help)


def build_configs(values, *classes):
    """{name: value} -> one instance per class, each taking the fields it has."""
    return [cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values}) for cls in classes]


def start_run(cfg, *configs):
    """Seeds, device (joining torchrun's process group if there is one), precision and
    <cfg.out>/metrics.jsonl for a training run -> (device, log): log(row) appends one JSON object
    a line, flushed, so a killed run keeps every row it logged (rank 0's rows under torchrun)."""
    torch.manual_seed(cfg.seed)  # the same on every rank: the same initial weights
    random.seed(cfg.seed)
    device = distributed.setup(devices.pick_device(cfg.device))
    devices.BF16 = cfg.bf16
    os.makedirs(cfg.out, exist_ok=True)
    metrics = open(os.path.join(cfg.out, "metrics.jsonl"), "a") if distributed.is_main() else None

    def log(row):
        if metrics:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()

    log({"stage": "run", "command": " ".join(sys.argv), "started": time.time()})  # for the report card
    precision = "bf16 autocast" if devices.uses_bf16(device) else "fp32"
    if distributed.world_size() > 1:
        print(f"rank {distributed.rank()} of {distributed.world_size()} (torchrun)")
    print(f"device {device} ({precision}), " + ", ".join(f"{type(c).__name__} {json.dumps(asdict(c))}"
                                                         for c in (cfg, *configs)))
    return device, log
