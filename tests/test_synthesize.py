"""sample.py synthesize on a tiny random TTS checkpoint built here (no training): every bad input is
one line on stderr, exit code 1, and no file; a paragraph is spoken sentence by sentence."""
import importlib.util
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from nanospeechrl import audio
from nanospeechrl.checkpoint import save_checkpoint
from nanospeechrl.encoder import EncoderConfig
from nanospeechrl.llm import LLMConfig
from nanospeechrl.tokenizer import Tokenizer
from nanospeechrl.tts.flow import FOLD, FlowConfig, TokenToMel
from nanospeechrl.tts.speaker import SpeakerConfig, SpeakerEncoder
from nanospeechrl.tts.synthesis import build_model, load_tts
from nanospeechrl.tts.text_front import spoken
from nanospeechrl.tts.token_lm import TokenLM

ROOT = Path(__file__).resolve().parents[1]
N_CODES = 16
SENTENCES = ["Dr. Smith paid $5 on 12/25/2026.", "Call 911 at 3:45 pm.", "The cat sat on the mat."]


def load_sample_module():
    spec = importlib.util.spec_from_file_location("sample", ROOT / "sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sample = load_sample_module()


def tone(seconds, level=0.3):
    t = torch.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    return level * torch.sin(2 * math.pi * 220 * t)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """<run>/lm (LM + tokenizer.json), <run>/flow, <run>/speaker as train_tts.py lays them out, random
    weights; a CTC model and an empty folder as wrong checkpoints; reference clips good and bad."""
    root = tmp_path_factory.mktemp("tts_run")
    tok = Tokenizer.train([spoken(s) for s in SENTENCES] * 4, vocab_size=300)
    torch.manual_seed(0)
    llm = LLMConfig(vocab_size=N_CODES + 1 + tok.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=32,
                    max_seq_len=96)  # room for one sentence and its speech, not for all three
    lm = TokenLM(llm, N_CODES)
    with torch.no_grad():  # wide weights: greedy choices far from float-rounding ties
        for p in lm.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
        lm.wte.weight[N_CODES] *= 2  # a louder EOS: some sentences end on their own, before their caps
    lm_config = {"llm": asdict(llm), "train": {},
                 "token_lm": {"n_codes": N_CODES, "max_ratio": 1.0, "flow": "flow", "speaker": "speaker"}}
    save_checkpoint(root / "lm", lm, lm_config, tok)
    flow = FlowConfig(n_codes=N_CODES, speaker_dim=8, reference_dim=8, d_model=32, n_layer=1, n_head=2)
    save_checkpoint(root / "flow", TokenToMel(flow), {"flow": asdict(flow), "train": {}})
    spk = SpeakerConfig(channels=16, n_layer=3, dim=8, classes=(2,))
    save_checkpoint(root / "speaker", SpeakerEncoder(spk), {"speaker": asdict(spk), "train": {}})
    ctc = {"encoder": asdict(EncoderConfig(d_model=16, n_layer=1, n_head=2, conv_channels=4, vocab_size=5)),
           "train": {}}
    save_checkpoint(root / "ctc", build_model(ctc), ctc)
    (root / "empty").mkdir()
    audio.save(root / "voice.wav", tone(1.0))
    audio.save(root / "silence.wav", torch.zeros(audio.SAMPLE_RATE))
    audio.save(root / "short.wav", tone(0.2))
    (root / "text.wav").write_text("this is not audio at all\n" * 20)
    return root


def synthesize(capsys, *args):
    """sample.py synthesize in this process -> (exit code, stdout, stderr)."""
    code = sample.main(["synthesize", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_synthesize_writes_one_wav_per_text(run, tmp_path, capsys):
    code, out, err = synthesize(capsys, "--ckpt", run / "lm", "--text", SENTENCES[0], "--text", SENTENCES[1],
                                "--voice", run / "voice.wav", "-o", tmp_path / "hi.wav")
    assert code == 0, err
    assert out.split() == [str(tmp_path / "hi-0.wav"), str(tmp_path / "hi-1.wav")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hi-0.wav", "hi-1.wav"]  # no temp files left
    assert all(len(audio.load(tmp_path / f"hi-{i}.wav")) > 0 for i in range(2))


BAD = [  # (arguments besides --ckpt and -o, what the one-line error must say)
    (["--text", "", "--voice", "voice.wav"], "no words"),
    (["--text", "?! ... --", "--voice", "voice.wav"], "no words"),
    (["--text", "Hello.", "--text", "?!", "--voice", "voice.wav"], "no words"),  # the second text is bad
    (["--text", "Привет 😀", "--voice", "voice.wav"], "cannot say 'П', 'р', 'и', 'в', 'е', 'т', '😀'"),
    (["--text", "Hello.", "--text", "你好", "--voice", "voice.wav"], "cannot say '你', '好'"),
    (["--text", "word " * 400, "--voice", "voice.wav"], "too long for this model's context"),
    (["--text", "Hello.", "--speaker", "nobody"], "unknown speaker 'nobody'"),
    (["--text", "Hello.", "--voice", "silence.wav"], "silence.wav: the reference clip is silence"),
    (["--text", "Hello.", "--voice", "short.wav"], "short.wav: 0.20 s is too short for a reference clip: it needs "
                                                   "at least 0.5 s"),
    (["--text", "Hello.", "--voice", "text.wav"], "text.wav: cannot read audio"),
    (["--text", "Hello.", "--voice", "missing.wav"], "missing.wav: file not found"),
    (["--text", "Hello.", "--voice", "voice.wav", "--ckpt", "ctc"], "not a TTS checkpoint"),
    (["--text", "Hello.", "--voice", "voice.wav", "--ckpt", "empty"], "not a TTS checkpoint"),
    (["--text", "Hello.", "--voice", "voice.wav", "--ckpt", "nowhere"], "not a TTS checkpoint"),
    (["--text", "Hello.", "--voice", "voice.wav", "-o", "no/such/folder/x.wav"], "output folder"),
    (["--text", "Hello.", "--voice", "voice.wav", "-o", "out.xyz"], "cannot write audio as '.xyz'"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_no_file_and_exit_code_1(run, tmp_path, capsys, extra, message):
    names = {"voice.wav", "silence.wav", "short.wav", "text.wav", "missing.wav", "ctc", "empty", "nowhere"}
    extra = [str(run / a) if a in names else a for a in extra]
    extra = [str(tmp_path / a) if a in ("no/such/folder/x.wav", "out.xyz") else a for a in extra]
    ckpt = [] if "--ckpt" in extra else ["--ckpt", run / "lm"]
    output = [] if "-o" in extra else ["-o", tmp_path / "bad.wav"]
    code, out, err = synthesize(capsys, *ckpt, *extra, *output)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


def test_a_paragraph_lasts_as_long_as_its_sentences_alone(run):
    """Too long for the LM's context as a whole, a paragraph is spoken sentence by sentence: with greedy
    tokens, its mel has exactly as many frames as its three sentences' mels, each synthesised alone.
    The front end runs before the split, so "Dr." and "p.m." do not end a sentence."""
    tts = load_tts(run / "lm")
    voice = tts.voice([audio.log_mel(tone(1.0))])
    paragraph = " ".join(SENTENCES)
    assert tts.pieces(paragraph) == [spoken(s) for s in SENTENCES]
    greedy = dict(temperature=0.0, steps=2)
    whole = tts.synthesize([paragraph], voice, generator=torch.Generator().manual_seed(0), **greedy)[0][0]
    alone = [tts.synthesize([s], voice, generator=torch.Generator().manual_seed(1), **greedy)[0][0]
             for s in SENTENCES]
    tokens, capped = tts.tokens(tts.pieces(paragraph), temperature=0.0)
    assert not capped.all()  # lengths the LM chose (EOS), not only its caps
    assert len(whole) == sum(len(m) for m in alone) == FOLD * sum(len(t) for t in tokens)
    assert len({len(m) for m in alone}) > 1  # the sentences differ in length: the sum is not a coincidence
    assert torch.isfinite(whole).all()
