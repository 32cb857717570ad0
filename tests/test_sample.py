import importlib.util
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from nanospeechrl import audio
from nanospeechrl.checkpoint import save_checkpoint
from nanospeechrl.data import collate
from nanospeechrl.encoder import EncoderConfig
from nanospeechrl.llm import LLM, LLMConfig
from nanospeechrl.asr.windows import cut_points
from nanospeechrl.asr.speechlm import ProjectorConfig, SpeechLM, load_speechlm
from nanospeechrl.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
MAX_FRAMES = 300  # 3 s: a tiny limit, so a "too long" file is cheap to make


def load_sample_module():
    spec = importlib.util.spec_from_file_location("sample", ROOT / "sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny random speech-LLM checkpoint and test audio: two good files, a long, a broken, a missing one."""
    tmp = tmp_path_factory.mktemp("sample")
    tok = Tokenizer.train(["one two three", "hello world"] * 4, vocab_size=300)
    enc = EncoderConfig(d_model=32, n_layer=1, n_head=2, conv_kernel=3, conv_channels=8, dropout=0.0,
                        max_frames=MAX_FRAMES)
    llm = LLMConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=32, max_seq_len=256)
    torch.manual_seed(0)
    model = SpeechLM(enc, LLM(llm), ProjectorConfig(stack=2))
    with torch.no_grad():  # wide weights: greedy choices far from float-rounding ties
        for p in model.llm.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    config = {"train": {}, "encoder": asdict(enc), "llm": asdict(llm), "projector": {"stack": 2}}
    save_checkpoint(tmp / "ckpt", model, config, tok)

    def tone(seconds, hz):
        t = torch.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
        return 0.3 * torch.sin(2 * math.pi * hz * t) + 0.05 * torch.randn(len(t), generator=g)

    g = torch.Generator().manual_seed(0)
    audio.save(tmp / "a.wav", tone(0.8, 220))
    audio.save(tmp / "b.flac", tone(1.5, 440))
    audio.save(tmp / "long.wav", tone(3.5, 330))  # 351 frames > MAX_FRAMES
    (tmp / "bad.wav").write_bytes(b"this is not audio at all" * 10)
    return {"ckpt": tmp / "ckpt", "a": tmp / "a.wav", "b": tmp / "b.flac", "long": tmp / "long.wav",
            "bad": tmp / "bad.wav", "missing": tmp / "missing.wav"}


