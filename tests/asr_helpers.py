"""Shared by the train_asr.py end-to-end tests: a tiny synthesised corpus, tiny-model flags,
and ways to run the script (a subprocess, or main(argv) in-process)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from nanospeechrl import audio
from nanospeechrl.builtin.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["one two three", "four five six", "seven eight", "nine ten", "red green blue", "hello world",
         "good morning", "yes or no"]
TINY = ["--d-model", "32", "--enc-layers", "1", "--n-embd", "32", "--llm-layers", "1", "--vocab-size", "300",
        "--ctc-steps", "4", "--sft-steps", "4", "--batch-frames", "4000", "--ckpt-every", "2", "--log-every", "1",
        "--eval-batch", "4", "--eval-max-tokens", "8",
        # stage 2 (in the default --stages 0,1,2): 2 steps of 2 utterances x 4 completions of <= 8 tokens
        "--rl-steps", "2", "--rl-batch", "8", "--num-generations", "4", "--max-new-tokens", "8",
        "--rl-ckpt-every", "1"]


def make_corpus(root):
    """8 synthesised utterances: train.jsonl (6) and dev.jsonl (2), audio paths relative to the manifests."""
    rows = []
    for i, text in enumerate(TEXTS):
        audio.save(root / f"u{i}.wav", synthesize(text, rate=220))
        rows.append(json.dumps({"audio": f"u{i}.wav", "text": text}))
    (root / "train.jsonl").write_text("\n".join(rows[:6]) + "\n")
    (root / "dev.jsonl").write_text("\n".join(rows[6:]) + "\n")
    return root


def train_asr(*args, cwd):
    """train_asr.py as a subprocess; one intra-op thread (tiny models: extra threads only contend)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train_asr.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def load_train_asr():
    """train_asr.py imported as a module, for in-process runs of main(argv) (threads: conftest sets 1)."""
    spec = importlib.util.spec_from_file_location("train_asr", ROOT / "train_asr.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_asr"] = module  # as `import train_asr` would: inspect finds its source (cli.py)
    spec.loader.exec_module(module)
    return module


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
