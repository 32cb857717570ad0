"""End to end: train_tts.py on a tiny synthesised corpus (3 training voices, 1 held-out voice), resume
after a kill, and sample.py synthesize with its bad inputs."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

import nanospeechrl.trainer
from asr_helpers import ROOT, read_metrics
from nanospeechrl import audio
from nanospeechrl.builtin.synth import synthesize
from nanospeechrl.tts.samples_page import missing_files

TEXTS = ["one two three", "four five six", "seven eight", "nine ten", "red green blue", "hello world",
         "good morning", "yes or no", "the cat sat", "a big dog"]
VOICES = ["en-us+f3", "en+m3", "en-us+m1"]
TINY = ["--d-model", "32", "--tok-layers", "1", "--tok-upper", "1", "--tok-steps", "4", "--spk-steps", "4",
        "--flow-d", "32", "--flow-layers", "1", "--flow-steps", "4", "--n-embd", "32", "--lm-layers", "1",
        "--lm-steps", "4", "--judge-steps", "4", "--reward-steps", "4", "--t2t-steps", "4", "--vocab-size", "300",
        "--log-every", "1", "--ckpt-every", "2", "--eval-batch", "4", "--euler-steps", "2",
        # RL: 3 steps of 2 texts x 4 samples, 2 Euler steps in the reward phase
        "--rl-steps", "3", "--rl-batch", "8", "--num-generations", "4", "--rl-texts", "8", "--rl-euler", "2",
        "--rl-ckpt-every", "1"]
STAGES = ("tokenizer", "speaker", "flow", "lm", "judge", "speaker_eval", "reward_asr", "token2text")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """train.jsonl: 6 texts x 3 voices; test.jsonl: 4 new texts by 2 of them and by a held-out voice."""
    root = tmp_path_factory.mktemp("tts")
    rows = {"train": [], "test": []}
    for split, voices, texts in (("train", VOICES, TEXTS[:6]), ("test", VOICES[:2] + ["en-gb-scotland+f2"], TEXTS[6:])):
        for v in voices:
            for i, text in enumerate(texts if v != "en-gb-scotland+f2" else TEXTS[:2] + texts):
                name = f"{split}-{v}-{i}.wav"
                audio.save(root / name, synthesize(text, v, rate=200))
                rows[split].append({"audio": name, "text": text, "speaker": v})
    for split, r in rows.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in r))
    return root


def train_tts(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train_tts.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def data_args(corpus):
    return ["--data", corpus / "train.jsonl", "--eval", f"test={corpus / 'test.jsonl'}"]


@pytest.fixture(scope="module")
def full_run(corpus):
    out = corpus / "out"
    r = train_tts(*data_args(corpus), "--out", out, *TINY, cwd=corpus)
    return out, r


def test_every_stage_checkpoints_and_the_evaluation_reports(full_run):
    out, r = full_run
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in STAGES:
        state = json.loads((out / stage / "state.json").read_text())
        assert state["done"] is True and state["step"] == 4, stage
    rows = read_metrics(out)
    for stage in STAGES:
        assert [x["step"] for x in rows if x["stage"] == stage and "loss" in x] == [0, 1, 2, 3], stage
    assert [x["step"] for x in rows if x["stage"] == "lm" and "dev_loss" in x] == [3]  # early stopping's check
    rl = [x for x in rows if x["stage"] == "rl-both"]
    assert [x["step"] for x in rl] == [0, 1, 2]
    for x in rl:  # TRL's names, the TTS rewards, the five phases
        for key in ("reward", "reward_std", "frac_reward_zero_std", "rewards/cer", "rewards/duration", "entropy",
                    "completions/mean_length", "completions/clipped_ratio"):
            assert key in x, key
        for phase in ("rollout", "token2mel", "reward"):
            assert x[f"time/{phase}"] >= 0 and f"resident_mb/{phase}" in x
        if "loss" in x:
            assert "time/reference" in x and "time/update" in x and "diffro/reward" in x and x["diffro/reward"] < 0
    assert json.loads((out / "rl-both" / "state.json").read_text())["done"] is True
    control = json.loads((out / "lm-control" / "state.json").read_text())
    assert control["done"] and control["elapsed"] >= json.loads((out / "rl-both" / "state.json").read_text())["elapsed"]
    assert {x["stage"] for x in rows} >= {"eval_reward_asr", "eval_token2text"}
    tok = next(x for x in rows if x["stage"] == "eval_tokenizer")
    assert 0 < tok["codes_used"] <= 1 and tok["perplexity"] >= 1 and tok["cer"] >= 0
    speaker = next(x for x in rows if x["stage"] == "eval_speaker")
    assert 0 <= speaker["voice_id_accuracy"] <= 1 and -1 <= speaker["cos_same/training voices"] <= 1
    evals = [x for x in rows if x["stage"] == "eval"]
    assert {x["split"] for x in evals} == {"training voices", "held-out voices"}
    assert len(evals) == 2 * (4 + 3)  # per voice set: a, b, c-mel, c-wav; d (wav) of SFT, control, rl
    for x in evals:
        # training voices: 4 test texts x 2 voices; held out: the voice's 6 clips, each with 5 others for cond and ref
        assert x["n"] == (8 if x["split"] == "training voices" else 6)
        assert 0 <= x["cer"] and -1 <= x["similarity"] <= 1 and x["duration_ratio"] > 0
        if x["model"].startswith("(d)"):
            assert 0 <= x["capped"] <= 1 and x["reward_asr_cer"] >= 0 and x["token2text_cer"] >= 0
        if not x["model"].startswith("(a)"):
            assert x["cer_diff/(a)/low"] <= x["cer_diff/(a)"] <= x["cer_diff/(a)/high"]
        if x["model"].startswith("(d) both"):  # RL against the equal-time control
            assert x["cer_diff/SFT continued/low"] <= x["cer_diff/SFT continued"] <= x["cer_diff/SFT continued/high"]
    real = [x for x in evals if x["model"].startswith("(a)")]
    assert all(x["duration_ratio"] == 1.0 for x in real)
    report = (out / "report.md").read_text()
    for text in ("# train_tts.py report card", "- machine: CPU", "| lm |", "| rl-both |", "### training voices",
                 "| (d) both, wav |", "- lm: the last step"):
        assert text in report, text
    page = out / "samples" / "index.html"  # the listening page: every file it points to is there
    assert missing_files(page) == [] and page.read_text().count("<audio") == 4 * 2 * (3 + 3)  # items x sets x rows
    assert len(audio.load(out / "samples" / "training-voices-0-both.wav")) > 0


class _Killed(Exception):
    pass


def load_train_tts():
    spec = importlib.util.spec_from_file_location("train_tts", ROOT / "train_tts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_tts"] = module
    spec.loader.exec_module(module)
    return module


def test_killed_mid_stage_resumes_to_the_same_weights(corpus, tmp_path, monkeypatch, capsys):
    """Killed right after the flow stage's step-2 checkpoint, resumed, killed again after RL's
    step-2 checkpoint, resumed: every stage's weights equal an uninterrupted run's, bit for bit."""
    module = load_train_tts()
    monkeypatch.chdir(tmp_path)
    args = [*map(str, data_args(corpus)), *TINY, "--stages", "tokenizer,speaker,flow,lm,reward,rl", "--no-evaluate"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    module.main([*args, "--out", str(whole)])
    save, kill_at = nanospeechrl.trainer.save_checkpoint, [("flow", 2), ("rl-both", 2)]

    def save_then_die(path, *a, **kw):
        saved = save(path, *a, **kw)
        state = a[4] if len(a) > 4 else {}  # (model, config, tokenizer, optimizer, state); a -best copy has none
        if kill_at and (os.path.basename(path), state.get("step")) == kill_at[0]:
            kill_at.pop(0)
            raise _Killed
        return saved

    monkeypatch.setattr(nanospeechrl.trainer, "save_checkpoint", save_then_die)  # the supervised stages
    monkeypatch.setattr(module, "save_checkpoint", save_then_die)  # RL
    with pytest.raises(_Killed):
        module.main([*args, "--out", str(split)])
    assert not (split / "lm").exists()
    with pytest.raises(_Killed):
        module.main([*args, "--out", str(split), "--resume"])
    assert "flow: resuming at step 2" in capsys.readouterr().out
    module.main([*args, "--out", str(split), "--resume"])
    out = capsys.readouterr().out
    assert "rl-both: resuming at step 2" in out and "lm: already done" in out
    for stage in ("tokenizer", "speaker", "flow", "lm", "reward_asr", "token2text", "rl-both"):
        a, b = load_file(whole / stage / "model.safetensors"), load_file(split / stage / "model.safetensors")
        assert a.keys() == b.keys() and [k for k in a if not a[k].equal(b[k])] == [], stage
    rl = lambda run: [{k: v for k, v in r.items() if not k.startswith(("time", "resident"))}  # noqa: E731
                      for r in read_metrics(run) if r["stage"] == "rl-both"]
    assert rl(whole) == rl(split)  # the same rewards, losses and KL, step for step
    sft, tuned = load_file(whole / "lm" / "model.safetensors"), load_file(whole / "rl-both" / "model.safetensors")
    assert any("loss" in r for r in rl(whole)) and any(not sft[k].equal(tuned[k]) for k in sft)  # RL did update


def test_rl_changes_the_lm_and_no_other_model(full_run, tmp_path, monkeypatch):
    """tts_rl's updates reach the LM only: the flow, the speaker encoder, the reward ASR and
    Token2Text stay bit-identical, and the reference is the SFT model throughout."""
    import shutil
    out = tmp_path / "out"
    shutil.copytree(full_run[0], out, ignore=shutil.ignore_patterns("rl-*", "lm-control", "samples"))
    module, seen = load_train_tts(), {}

    def snapshot(models):
        return {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in models.items()}

    def spy(name, items, tts, reward_asr, token2text, *args, **kwargs):
        models = {"lm": tts.lm, "flow": tts.flow, "speaker": tts.speaker, "reward_asr": reward_asr,
                  "token2text": token2text}
        seen["before"] = snapshot(models)
        real(name, items, tts, reward_asr, token2text, *args, **kwargs)
        seen["after"] = snapshot(models)

    real = module.tts_rl
    monkeypatch.setattr(module, "tts_rl", spy)
    monkeypatch.chdir(full_run[0].parent)
    module.main([*map(str, data_args(full_run[0].parent)), *TINY, "--out", str(out), "--stages", "rl",
                 "--rl-lr", "1e-3", "--no-evaluate"])
    before, after = seen["before"], seen["after"]
    for name in ("flow", "speaker", "reward_asr", "token2text"):
        assert [k for k in before[name] if not before[name][k].equal(after[name][k])] == [], name
    assert any(not before["lm"][k].equal(after["lm"][k]) for k in before["lm"])
    assert any("loss" in r for r in read_metrics(out) if r["stage"] == "rl-both")


@pytest.fixture(scope="module")
def asr_judge(corpus):
    """A tiny random train_asr.py speech LLM (the stronger judge's kind), trained on texts that are
    not the TTS test's; and one whose training manifest holds a TTS test text."""
    import torch
    from dataclasses import asdict
    from nanospeechrl.asr.speechlm import ProjectorConfig, SpeechLM
    from nanospeechrl.checkpoint import save_checkpoint
    from nanospeechrl.encoder import EncoderConfig
    from nanospeechrl.llm import LLM, LLMConfig
    from nanospeechrl.tokenizer import Tokenizer
    tok = Tokenizer.train(["alpha beta gamma", "delta"] * 4, vocab_size=300)
    enc = EncoderConfig(d_model=32, n_layer=1, n_head=2, conv_kernel=3, conv_channels=8, dropout=0.0)
    llm = LLMConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=32, max_seq_len=256)
    torch.manual_seed(0)
    model = SpeechLM(enc, LLM(llm), ProjectorConfig(stack=2))
    paths = {}
    for name, text in (("clean", "alpha beta gamma"), ("leaky", "the cat sat")):
        manifest = corpus / f"judge-{name}.jsonl"
        manifest.write_text(json.dumps({"audio": "train-en+m3-0.wav", "text": text}) + "\n")
        config = {"train": {"data": str(manifest)}, "encoder": asdict(enc), "llm": asdict(llm), "projector": {"stack": 2}}
        save_checkpoint(corpus / f"judge-{name}", model, config, tok)
        paths[name] = corpus / f"judge-{name}"
    return paths


