"""End to end: train_asr.py as a subprocess on a tiny synthesised manifest (a few seconds a run).
Stage-2 (GRPO) and stage-1b specifics are in test_train_asr_rl.py."""
import json
import os
import shutil
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file

import nanospeechrl.asr.speechlm
import nanospeechrl.devices
import nanospeechrl.trainer
from asr_helpers import TINY, load_train_asr, make_corpus, read_metrics, train_asr
from nanospeechrl.rewards import normalize

CKPT_FILES = ("model.safetensors", "config.json", "tokenizer.json", "state.json", "optimizer.safetensors")


def step_rows(rows, stage):
    return [r["step"] for r in rows if r.get("stage") == stage and "loss" in r]


def stage_rows(rows, stage):
    """Every row a training stage logged (a stage-2 row has a "loss" only when it updated)."""
    return [r for r in rows if r.get("stage") == stage]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """8 synthesised utterances: train.jsonl (6) and dev.jsonl (2), audio paths relative to the manifests."""
    return make_corpus(tmp_path_factory.mktemp("asr"))


@pytest.fixture(scope="module")
def full_run(corpus):
    """Stages 0, 1 and 2 (the default) into <corpus>/out; the result and the metrics as they were right after it."""
    out = corpus / "out"
    r = train_asr("--data", corpus / "train.jsonl", "--eval", f"dev={corpus / 'dev.jsonl'}", "--out", out, *TINY,
                  cwd=corpus)
    return out, r, read_metrics(out) if (out / "metrics.jsonl").exists() else []


def test_train_both_stages(full_run):
    out, r, rows = full_run
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("stage0", "stage1", "stage2"):
        for name in CKPT_FILES:
            assert (out / stage / name).is_file(), f"{stage}/{name}"
    for stage, steps in (("stage0", 4), ("stage1", 4), ("stage2", 2)):
        state = json.loads((out / stage / "state.json").read_text())
        assert state["step"] == steps and state["done"] is True, stage
    assert "llm" in json.loads((out / "stage1" / "config.json").read_text())
    assert "llm" in json.loads((out / "stage2" / "config.json").read_text())
    assert "llm" not in json.loads((out / "stage0" / "config.json").read_text())
    assert not (out / "stage1b").exists()  # the equal-time control runs only when asked for
    assert step_rows(rows, "stage0") == [0, 1, 2, 3]  # --log-every 1
    assert step_rows(rows, "stage1") == [0, 1, 2, 3]
    assert all(r["loss"] > 0 for r in rows if "loss" in r and r["stage"] in ("stage0", "stage1"))  # cross-entropies
    # stage 2: one row per step, whether or not it updated (a GRPO loss may be negative)
    rl = stage_rows(rows, "stage2")
    assert [x["step"] for x in rl] == [0, 1]
    for x in rl:
        for key in ("reward", "reward_std", "frac_reward_zero_std", "rewards/wer", "rewards/hallucination",
                    "entropy", "completions/mean_length", "completions/clipped_ratio", "time"):
            assert key in x, key
        for phase in ("encode", "rollout", "reward"):
            assert x[f"time/{phase}"] >= 0 and x[f"resident_mb/{phase}"] >= 0, phase
        assert x["resident_mb/encode"] > 0 and x["resident_mb/reward"] == 0  # the reward phase holds no model
        assert 0 <= x["frac_reward_zero_std"] <= 1 and 0 <= x["completions/clipped_ratio"] <= 1
        assert 0 < x["completions/mean_length"] <= 8  # --max-new-tokens 8
        if x["frac_reward_zero_std"] < 1:  # some group had a learning signal: reference and update ran
            assert "loss" in x and "time/update" in x and "time/reference" in x
    # the evaluation: every finished model on every split, then each model against the first
    evals = [r for r in rows if r.get("stage") == "eval"]
    assert [(e["model"], e["split"]) for e in evals] == [("sft", "dev"), ("grpo", "dev")]
    for e in evals:
        assert e["n"] == 2 and 0.0 <= e["wer"] and e["ref_words"] == 5  # "good morning", "yes or no"
    compare = [r for r in rows if r.get("stage") == "compare"]
    assert [(c["model"], c["base"], c["split"]) for c in compare] == [("grpo", "sft", "dev")]
    assert compare[0]["low"] <= compare[0]["wer_diff"] <= compare[0]["high"]
    assert "dev" in r.stdout and "WER" in r.stdout
    assert "== sft (" in r.stdout and "== grpo (" in r.stdout and "WER(grpo) - WER(sft) =" in r.stdout
    assert "stage2: 6 RL utterances (--rl-data hard)" in r.stdout
    # early stopping watched stage 1's dev loss (at its last step here) and said why it stopped
    stop = [x for x in rows if x["stage"] == "stage1" and "stopped" in x]
    assert len(stop) == 1 and stop[0]["best_step"] == 4 and "the last step" in stop[0]["stopped"]
    assert [x["step"] for x in rows if x["stage"] == "stage1" and "dev_loss" in x] == [3]
    report = (out / "report.md").read_text()  # the report card: machine, commit, stage times, results
    for text in ("# train_asr.py report card", "- machine: CPU", "commit ", "| stage0 |", "| stage2 |", "### dev",
                 "| grpo | WER ", " vs sft |", "- stage1: the last step"):
        assert text in report, text


