"""End to end, stage 2 (GRPO) and stage 1b of train_asr.py: start-up checks, resume, options,
the equal-time SFT control, and a non-finite loss. Tiny runs on a synthesised manifest; the runs
that need to reach inside (a patched loss or reward) call train_asr.main in-process."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from asr_helpers import TINY, load_train_asr, make_corpus, read_metrics, train_asr
from nanospeechrl import grpo, rewards

PHASES = ("encode", "rollout", "reward")  # every step; reference and update only when some group has a signal








def rl_rows(rows):
    return [r for r in rows if r.get("stage") == "stage2"]


def state(out, stage):
    return json.loads((out / stage / "state.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """8 synthesised utterances: train.jsonl (6) and dev.jsonl (2), audio paths relative to the manifests."""
    return make_corpus(tmp_path_factory.mktemp("asr_rl"))


def data_args(corpus):
    return ["--data", corpus / "train.jsonl", "--eval", f"dev={corpus / 'dev.jsonl'}", *TINY]


@pytest.fixture(scope="module")
def finished(corpus):
    """A finished run of stages 0, 1 and 2 (2 GRPO steps) in <corpus>/base. Tests work on copies of it."""
    out = corpus / "base"
    r = train_asr(*data_args(corpus), "--out", out, cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert state(out, "stage2")["done"] is True
    return out


@pytest.fixture
def run_copy(corpus, finished, request):
    """A private copy of the finished run, beside it so the feature cache is shared."""
    out = corpus / request.node.name.replace("[", "_").replace("]", "")
    shutil.copytree(finished, out)
    return out


# ----------------------------------------------------------------------------- start-up errors

def fake_finished(out, *stages):
    """A run directory whose stages look finished to the start-up checks (only state.json)."""
    for stage in stages:
        (out / stage).mkdir(parents=True)
        (out / stage / "state.json").write_text(json.dumps({"step": 4, "done": True}))


STARTUP_ERRORS = {
    # name: (made beforehand, extra arguments, what the message must say)
    "rl_batch": ((), ["--rl-batch", "6", "--num-generations", "4"],
                 ["--rl-batch 6", "--num-generations 4", "try --rl-batch 4"]),
    "reward": ((), ["--reward", "wer:1,fluency:2"],
               ["unknown reward 'fluency'", "wer, cer, hallucination, keyword, bleu"]),
    "no_stage1": ((), ["--stages", "2"], ["stage1", "missing or unfinished", "--stages 0,1,2"]),
    "no_stage1_for_1b": ((), ["--stages", "1b"], ["stage1", "missing or unfinished", "--stages"]),
    "unfinished_stage1": (("stage1_unfinished",), ["--stages", "2"], ["stage1", "missing or unfinished"]),
    "no_stage2_for_1b": (("stage0", "stage1"), ["--stages", "1b"], ["stage 1b", "finished stage 2", "--stages 2,1b"]),
}


@pytest.mark.parametrize("case", STARTUP_ERRORS)
def test_startup_error(corpus, tmp_path, monkeypatch, capsys, case):
    """Caught by the argument checks: exit code 2, a message naming the fix, nothing loaded or trained."""
    made, extra, expected = STARTUP_ERRORS[case]
    out = tmp_path / "out"
    if made == ("stage1_unfinished",):
        (out / "stage1").mkdir(parents=True)
        (out / "stage1" / "state.json").write_text(json.dumps({"step": 2, "done": False}))
    else:
        fake_finished(out, *made)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        load_train_asr().main([*map(str, data_args(corpus)), "--out", str(out), *extra])
    assert e.value.code == 2  # argparse's usage error
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, (text, err)
    # nothing written: no stage directory, no metrics, no tokenizer, no feature cache
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_startup_error_from_the_command_line(corpus, tmp_path):
    """The same check through the script itself: return code 2, the message, no traceback."""
    r = train_asr(*data_args(corpus), "--out", tmp_path / "out", "--rl-batch", "10", cwd=tmp_path)
    assert r.returncode == 2
    assert "--rl-batch 10 is not a multiple of --num-generations 4" in r.stderr and "try --rl-batch 8" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- resume, options, stage 1b

def test_stage2_resumes_and_extends(corpus, run_copy, monkeypatch):
    out = run_copy
    assert [r["step"] for r in rl_rows(read_metrics(out))] == [0, 1]
    r = train_asr(*data_args(corpus), "--out", out, "--resume", "--rl-steps", "4", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage1: already done (4 steps)" in r.stdout and "stage2: resuming at step 2" in r.stdout
    rows = read_metrics(out)
    assert [x["step"] for x in rl_rows(rows)] == [0, 1, 2, 3]  # each step exactly once
    for x in rl_rows(rows):
        assert all(f"time/{p}" in x and f"resident_mb/{p}" in x for p in PHASES)
    s = state(out, "stage2")
    assert s["step"] == 4 and s["done"] is True
    assert [x["model"] for x in rows if x.get("stage") == "eval"] == ["sft", "grpo"] * 2
    # and it continued exactly: the same batches and rollout samples as 4 steps never stopped (in-process)
    whole = out.parent / (out.name + "_whole")
    shutil.copytree(out.parent / "base", whole)
    monkeypatch.chdir(corpus)
    load_train_asr().main([*map(str, data_args(corpus)), "--out", str(whole), "--stages", "2", "--rl-steps", "4"])
    keys = ("reward", "entropy", "completions/mean_length", "rewards/wer")
    assert [[x[k] for k in keys] for x in rl_rows(read_metrics(whole))[2:]] == \
        [[x[k] for k in keys] for x in rl_rows(rows)]


def test_stage2_mixed_policy_and_options(corpus, run_copy):
    """--stages 2 again on a finished run: the ground truth as an off-policy group member, two updates
    per batch of rollouts (the ratio moves off 1), every group kept."""
    out = run_copy
    n = len(read_metrics(out))
    r = train_asr(*data_args(corpus), "--out", out, "--stages", "2", "--off-policy", "reference",
                  "--num-iterations", "2", "--no-filter-zero-std", "--loss-type", "dapo", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage2-mixed: 6 RL utterances (--rl-data hard)" in r.stdout  # beside stage2, not over it
    rows = [x for x in read_metrics(out)[n:] if x.get("stage") == "stage2-mixed"]
    assert [x["step"] for x in rows] == [0, 1]  # without --resume stage 2 starts again from stage 1
    for x in rows:  # every group kept: every step updates
        for key in ("loss", "ratio", "kl", "grad_norm", "clip_ratio/low_mean", "clip_ratio/high_mean",
                    "clip_ratio/region_mean", "time/reference", "time/update", "resident_mb/update"):
            assert key in x and x[key] == x[key], key  # present and not NaN
        assert x["ratio"] > 0 and x["kl"] >= 0
    assert state(out, "stage2-mixed")["done"] is True
    config = json.loads((out / "stage2-mixed" / "config.json").read_text())
    assert config["grpo"]["off_policy"] == "reference" and config["grpo"]["num_iterations"] == 2
    assert [x["model"] for x in read_metrics(out)[n:] if x.get("stage") == "eval"] == ["sft", "grpo", "grpo-mixed"]


@pytest.mark.parametrize("rl_data", ["long", "all"])
def test_stage2_rl_data(corpus, run_copy, rl_data):
    out = run_copy
    n = len(read_metrics(out))
    r = train_asr(*data_args(corpus), "--out", out, "--stages", "2", "--rl-data", rl_data, "--rl-steps", "1",
                  cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("stage2: "))
    count = int(line.split()[1])
    assert line == f"stage2: {count} RL utterances (--rl-data {rl_data})"
    if rl_data == "long":  # 6 utterances, 3 joined back to back
        assert count == 2
    else:  # every training utterance
        assert count == 6
    assert [x["step"] for x in rl_rows(read_metrics(out)[n:])] == [0]
    assert state(out, "stage2")["done"] is True


def test_stage2_trains_on_the_hold_out(corpus, run_copy):
    r = train_asr(*data_args(corpus), "--out", run_copy, "--stages", "2,1b", "--rl-data", "all", "--rl-steps", "1",
                  "--rl-holdout", "2", "--no-evaluate", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train: 4 utterances" in r.stdout and "RL hold-out: 2;" in r.stdout
    assert "stage2: 2 RL utterances (--rl-data all)" in r.stdout
    assert "on 6 utterances (training set + RL hold-out)" in r.stdout  # the control saw what GRPO saw


def test_stage1b_equal_time_control(corpus, run_copy):
    out = run_copy
    n = len(read_metrics(out))
    r = train_asr(*data_args(corpus), "--out", out, "--stages", "1b", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage1b: SFT from stage1 for " in r.stdout and "s, the wall time stage2 took" in r.stdout
    s = state(out, "stage1b")
    assert s["done"] is True and s["step"] >= 1
    assert s["elapsed"] >= state(out, "stage2")["elapsed"]  # it ran (at least) as long as stage 2 did
    assert (out / "stage1b" / "model.safetensors").is_file()
    adam_steps = {stage: load_file(str(out / stage / "optimizer.safetensors"))["state.0.step"].item()
                  for stage in ("stage1", "stage1b")}
    assert adam_steps["stage1b"] == adam_steps["stage1"] + s["step"]  # stage 1's AdamW state went on
    rows = read_metrics(out)[n:]
    assert [x["step"] for x in rows if x.get("stage") == "stage1b"] == list(range(s["step"]))  # --log-every 1
    assert not rl_rows(rows) and not [x for x in rows if x.get("stage") == "stage1"]  # nothing else trained
    # the control is the baseline: evaluated first, and every other model compared against it
    assert [x["model"] for x in rows if x.get("stage") == "eval"] == ["sft+", "sft", "grpo"]
    compare = [x for x in rows if x.get("stage") == "compare"]
    assert [(x["model"], x["base"]) for x in compare] == [("sft", "sft+"), ("grpo", "sft+")]
    assert all(x["low"] <= x["wer_diff"] <= x["high"] for x in compare)
    assert r.stdout.index("== sft+ (") < r.stdout.index("== sft (") < r.stdout.index("== grpo (")
    assert "WER(grpo) - WER(sft+) =" in r.stdout


def test_rl_tag_runs_a_second_setting_beside_the_first(corpus, run_copy):
    """--rl-tag: stage 2 and its control into stage2-<tag> and stage1b-<tag> beside the untagged
    ones, all evaluated together, the first control the baseline."""
    out = run_copy
    n = len(read_metrics(out))
    r = train_asr(*data_args(corpus), "--out", out, "--stages", "2,1b", "--rl-tag", "lr3e-4", "--rl-lr", "3e-4",
                  cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert state(out, "stage2-lr3e-4")["done"] and state(out, "stage1b-lr3e-4")["done"]
    assert "the wall time stage2-lr3e-4 took" in r.stdout
    rows = read_metrics(out)[n:]
    assert [x["model"] for x in rows if x.get("stage") == "eval"] == ["sft+-lr3e-4", "sft", "grpo", "grpo-lr3e-4"]
    assert {x["base"] for x in rows if x.get("stage") == "compare"} == {"sft+-lr3e-4"}
    assert not (out / "stage1-best").exists()  # early stopping's scratch copy is gone once stage 1 is done


# ----------------------------------------------------------------------------- in-process: patched internals

def policy_weights(path):
    """The tensors GRPO trains: projector and LLM."""
    return {k: v for k, v in load_file(path / "model.safetensors").items() if not k.startswith("encoder.")}


def test_nonfinite_loss_stops_stage2_without_updating(corpus, run_copy, monkeypatch, capsys):
    out = run_copy
    train_asr_module = load_train_asr()
    monkeypatch.chdir(out.parent)
    argv = [*map(str, data_args(corpus)), "--out", str(out), "--stages", "2", "--no-filter-zero-std"]

    # Control: the same run with a finite loss (one with a gradient) does change the policy, so the
    # comparison below can fail. (--no-filter-zero-std: policy_loss runs even when all rewards tie.)
    def finite_loss(logp, old, ref, adv, mask, cfg, off=None):
        return -(logp * mask).sum() / mask.sum(), {}

    monkeypatch.setattr(grpo, "policy_loss", finite_loss)  # what grpo_update calls
    train_asr_module.main([*argv, "--rl-steps", "1"])
    sft = policy_weights(out / "stage1")
    updated = policy_weights(out / "stage2")
    assert any(not updated[k].equal(v) for k, v in sft.items())

    calls = []

    def nan_loss(*args, **kw):
        calls.append(1)
        return torch.tensor(float("nan"), requires_grad=True), {}

    monkeypatch.setattr(grpo, "policy_loss", nan_loss)
    n = len(read_metrics(out))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train_asr_module.main([*argv, "--rl-steps", "5"])
    message = str(e.value.code)
    assert "non-finite" in message and str(out / "stage2") in message, message
    assert len(calls) == 3  # one try per step, then it stopped
    rows = rl_rows(read_metrics(out)[n:])
    assert [x["step"] for x in rows] == [0, 1, 2]
    assert [x.get("nonfinite_loss") for x in rows] == [1, 2, 3]
    assert not any("loss" in x for x in rows)
    # the checkpoints written on the way (--rl-ckpt-every 1) hold the SFT policy untouched
    s = state(out, "stage2")
    assert s["step"] == 2 and s["done"] is False
    after = policy_weights(out / "stage2")
    assert after.keys() == sft.keys() and all(after[k].equal(v) for k, v in sft.items())
    assert "== grpo (" not in capsys.readouterr().out  # stopped before the evaluation


def test_stage2_rows_time_only_the_phases_that_ran(corpus, run_copy, monkeypatch):
    """Step 0's groups have a spread of rewards (reference and update run), step 1's all tie (they don't)."""
    out = run_copy
    train_asr_module = load_train_asr()
    monkeypatch.chdir(out.parent)
    score, calls = rewards.score, []

    def spread_then_tie(weights, hyps, refs, **fields):
        calls.append(1)
        total, parts = score(weights, hyps, refs, **fields)
        return ([float(i % 2) for i in range(len(total))] if len(calls) == 1 else [0.0] * len(total)), parts

    monkeypatch.setattr(rewards, "score", spread_then_tie)  # what score_tasks calls
    n = len(read_metrics(out))
    train_asr_module.main([*map(str, data_args(corpus)), "--out", str(out), "--stages", "2"])
    first, second = rl_rows(read_metrics(out)[n:])
    assert first["frac_reward_zero_std"] == 0 and "loss" in first and "time/update" in first
    assert second["frac_reward_zero_std"] == 1 and "loss" not in second
    assert "time/reference" not in second and "time/update" not in second