def test_rl_watches_its_judge_cer_with_a_speech_llm_judge(full_run, asr_judge, tmp_path):
    """--rl-eval-every with --judge <speech LLM>: the curve is the speech LLM's CER, logged from
    step -1 (the SFT model) on; a judge that trained on a test text is refused at start-up."""
    import shutil
    out = tmp_path / "out"
    shutil.copytree(full_run[0], out, ignore=shutil.ignore_patterns("rl-*", "lm-control", "samples"))
    corpus = full_run[0].parent
    r = train_tts(*data_args(corpus), *TINY, "--out", out, "--stages", "rl", "--no-evaluate", "--judge",
                  asr_judge["clean"], "--rl-eval-every", "1", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    cers = [x["judge_cer"] for x in read_metrics(out) if x["stage"] == "rl-both" and "judge_cer" in x]
    assert len(cers) == 4 and all(c >= 0 for c in cers)  # steps -1, 0, 1, 2
    r = train_tts(*data_args(corpus), *TINY, "--out", tmp_path / "o2", "--stages", "tokenizer", "--judge",
                  asr_judge["leaky"], cwd=corpus)
    assert r.returncode != 0 and "holds 1 of the" in r.stderr and "'the cat sat'" in r.stderr
    assert not (tmp_path / "o2" / "tokenizer").exists()


def test_lm_stops_on_the_reward_asrs_cer_of_dev_syntheses(full_run, tmp_path):
    """--lm-stop cer: every evaluation logs the reward ASR's CER of dev syntheses (and the dev
    loss beside it), the best CER's weights are kept, the stop names the CER; without a finished
    reward ASR the stage is refused at start-up."""
    import shutil
    corpus, out = full_run[0].parent, tmp_path / "out"
    shutil.copytree(full_run[0], out, ignore=shutil.ignore_patterns("lm*", "rl-*", "samples", "metrics.jsonl"))
    r = train_tts(*data_args(corpus), *TINY, "--out", out, "--stages", "lm", "--lm-stop", "cer", "--lm-steps", "6",
                  "--dev-every", "2", "--patience", "2", "--no-evaluate", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [x for x in read_metrics(out) if x["stage"] == "lm"]
    evals = [x for x in rows if "dev_cer" in x]
    assert [x["step"] for x in evals][:2] == [1, 3] and all(0 <= x["dev_cer"] and x["dev_loss"] > 0 for x in evals)
    best = min(evals, key=lambda x: x["dev_cer"])
    stop = [x for x in rows if "stopped" in x]
    assert len(stop) == 1 and "dev cer" in stop[0]["stopped"] and stop[0]["best_step"] == best["step"] + 1
    shutil.rmtree(out / "reward_asr")
    r = train_tts(*data_args(corpus), *TINY, "--out", out, "--stages", "lm", "--lm-stop", "cer", cwd=corpus)
    assert r.returncode == 2 and "lm needs the finished reward_asr checkpoint" in r.stderr


def test_a_stage_without_its_inputs_is_a_start_up_error(corpus, tmp_path):
    r = train_tts(*data_args(corpus), "--out", tmp_path / "out", *TINY, "--stages", "lm", cwd=corpus)
    assert r.returncode == 2 and "lm needs the finished tokenizer checkpoint" in r.stderr
    r = train_tts(*data_args(corpus), "--out", tmp_path / "out", *TINY, "--stages", "rl", cwd=corpus)
    assert r.returncode == 2 and "rl needs the finished tokenizer checkpoint" in r.stderr
    r = train_tts(*data_args(corpus), "--out", tmp_path / "out", *TINY, "--reward", "cer,wer", cwd=corpus)
    assert r.returncode == 2 and "unknown reward 'wer'" in r.stderr
    r = train_tts(*data_args(corpus), "--out", tmp_path / "out", *TINY, "--rl-batch", "6", cwd=corpus)
    assert r.returncode == 2 and "--rl-batch 6 must be a multiple of --num-generations 4" in r.stderr
    r = train_tts(*data_args(corpus), "--out", tmp_path / "out", *TINY, "--rl", "ppo", cwd=corpus)
    assert r.returncode == 2 and "--rl 'ppo': choose from grpo, diffro, both, both-nofilter" in r.stderr
    assert not (tmp_path / "out" / "tokenizer").exists()  # nothing trained before the arguments were checked
    bad = tmp_path / "nospeaker.jsonl"
    bad.write_text(json.dumps({"audio": str(corpus / "train-en+m3-0.wav"), "text": "one two three"}) + "\n")
    r = train_tts("--data", bad, "--eval", f"test={corpus / 'test.jsonl'}", "--out", tmp_path / "o2", *TINY,
                  "--no-evaluate", cwd=corpus)
    assert r.returncode != 0 and f"{bad}:1: no 'speaker'" in r.stderr and "Traceback" not in r.stderr


def sample(*args):
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), "synthesize", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_synthesize_writes_wavs_and_refuses_bad_input(full_run, corpus, tmp_path):
    out, _ = full_run
    r = sample("--ckpt", out / "lm", "--text", "Hello there.", "--text", "Good morning!", "--speaker", "en-us+f3",
               "-o", tmp_path / "hi.wav")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "hi-0.wav"), str(tmp_path / "hi-1.wav")]
    assert all(len(audio.load(tmp_path / f"hi-{i}.wav")) > 0 for i in range(2))
    r = sample("--ckpt", out / "lm", "--text", "seven eight", "--voice", corpus / "test-en+m3-0.wav", "-o",
               tmp_path / "one.wav")
    assert r.returncode == 0 and r.stdout.strip() == str(tmp_path / "one.wav")
    bad = [(["--text", "?!", "--speaker", "en-us+f3"], "no words"),
           (["--text", "hi", "--speaker", "nobody"], "unknown speaker 'nobody'"),
           (["--text", "hi", "--voice", tmp_path / "missing.wav"], "missing.wav: file not found"),
           (["--text", "hi", "--voice", corpus / "train.jsonl"], "cannot read audio"),
           (["--text", "word " * 400, "--speaker", "en-us+f3"], "too long for this model's context")]
    for extra, message in bad:
        r = sample("--ckpt", out / "lm", *extra, "-o", tmp_path / "bad.wav")
        assert r.returncode == 1 and message in r.stderr, (extra, r.stderr)
    r = sample("--ckpt", out / "judge", "--text", "hi", "--speaker", "en-us+f3", "-o", tmp_path / "bad.wav")
    assert r.returncode == 1 and "not a TTS checkpoint" in r.stderr
    assert not (tmp_path / "bad.wav").exists()