def expected_line(files, name, window=MAX_FRAMES):
    """What sample.py must print for one good file: the model run on that file alone, in process
    (a file longer than the window: on each of its windows alone, texts joined)."""
    model, tok = load_speechlm(files["ckpt"])
    feats = audio.log_mel(audio.load(files[name]))
    texts = [model.transcribe(f[None], torch.tensor([len(f)]), tok, max_new_tokens=6)[0].strip()
             for f in (feats[s:e] for s, e in cut_points(feats, window))]
    return f"{files[name]}\t{' '.join(' '.join(texts).split())}"


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_transcribe_cli_reports_bad_files_and_keeps_going(files):
    r = run_cli("transcribe", "--ckpt", files["ckpt"], "--max-new-tokens", 6, "--device", "cpu", "--nbest", 0,
                files["a"], files["bad"], files["missing"], files["long"], files["b"])
    assert r.returncode == 1, r.stderr
    expected = [expected_line(files, "a"), expected_line(files, "long"), expected_line(files, "b")]
    assert all(line.split("\t")[1] for line in expected)  # the model says something: not a vacuous check
    assert r.stdout.splitlines() == expected  # batched together, in input order, equal to each run alone
    errors = r.stderr.splitlines()
    assert len(errors) == 2, r.stderr
    assert errors[0].startswith(f"error: {files['bad']}: ")
    assert errors[1].startswith(f"error: {files['missing']}: ")

    r = run_cli("transcribe", "--ckpt", files["ckpt"], "--max-new-tokens", 6, "--nbest", 0, files["a"],
                files["long"], files["b"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == expected
    r = run_cli("transcribe", "--ckpt", files["ckpt"], "--max-new-tokens", 6, "--nbest", 0, "--window", 1.0, files["b"])
    assert r.stdout.splitlines() == [expected_line(files, "b", window=100)]  # 1.5 s in windows of <= 1 s
    assert r.stderr == ""


def test_sampling_flags(files, capsys):
    sample = load_sample_module()
    common = ["transcribe", "--ckpt", str(files["ckpt"]), "--max-new-tokens", "6", str(files["a"]), str(files["b"])]
    assert sample.main(common + ["--nbest", "0"]) == 0
    greedy = capsys.readouterr().out
    assert sample.main(common + ["--temperature", "1.0", "--top-k", "1", "--seed", "7"]) == 0
    assert capsys.readouterr().out == greedy  # top-k 1 keeps only the argmax
    sampled = []
    for _ in range(2):
        assert sample.main(common + ["--temperature", "1.5", "--seed", "7", "--batch-size", "1"]) == 0
        sampled.append(capsys.readouterr().out)
    assert sampled[0] == sampled[1]  # same seed, same samples
    assert sample.main(common + ["--temperature", "0.7", "--nbest", "4"]) == 1  # two decodings at once: no
    assert "--nbest 0" in capsys.readouterr().err


def test_nbest_is_the_default(files, capsys):
    """transcribe rescores greedy + 16 samples by default, as train_asr.py evaluates: the output
    equals SpeechLM.decode(nbest=16) on the same batch with the same seed."""
    sample = load_sample_module()
    model, tok = load_speechlm(files["ckpt"])
    feats = [audio.log_mel(audio.load(files[name])) for name in ("a", "b")]
    b = collate(feats)
    texts = model.transcribe(b["feats"], b["feat_lens"], tok, max_new_tokens=40, nbest=16, ctc_weight=0.1,
                             generator=torch.Generator().manual_seed(1))
    assert texts != model.transcribe(b["feats"], b["feat_lens"], tok, max_new_tokens=40)  # not just greedy
    assert sample.main(["transcribe", "--ckpt", str(files["ckpt"]), "--max-new-tokens", "40", "--device", "cpu",
                        "--seed", "1", str(files["a"]), str(files["b"])]) == 0  # the same device: the same stream
    assert capsys.readouterr().out.splitlines() == [f"{files[n]}\t{' '.join(t.split())}" for n, t in zip("ab", texts)]


def test_not_a_speechlm_checkpoint(files, tmp_path, capsys):
    sample = load_sample_module()
    assert sample.main(["transcribe", "--ckpt", str(tmp_path / "nothing"), str(files["a"])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path / "nothing") in err
    with pytest.raises(SystemExit):  # subcommand required
        sample.main([])


def test_answer_and_translate(files, capsys):
    """answer/translate give the model their task token (and the question): each output equals the
    model run in process with that prompt, and differs from plain transcription."""
    sample = load_sample_module()
    model, tok = load_speechlm(files["ckpt"])
    feats = audio.log_mel(audio.load(files["a"]))

    def expected(task, prompt=""):
        text = model.transcribe(feats[None], torch.tensor([len(feats)]), tok, task=task, prompt=prompt,
                                max_new_tokens=6)[0]
        return f"{files['a']}\t{' '.join(text.split())}\n"

    assert sample.main(["answer", "--ckpt", str(files["ckpt"]), "--question", "one two", "--max-new-tokens", "6",
                        str(files["a"])]) == 0
    assert capsys.readouterr().out == expected("sqa", "one two")
    assert sample.main(["translate", "--ckpt", str(files["ckpt"]), "--max-new-tokens", "6", str(files["a"])]) == 0
    assert capsys.readouterr().out == expected("ast")
    assert len({expected("asr"), expected("sqa", "one two"), expected("ast")}) > 1  # the prompt matters
    long_question = "one two three hello world " * 20  # over the default 48-token budget
    assert sample.main(["answer", "--ckpt", str(files["ckpt"]), "--question", long_question,
                        "--max-new-tokens", "6", str(files["a"])]) == 0
    out = capsys.readouterr()
    assert "truncated" in out.err and out.out.startswith(f"{files['a']}\t")
    assert sample.main(["answer", "--ckpt", str(files["ckpt"]), "--question", " ", str(files["a"])]) == 1
    assert "--question is empty" in capsys.readouterr().err
