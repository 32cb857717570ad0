"""End to end: train_asr.py as a subprocess on a tiny synthesised manifest (a few seconds a run)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from nanospeechrl import audio
from nanospeechrl.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["one two three", "four five six", "seven eight", "nine ten", "red green blue", "hello world",
         "good morning", "yes or no"]
TINY = ["--d-model", "32", "--enc-layers", "1", "--n-embd", "32", "--llm-layers", "1", "--vocab-size", "300",
        "--ctc-steps", "4", "--sft-steps", "4", "--batch-frames", "4000", "--ckpt-every", "2", "--log-every", "1",
        "--eval-batch", "4", "--max-new-tokens", "8"]


def train_asr(*args, cwd):
    # one intra-op thread: these models are tiny, and extra threads only contend on a busy machine
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train_asr.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def step_rows(rows, stage):
    return [r["step"] for r in rows if r.get("stage") == stage and "loss" in r]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """8 synthesised utterances: train.jsonl (6) and dev.jsonl (2), audio paths relative to the manifests."""
    root = tmp_path_factory.mktemp("asr")
    rows = []
    for i, text in enumerate(TEXTS):
        audio.save(root / f"u{i}.wav", synthesize(text, rate=220))
        rows.append(json.dumps({"audio": f"u{i}.wav", "text": text}))
    (root / "train.jsonl").write_text("\n".join(rows[:6]) + "\n")
    (root / "dev.jsonl").write_text("\n".join(rows[6:]) + "\n")
    return root


@pytest.fixture(scope="module")
def full_run(corpus):
    """Stages 0 and 1 into <corpus>/out; the result and the metrics as they were right after it."""
    out = corpus / "out"
    r = train_asr("--data", corpus / "train.jsonl", "--eval", f"dev={corpus / 'dev.jsonl'}", "--out", out, *TINY,
                  cwd=corpus)
    return out, r, read_metrics(out) if (out / "metrics.jsonl").exists() else []


def test_train_both_stages(full_run):
    out, r, rows = full_run
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("stage0", "stage1"):
        for name in ("model.safetensors", "config.json", "tokenizer.json", "state.json", "optimizer.safetensors"):
            assert (out / stage / name).is_file(), f"{stage}/{name}"
        state = json.loads((out / stage / "state.json").read_text())
        assert state["step"] == 4 and state["done"] is True
    assert "llm" in json.loads((out / "stage1" / "config.json").read_text())
    assert "llm" not in json.loads((out / "stage0" / "config.json").read_text())
    assert step_rows(rows, "stage0") == [0, 1, 2, 3]  # --log-every 1
    assert step_rows(rows, "stage1") == [0, 1, 2, 3]
    assert all(r["loss"] > 0 for r in rows if "loss" in r)
    evals = [r for r in rows if r.get("stage") == "eval"]
    assert len(evals) == 1 and evals[0]["split"] == "dev" and evals[0]["n"] == 2
    assert 0.0 <= evals[0]["wer"] and evals[0]["ref_words"] == 5  # "good morning", "yes or no"
    assert "dev" in r.stdout and "WER" in r.stdout


def test_resume_when_done_does_not_retrain(corpus, full_run):
    out, first, rows = full_run
    assert first.returncode == 0
    weights = (out / "stage1" / "model.safetensors").read_bytes()
    r = train_asr("--data", corpus / "train.jsonl", "--eval", f"dev={corpus / 'dev.jsonl'}", "--out", out, *TINY,
                  "--resume", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage0: already done (4 steps)" in r.stdout and "stage1: already done (4 steps)" in r.stdout
    after = read_metrics(out)
    assert [x for x in after if "loss" in x] == [x for x in rows if "loss" in x]  # no new training steps
    assert len([x for x in after if x.get("stage") == "eval"]) == 2  # the evaluation ran again
    assert (out / "stage1" / "model.safetensors").read_bytes() == weights


def test_stage1_resumes_from_a_stage0_only_run(corpus):
    out = corpus / "staged"
    common = ["--data", corpus / "train.jsonl", "--eval", f"dev={corpus / 'dev.jsonl'}", "--out", out, *TINY]
    r = train_asr(*common, "--stages", "0", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (out / "stage1").exists()
    assert "stage0 CTC greedy" in r.stdout
    r = train_asr(*common, "--stages", "0,1", "--resume", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage0: already done (4 steps)" in r.stdout
    rows = read_metrics(out)
    assert step_rows(rows, "stage0") == [0, 1, 2, 3]  # stage 0 trained once
    assert step_rows(rows, "stage1") == [0, 1, 2, 3]
    assert json.loads((out / "stage1" / "state.json").read_text())["step"] == 4
    # stage 1 started from stage 0's encoder: 4 AdamW steps at lr 2e-3 move a weight by < ~0.01,
    # while a fresh init differs by ~0.3 (conv weights are uniform in +-1/3)
    enc0 = {k: v for k, v in load_file(out / "stage0" / "model.safetensors").items() if k.startswith("encoder.")}
    enc1 = load_file(out / "stage1" / "model.safetensors")
    assert max((enc1[k] - v).abs().max().item() for k, v in enc0.items()) < 0.05
    assert any(not enc1[k].equal(v) for k, v in enc0.items())  # and SFT did train it


def test_bad_manifest_line(corpus):
    lines = (corpus / "train.jsonl").read_text().splitlines()
    lines.insert(2, json.dumps({"audio": "u0.wav", "text": "  "}))  # line 3: blank transcript
    lines.insert(4, json.dumps({"audio": "nowhere.wav", "text": "hello"}))  # line 5: missing audio
    bad = corpus / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    common = ["--data", bad, "--eval", f"dev={corpus / 'dev.jsonl'}", *TINY]
    r = train_asr(*common, "--out", corpus / "bad_out", cwd=corpus)
    assert r.returncode != 0  # the blank transcript is skipped, the missing file is an error
    assert f"{bad}:5" in r.stderr and "nowhere.wav" in r.stderr and "Traceback" not in r.stderr
    r = train_asr(*common, "--out", corpus / "skip_out", "--skip-bad", "--ctc-steps", "1", "--sft-steps", "1",
                  cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipped training examples: {'empty_text': 1, 'missing_audio': 1}" in r.stdout
    assert "train: 6 utterances" in r.stdout


def test_unknown_preset(tmp_path):
    r = train_asr("--preset", "huge", "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 2  # argparse's usage error
    assert "unknown preset 'huge'" in r.stderr and "tiny, small" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing is written before the arguments are checked