def test_non_finite_rl_losses_skip_updates_then_stop(full_run, tmp_path, monkeypatch):
    """A NaN loss skips its update and is logged; three in a row stop RL, the SFT weights untouched
    and the last good checkpoint named."""
    import shutil

    import torch
    out = tmp_path / "out"
    shutil.copytree(full_run[0], out, ignore=shutil.ignore_patterns("rl-*", "lm-control", "samples"))
    module = load_train_tts()
    monkeypatch.chdir(full_run[0].parent)
    monkeypatch.setattr(module, "grpo_diffro_loss", lambda *a, **k: (torch.tensor(float("nan")), {}))
    corpus = full_run[0].parent
    with pytest.raises(SystemExit, match="3 non-finite losses or gradients in a row"):
        module.main([*map(str, data_args(corpus)), *TINY, "--out", str(out), "--stages", "rl", "--rl", "diffro",
                     "--rl-steps", "5", "--no-evaluate"])
    rows = [r for r in read_metrics(out) if r["stage"] == "rl-diffro"]
    assert [r.get("nonfinite_loss") for r in rows] == [1, 2, 3] and not any("loss" in r for r in rows)
    sft, rl = load_file(out / "lm" / "model.safetensors"), load_file(out / "rl-diffro" / "model.safetensors")
    assert all(sft[k].equal(rl[k]) for k in sft)  # the checkpoints saved before the stop hold the SFT weights