def test_resume_when_done_does_not_retrain(corpus, full_run):
    out, first, rows = full_run
    assert first.returncode == 0
    weights = {stage: (out / stage / "model.safetensors").read_bytes() for stage in ("stage1", "stage2")}
    r = train_asr("--data", corpus / "train.jsonl", "--eval", f"dev={corpus / 'dev.jsonl'}", "--out", out, *TINY,
                  "--resume", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage0: already done (4 steps)" in r.stdout and "stage1: already done (4 steps)" in r.stdout
    assert "stage2: already done, skipping" in r.stdout
    after = read_metrics(out)
    assert [x for x in after if "loss" in x] == [x for x in rows if "loss" in x]  # no new training steps
    for stage in ("stage0", "stage1", "stage2"):  # nor any other training row (stage 2 logs steps without a loss)
        assert stage_rows(after, stage) == stage_rows(rows, stage), stage
    evals = [x for x in after if x.get("stage") == "eval"]
    assert [x["model"] for x in evals] == ["sft", "grpo"] * 2  # the evaluation ran again, both models
    assert len([x for x in after if x.get("stage") == "compare"]) == 2
    for stage, before in weights.items():
        assert (out / stage / "model.safetensors").read_bytes() == before, stage


def test_stage1_resumes_from_a_stage0_only_run(corpus, monkeypatch):
    out = corpus / "staged"
    data_args = ["--data", corpus / "train.jsonl", "--eval", f"dev={corpus / 'dev.jsonl'}", *TINY]
    common = [*data_args, "--out", out]
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
    # stage 1 started from stage 0's encoder and, frozen by default, left it exactly as it was
    enc0 = {k: v for k, v in load_file(out / "stage0" / "model.safetensors").items() if k.startswith("encoder.")}
    enc1 = load_file(out / "stage1" / "model.safetensors")
    assert enc0 and all(enc1[k].equal(v) for k, v in enc0.items())
    # --no-freeze-encoder: SFT trains the encoder too, from stage 0's: 4 AdamW steps at lr 2e-3 move a
    # weight by < ~0.01, while a fresh init differs by ~0.3 (conv weights are uniform in +-1/3).
    # In-process: a third run of the script would cost seconds of imports.
    unfrozen = corpus / "staged_unfrozen"
    shutil.copytree(out / "stage0", unfrozen / "stage0")
    monkeypatch.chdir(corpus)
    load_train_asr().main([*map(str, data_args), "--out", str(unfrozen), "--stages", "1", "--no-freeze-encoder"])
    enc1 = load_file(unfrozen / "stage1" / "model.safetensors")
    assert max((enc1[k] - v).abs().max().item() for k, v in enc0.items()) < 0.05
    assert any(not enc1[k].equal(v) for k, v in enc0.items())  # and SFT did train it


class _Killed(Exception):
    """Stands in for a kill right after a checkpoint was written."""


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen_encoder", "no_freeze_encoder"])
def test_stage1_resumed_mid_stage_matches_an_uninterrupted_run(corpus, tmp_path, monkeypatch, capsys, freeze):
    """Killed right after the step-2 checkpoint, then --resume: the same weights, bit for bit, as a run
    that was never stopped (in-process, so the kill can be placed exactly)."""
    train_asr_module = load_train_asr()
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(corpus / "train.jsonl"), "--eval", f"dev={corpus / 'dev.jsonl'}", *TINY,
            "--stages", "0,1", "--freeze-encoder" if freeze else "--no-freeze-encoder"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    train_asr_module.main([*args, "--out", str(whole)])

    save, armed = nanospeechrl.trainer.save_checkpoint, [True]

    def save_then_die(path, *a, **kw):
        saved = save(path, *a, **kw)
        if armed[0] and os.path.basename(path) == "stage1" and a[-1]["step"] == 2:
            raise _Killed
        return saved

    monkeypatch.setattr(nanospeechrl.trainer, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        train_asr_module.main([*args, "--out", str(split)])
    assert json.loads((split / "stage1" / "state.json").read_text())["step"] == 2
    armed[0] = False
    train_asr_module.main([*args, "--out", str(split), "--resume"])
    assert "stage1: resuming at step 2" in capsys.readouterr().out
    assert step_rows(read_metrics(split), "stage1") == [0, 1, 2, 3]
    a, b = load_file(whole / "stage1" / "model.safetensors"), load_file(split / "stage1" / "model.safetensors")
    assert a.keys() == b.keys()
    assert [k for k in a if not a[k].equal(b[k])] == []


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


def test_bf16_autocast_where_it_is_fast(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    devices = nanospeechrl.devices
    monkeypatch.setattr(devices, "BF16", True)
    monkeypatch.setattr(devices, "CPU_BF16", True)
    assert devices.uses_bf16(cpu) and not devices.uses_bf16(torch.device("mps"))
    assert not devices.uses_bf16(cuda)  # no faster than fp32 on an H100 (docs/RESULTS.md)
    monkeypatch.setattr(devices, "CPU_BF16", False)  # CPU bf16 without bf16 units is emulated: slower
    assert not devices.uses_bf16(cpu)
    parse = load_train_asr().parse_args
    assert parse(["--no-bf16"])[0].bf16 is False and parse(["--bf16", "false"])[0].bf16 is False
    assert parse(["--bf16"])[0].bf16 is True and parse(["--bf16", "True"])[0].bf16 is True
    assert parse([])[0].bf16 is True and parse(["--bf16", "0", "--no-resume"])[0].resume is False
    with pytest.raises(SystemExit):
        parse(["--bf16", "maybe"])
    monkeypatch.setattr(devices, "CPU_BF16", True)
    monkeypatch.setattr(devices, "BF16", False)  # what main does with --no-bf16
    assert not devices.uses_bf16(cpu)
    with devices.autocast(cpu):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("augment", [True, False], ids=["sft_augment", "no_sft_augment"])
def test_sft_augment_masks_the_cached_encoder_outputs(corpus, full_run, tmp_path, monkeypatch, augment):
    """SFT on a frozen encoder: with --sft-augment (the default) the projector sees the cached encoder
    outputs with whole frames and whole channels zeroed; without, it sees them untouched."""
    shutil.copytree(full_run[0] / "stage0", tmp_path / "out" / "stage0")
    seen, forward = [], nanospeechrl.asr.speechlm.Projector.forward

    def record(self, x, lengths):
        seen.append((x.detach().clone(), lengths.clone()))
        return forward(self, x, lengths)

    monkeypatch.setattr(nanospeechrl.asr.speechlm.Projector, "forward", record)
    monkeypatch.chdir(tmp_path)
    load_train_asr().main(["--data", str(corpus / "train.jsonl"), "--eval", f"dev={corpus / 'dev.jsonl'}", *TINY,
                           "--out", str(tmp_path / "out"), "--stages", "1", "--no-evaluate",
                           "--sft-augment" if augment else "--no-sft-augment"])
    train = seen[:4]  # the 4 SFT steps (evaluation would come after)
    zero_frames = sum(int((x[b, :n] == 0).all(-1).sum()) for x, lens in train for b, n in enumerate(lens))
    zero_channels = sum(int((x[b, :n] == 0).all(0).sum()) for x, lens in train for b, n in enumerate(lens))
    if augment:
        assert zero_frames > 0 and zero_channels > 0
    else:
        assert zero_frames == 0 and zero_channels == 0


def test_plot_draws_the_run(full_run, tmp_path, capsys):
    """python -m nanospeechrl.plot on a tiny run's metrics writes a real PNG; a half-written line is
    skipped with its file:line named; a missing or empty metrics file is a clear error."""
    import matplotlib.image

    from nanospeechrl import plot
    out, r, _ = full_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text((out / "metrics.jsonl").read_text() + '{"stage": "stage2", "st\n')
    plot.main([str(run)])
    assert f"{run / 'metrics.jsonl'}:" in capsys.readouterr().err
    image = matplotlib.image.imread(run / "training.png")  # (H, W, 4)
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert len(torch.from_numpy(image).flatten(0, 1).unique(dim=0)) > 20  # curves, not a blank canvas
    plot.main([str(run), "--only", "reward", "-o", str(tmp_path / "kl.png")])  # one panel, not six
    kl = matplotlib.image.imread(tmp_path / "kl.png")
    assert kl.shape[1] < image.shape[1] / 2 and kl.shape[0] <= image.shape[0] / 2
    with pytest.raises(SystemExit):
        plot.main([str(run), "--only", "kl,nonsense"])
    assert "unknown panels ['nonsense']" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such file"):
        plot.main([str(tmp_path / "nowhere")])
    (run / "metrics.jsonl").write_text("not json\n[1, 2]\n")
    with pytest.raises(SystemExit, match="no metrics rows"):
        plot.main([str(run)])


def test_every_flag_explains_itself(capsys, monkeypatch):
    """--help gives every TrainConfig and GRPOConfig field a line of its own from its comment."""
    from dataclasses import fields

    from nanospeechrl.cli import add_config_flags, field_comments
    monkeypatch.setenv("COLUMNS", "2000")  # one line per flag: argparse would wrap at hyphens
    module = load_train_asr()
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    text = capsys.readouterr().out
    for cls in (module.TrainConfig, module.GRPOConfig):
        comments = field_comments(cls)
        for f in fields(cls):
            assert comments.get(f.name), f.name
            assert f"--{f.name.replace('_', '-')}" in text and comments[f.name] in text, f.name

    @dataclass
    class Undocumented:
        steps: int = 3

    with pytest.raises(ValueError, match="Undocumented.steps has no comment"):
        add_config_flags(__import__("argparse").ArgumentParser(), Undocumented)


def test_no_speech_rows_train_and_long_audio_is_scored_in_windows(corpus, tmp_path):
    """A training manifest with no_speech rows (stage 0 learns them as empty labels, stage 1 as EOS
    alone); an eval set of ~4 s recordings scored whole and in 1.5 s windows; one of silence and noise."""
    import numpy as np
    from nanospeechrl import audio
    from nanospeechrl.augment import colored_noise
    rows = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    for i, level in enumerate((1e-4, 0.3)):  # near silence, loud noise
        audio.save(tmp_path / f"quiet{i}.wav", torch.tensor(level * colored_noise(16000, "pink",
                                                                                  np.random.default_rng(i))))
    quiet = [{"audio": str(tmp_path / f"quiet{i}.wav"), "text": "", "no_speech": True} for i in range(2)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({**r, "audio": str(corpus / r["audio"])}) + "\n"
                                                  for r in rows + quiet))
    (tmp_path / "quiet.jsonl").write_text("".join(json.dumps(r) + "\n" for r in quiet))
    clips = [audio.load(corpus / r["audio"]) for r in rows[:3]]
    audio.save(tmp_path / "long.wav", torch.cat(clips))
    (tmp_path / "long.jsonl").write_text(json.dumps({"audio": "long.wav", "text": " ".join(r["text"] for r in rows[:3])})
                                         + "\n")
    out = tmp_path / "out"
    r = train_asr("--data", tmp_path / "train.jsonl", "--eval", f"long={tmp_path / 'long.jsonl'},quiet="
                  f"{tmp_path / 'quiet.jsonl'}", "--out", out, *TINY, "--stages", "0,1", "--window", "1.5",
                  "--nbest", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train: 8 utterances" in r.stdout  # the no_speech rows are training rows, not skipped
    evals = {e["split"]: e for e in read_metrics(out) if e.get("stage") == "eval"}
    assert set(evals) == {"long", "long (windows)", "quiet"}
    words = len(normalize(" ".join(r["text"] for r in rows[:3])).split())
    assert evals["long"]["ref_words"] == evals["long (windows)"]["ref_words"] == words
    assert evals["quiet"]["ref_words"] == 0 and 0 <= evals["quiet"]["nonempty"] <= 2
    assert f"{evals['quiet']['nonempty']} of 2 transcripts not empty" in r.stdout