def test_llm_init_starts_the_lm_from_a_pretrained_decoder(corpus, tmp_path):
    """--llm-init DIR: the text-to-token LM has the checkpoint's shape, its text embedding rows
    after the speech tokens and EOS, and the run's text tokenizer is the checkpoint's."""
    import torch
    from test_pretrained import save_hf
    from nanospeechrl.checkpoint import load_checkpoint, read_config
    from nanospeechrl.llm import LLMConfig
    from nanospeechrl.pretrained import from_pretrained
    from nanospeechrl.tokenizer import Tokenizer
    from nanospeechrl.tts.token_lm import TokenLM

    hf_dir = tmp_path / "llama"
    save_hf(hf_dir, "llama", True)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
    Tokenizer.train(TEXTS, vocab_size=280).save(hf_dir / "tokenizer.json")  # a tokenizer of the checkpoint's own
    out = tmp_path / "out"
    r = train_tts(*data_args(corpus), "--out", out, *TINY, "--stages", "tokenizer,lm", "--llm-init", hf_dir,
                  "--lr", "1e-4", "--lm-dropout", "0", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "tokenizer.json").read_text() == (hf_dir / "tokenizer.json").read_text()
    cfg = read_config(out / "lm")
    n_codes = cfg["token_lm"]["n_codes"]
    lm = TokenLM(LLMConfig(**cfg["llm"]), n_codes)
    load_checkpoint(out / "lm", lm)
    assert lm.config.n_embd == 64 and lm.config.tie_embeddings and lm.config.vocab_size == n_codes + 1 + 280
    start = dict(from_pretrained(hf_dir).named_parameters())
    for name, p in lm.named_parameters():  # 4 SFT steps at lr 1e-4 move the weights only a little
        want = start[name]
        if name == "wte.weight":  # rows: speech tokens + EOS (new, at the mean), the checkpoint's 97, added (mean)
            want = torch.cat([want.mean(0).expand(n_codes + 1, -1), want, want.mean(0).expand(280 - 97, -1)])
        assert torch.allclose(p, want, atol=5e-3), name


def test_seeds_and_tags_replicate_rl_and_its_control(full_run, tmp_path):
    """--seeds 2 --rl-tag: rl-grpo-x and rl-grpo-x-seed1, each with its control, evaluated beside the
    SFT model; the first control is the baseline and the replicates are summarised by their means."""
    import shutil
    out = tmp_path / "out"
    shutil.copytree(full_run[0], out, ignore=shutil.ignore_patterns("rl-*", "lm-control", "samples"))
    corpus, n = full_run[0].parent, len(read_metrics(out))
    r = train_tts(*data_args(corpus), *TINY, "--out", out, "--stages", "rl,control", "--rl", "grpo", "--seeds", "2",
                  "--rl-tag", "x", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("rl-grpo-x", "rl-grpo-x-seed1", "lm-control-x", "lm-control-x-seed1"):
        assert json.loads((out / stage / "state.json").read_text())["done"], stage
    rows = read_metrics(out)[n:]
    models = {x["model"] for x in rows if x["stage"] == "eval" and x["model"].startswith("(d)")}
    assert models == {"(d) SFT, wav", "(d) SFT continued x, wav", "(d) SFT continued x@1, wav", "(d) grpo x, wav",
                      "(d) grpo x@1, wav"}
    seeds = [x for x in rows if x["stage"] == "seeds" and x["split"] == "training voices"]
    assert [(x["method"], x["seeds"]) for x in seeds] == [("SFT continued x", 2), ("grpo x", 2)]
    assert seeds[1]["base"] == "SFT continued x" and seeds[1]["low"] <= seeds[1]["diff"] <= seeds[1]["high"]
    assert "base" not in seeds[0] and [x["sft_base"] for x in seeds] == ["SFT", "SFT"]  # each method vs SFT too
    assert all(x["sft_low"] <= x["sft_diff"] <= x["sft_high"] for x in seeds)
    report = (out / "report.md").read_text()
    assert "seeds (means over replicates)" in report and "vs SFT" in report


def test_tok_stride_2_runs_end_to_end_at_12_5_tokens_a_second(corpus, tmp_path):
    """--tok-stride 2: every stage and the evaluation run at 12.5 tokens a second; the flow and Token2Text
    read each token at two positions, both taken from the trained tokenizer, so the flow's speech from
    real tokens lasts as long as the real audio (one position a token would halve it)."""
    out = tmp_path / "out"
    r = train_tts(*data_args(corpus), "--out", out, *TINY, "--tok-stride", "2", "--rl-steps", "1", cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    config = lambda stage: json.loads((out / stage / "config.json").read_text())  # noqa: E731
    assert config("tokenizer")["tokenizer"]["stride"] == 2
    assert config("flow")["flow"]["repeat"] == 2 and config("token2text")["token2text"]["repeat"] == 2
    flow_rows = [x for x in read_metrics(out) if x["stage"] == "eval" and x["model"].startswith("(c)")]
    assert flow_rows and all(0.9 <= x["duration_ratio"] <= 1.2 for x in flow_rows), flow_rows


def test_lm_pairs_limit_the_lm_and_its_control_to_the_first_pairs(full_run, tmp_path):
    """--lm-pairs 2: the LM trains on 2 pairs (one a batch, so an epoch every 2 steps), and the
    control continues on the SFT LM's 2 pairs even when its own command omits --lm-pairs."""
    import shutil
    out = tmp_path / "out"
    shutil.copytree(full_run[0], out, ignore=shutil.ignore_patterns("lm", "rl-*", "lm-control", "samples"))
    corpus, n = full_run[0].parent, len(read_metrics(out))
    one = ["--lm-batch-tokens", "1", "--no-evaluate", "--rl", "grpo"]  # a batch holds one pair
    r = train_tts(*data_args(corpus), *TINY, "--out", out, "--stages", "lm,rl", "--lm-pairs", "2", *one, cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    r = train_tts(*data_args(corpus), *TINY, "--out", out, "--stages", "control", *one, cwd=corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on the 2 pairs the SFT LM trained on" in r.stdout
    for stage in ("lm", "lm-control"):
        rows = [x for x in read_metrics(out)[n:] if x["stage"] == stage and "epoch" in x]
        assert len(rows) >= 4, stage
        assert all(x["epoch"] == x["step"] // 2 for x in rows), (stage, [(x["step"], x["epoch"]) for x in rows])


def test_a_speech_llm_judge_replaces_the_ctc_judge_unless_asked_for_both(full_run, asr_judge, tmp_path):
    """Stage judge beside a speech-LLM judge trains only the second speaker encoder (the CTC judge
    would read synthesised speech as the speech LLM does, docs/RESULTS.md); --ctc-judge trains both."""
    corpus = full_run[0].parent
    for flags, ctc in (([], False), (["--ctc-judge"], True)):
        out = tmp_path / f"o{len(flags)}"
        r = train_tts(*data_args(corpus), *TINY, "--out", out, "--stages", "judge", "--no-evaluate", "--judge",
                      asr_judge["clean"], *flags, cwd=corpus)
        assert r.returncode == 0, r.stderr[-3000:]
        assert (out / "speaker_eval" / "state.json").exists()
        assert (out / "judge" / "state.json").exists() == ctc, flags
