import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch

from nanospeechrl import audio
from nanospeechrl.data import (DataError, Example, bucket_batches, collate, features, load_examples,
                               read_librispeech, read_manifest, write_manifest)


def write_tone(path, seconds=0.3, freq=440.0, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def same_fields(a: Example, b: Example):
    return (a.audio, a.text, a.task, a.prompt, a.speaker, a.duration, a.extra) == \
           (b.audio, b.text, b.task, b.prompt, b.speaker, b.duration, b.extra)


# ----------------------------------------------------------------------------- manifests

def test_manifest_round_trip(tmp_path):
    a = write_tone(tmp_path / "wavs" / "a.wav")
    b = write_tone(tmp_path / "wavs" / "deep" / "b.wav")
    exs = [Example(str(a), "hello world", duration=0.3, speaker="spk1"),
           Example(str(b), "la réponse\u2028est 42", task="sqa", prompt="what is it?", extra={"lang": "fr", "n": [1, 2]})]
    path = tmp_path / "out" / "manifest.jsonl"
    write_manifest(path, exs)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert [r["audio"] for r in rows] == ["../wavs/a.wav", "../wavs/deep/b.wav"]  # relative to the manifest
    back, skipped = read_manifest(path)
    assert skipped == Counter()
    assert len(back) == 2 and all(same_fields(x, y) for x, y in zip(exs, back))
    assert back[1].source == f"{path}:2"


def test_relative_paths_resolved(tmp_path):
    write_tone(tmp_path / "m" / "a.wav")
    write_tone(tmp_path / "m" / "sub" / "b.wav")
    c = write_tone(tmp_path / "elsewhere" / "c.wav")
    path = write_lines(tmp_path / "m" / "manifest.jsonl", [
        json.dumps({"audio": "a.wav", "text": "one"}),
        json.dumps({"audio": "sub/b.wav", "text": "two", "speaker": 19, "duration": 2}),
        json.dumps({"audio": str(c), "text": "three"}),
    ])
    exs, _ = read_manifest(path)
    assert [e.audio for e in exs] == [str(tmp_path / "m" / "a.wav"), str(tmp_path / "m" / "sub" / "b.wav"), str(c)]
    assert exs[0].task == "asr" and exs[0].prompt == "" and exs[0].duration is None
    assert exs[1].speaker == "19" and exs[1].duration == 2.0


GOOD = json.dumps({"audio": "a.wav", "text": "fine"})


@pytest.mark.parametrize("bad, reason, words", [
    ("{not json", "bad_json", "not valid JSON"),
    ("[1, 2]", "bad_json", "JSON object"),
    (json.dumps({"text": "hi"}), "missing_field", "'audio'"),
    (json.dumps({"audio": "a.wav"}), "missing_field", "'text'"),
    (json.dumps({"audio": "a.wav", "text": 5}), "bad_field", "'text' must be a string"),
    (json.dumps({"audio": "a.wav", "text": "hi", "task": "sing"}), "bad_field", "unknown task 'sing'"),
    (json.dumps({"audio": "a.wav", "text": "Anna did.", "task": "sqa"}), "missing_field", "needs a 'prompt'"),
    (json.dumps({"audio": "a.wav", "text": "Anna did.", "task": "sqa", "prompt": " "}), "missing_field", "question"),
    (json.dumps({"audio": "a.wav", "text": "hi", "transcript": 3}), "bad_field", "'transcript' must be a string"),
    (json.dumps({"audio": "a.wav", "text": "hi", "duration": "long"}), "bad_field", "duration"),
    (json.dumps({"audio": "a.wav", "text": "hi", "duration": -3}), "bad_field", "duration"),
    (json.dumps({"audio": "a.wav", "text": "hi", "duration": 1e12}), "bad_field", "duration"),
    ('{"audio": "a.wav", "text": "hi", "duration": NaN}', "bad_field", "duration"),
    (json.dumps({"audio": "a.wav", "text": "hi", "no_speech": True}), "bad_field", "'no_speech' row"),
    (json.dumps({"audio": "a.wav", "text": "", "no_speech": True, "task": "ast"}), "bad_field", "'no_speech' row"),
    (json.dumps({"audio": "a.wav", "text": "  \t "}), "empty_text", "empty transcript"),
    (json.dumps({"audio": "gone.wav", "text": "hi"}), "missing_audio", "gone.wav"),
])
def test_bad_manifest_line(tmp_path, bad, reason, words):
    write_tone(tmp_path / "a.wav")
    path = write_lines(tmp_path / "manifest.jsonl", [GOOD, "", bad, GOOD])  # bad input on line 3
    with pytest.raises(DataError) as err:
        read_manifest(path)
    assert "manifest.jsonl:3: " in str(err.value) and words in str(err.value)
    exs, skipped = read_manifest(path, skip_bad=True)
    assert [e.source for e in exs] == [f"{path}:1", f"{path}:4"]
    assert skipped == Counter({reason: 1})


def test_empty_manifest_and_unchecked_audio(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(DataError, match="empty.jsonl: no usable examples"):
        read_manifest(path)
    path = write_lines(tmp_path / "allbad.jsonl", ["nope", json.dumps({"audio": "x.wav", "text": "hi"})])
    with pytest.raises(DataError, match=r"allbad.jsonl: no usable examples .*bad_json"):
        read_manifest(path, skip_bad=True)
    exs, _ = read_manifest(path, skip_bad=True, check_audio_exists=False)
    assert exs[0].audio == str(tmp_path / "x.wav")
    with pytest.raises(DataError, match="missing.jsonl: file not found"):
        read_manifest(tmp_path / "missing.jsonl")


# ----------------------------------------------------------------------------- LibriSpeech

def make_librispeech(root, extra_lines=()):
    for spk, ch, texts in [("19", "198", ["HELLO WORLD", "IT'S A TEST"]), ("26", "495", ["ANOTHER ONE"])]:
        folder = root / "train-clean" / spk / ch
        lines = []
        for i, text in enumerate(texts):
            utt = f"{spk}-{ch}-{i:04d}"
            write_tone(folder / f"{utt}.flac")
            lines.append(f"{utt} {text}")
        if spk == "19":
            lines += list(extra_lines)
        write_lines(folder / f"{spk}-{ch}.trans.txt", lines)
    return root


def test_read_librispeech(tmp_path):
    root = make_librispeech(tmp_path / "ls")
    exs, skipped = read_librispeech(root)
    assert skipped == Counter()
    assert [e.text for e in exs] == ["hello world", "it's a test", "another one"]  # lower-cased
    assert [e.speaker for e in exs] == ["19", "19", "26"]
    assert exs[1].audio == str(root / "train-clean" / "19" / "198" / "19-198-0001.flac")
    assert exs[1].source.endswith("19-198.trans.txt:2") and exs[0].task == "asr"


@pytest.mark.parametrize("line, reason", [("19-198-0009 GONE", "missing_audio"), ("19-198-0000", "malformed_line")])
def test_librispeech_bad_lines(tmp_path, line, reason):
    root = make_librispeech(tmp_path / "ls", extra_lines=[line])
    with pytest.raises(DataError, match=r"19-198\.trans\.txt:3: "):
        read_librispeech(root)
    exs, skipped = read_librispeech(root, skip_bad=True)
    assert len(exs) == 3 and skipped == Counter({reason: 1})


def test_load_examples_dispatch(tmp_path):
    root = make_librispeech(tmp_path / "ls")
    write_tone(tmp_path / "a.wav")
    manifest = write_lines(tmp_path / "m.jsonl", [GOOD])
    assert [e.text for e in load_examples(manifest)[0]] == ["fine"]
    assert len(load_examples(root)[0]) == 3
    (tmp_path / "empty").mkdir()
    for spec, words in [(tmp_path / "empty", "no *.trans.txt"), (tmp_path / "a.wav", "without the .jsonl"),
                        (tmp_path / "nothing", "not found")]:
        with pytest.raises(DataError) as err:
            load_examples(spec)
        assert str(err.value).startswith(str(spec)) and words in str(err.value)


# ----------------------------------------------------------------------------- features

@pytest.fixture
def three(tmp_path):
    for i, sec in enumerate([0.2, 0.35, 0.5]):
        write_tone(tmp_path / f"{i}.wav", seconds=sec, freq=300 + 100 * i)
    path = write_lines(tmp_path / "manifest.jsonl",
                       [json.dumps({"audio": f"{i}.wav", "text": f"utt {i}"}) for i in range(3)])
    return read_manifest(path)[0]


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = audio.log_mel

    def log_mel(wav):
        calls.append(len(wav))
        return real(wav)

    monkeypatch.setattr(audio, "log_mel", log_mel)
    return calls


def test_features_cache_hit_and_invalidation(tmp_path, three, counted):
    cache = tmp_path / "cache"
    feats, kept, skipped = features(three, cache_dir=cache)
    assert [f.shape for f in feats] == [(audio.n_frames(n), audio.N_MELS) for n in (3200, 5600, 8000)]
    assert kept == three and skipped == Counter() and len(counted) == 3
    assert torch.allclose(feats[1], audio.log_mel(audio.load(three[1].audio)))
    counted.clear()
    again, _, _ = features(three, cache_dir=cache)
    assert counted == []  # served from the cache
    assert all(torch.equal(a, b) for a, b in zip(feats, again))
    assert len(list(cache.glob("*.pt"))) == 1
    write_tone(tmp_path / "1.wav", seconds=0.6)  # a changed file invalidates the cache
    changed, _, _ = features(three, cache_dir=cache)
    assert len(counted) == 3 and changed[1].shape[0] == audio.n_frames(9600)
    assert torch.equal(changed[0], feats[0])


def test_features_bad_audio(tmp_path, three, counted):
    (tmp_path / "1.wav").write_bytes(b"RIFF this is not audio at all")
    with pytest.raises(audio.AudioError) as err:
        features(three, cache_dir=tmp_path / "cache")
    assert str(err.value).startswith(str(tmp_path / "1.wav")) and "manifest.jsonl:2" in str(err.value)
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing cached from a failed run
    feats, kept, skipped = features(three, cache_dir=tmp_path / "cache", skip_bad=True)
    assert [e.text for e in kept] == ["utt 0", "utt 2"] and len(feats) == 2
    assert skipped == Counter({"bad_audio": 1})
    counted.clear()
    with pytest.raises(audio.AudioError, match="manifest.jsonl:2"):  # the cache remembers the error
        features(three, cache_dir=tmp_path / "cache")
    assert counted == []


def test_features_too_long(three):
    limit = audio.n_frames(5600)  # the 0.5 s utterance is longer
    with pytest.raises(DataError) as err:
        features(three, max_frames=limit)
    assert str(err.value).startswith(three[2].audio) and "manifest.jsonl:3" in str(err.value)
    feats, kept, skipped = features(three, max_frames=limit, skip_bad=True)
    assert kept == three[:2] and skipped == Counter({"too_long": 1})


# ----------------------------------------------------------------------------- batching

def test_bucket_batches():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, 500, (300,), generator=g).tolist()
    budget = 2000
    batches = bucket_batches(lengths, max_frames_per_batch=budget, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert all(max(lengths[i] for i in b) * len(b) <= budget for b in batches)
    assert batches == bucket_batches(lengths, max_frames_per_batch=budget, seed=3)
    assert batches != bucket_batches(lengths, max_frames_per_batch=budget, seed=4)
    shortest, longest = min(range(300), key=lengths.__getitem__), max(range(300), key=lengths.__getitem__)
    size_of = {i: len(b) for b in batches for i in b}
    assert size_of[shortest] > 5 * size_of[longest]  # short utterances make big batches
    # greedy and tight: in length order, each batch could not take the next utterance
    ordered = sorted(batches, key=lambda b: max(lengths[i] for i in b))
    for b, nxt in zip(ordered, ordered[1:]):
        assert min(lengths[i] for i in nxt) * (len(b) + 1) > budget
    capped = bucket_batches(lengths, max_frames_per_batch=budget, batch_size=8, shuffle=False)
    assert max(len(b) for b in capped) == 8 and sorted(i for b in capped for i in b) == list(range(300))
    plain = bucket_batches([5, 1, 3, 2, 4], batch_size=2, shuffle=False)
    assert plain == [[1, 3], [2, 4], [0]]
    assert bucket_batches([10, 5000, 20], max_frames_per_batch=100, shuffle=False) == [[0, 2], [1]]
    with pytest.raises(ValueError):
        bucket_batches([1, 2])
    # multiple: the budget counts lengths rounded up, as collate(multiple=...) pads them
    rounded = bucket_batches(lengths, max_frames_per_batch=budget, seed=3, multiple=32)
    assert all(-(-max(lengths[i] for i in b) // 32) * 32 * len(b) <= budget for b in rounded)
    assert sorted(i for b in rounded for i in b) == list(range(300))


def test_collate():
    feats = [torch.randn(3, 80), torch.randn(5, 80)]
    batch = collate(feats, [[7, 8, 9, 10], [11]], pad_id=1)
    assert batch["feats"].shape == (2, 5, 80) and batch["feats"].dtype == torch.float32
    assert torch.equal(batch["feats"][0, :3], feats[0]) and torch.equal(batch["feats"][1], feats[1])
    assert batch["feats"][0, 3:].abs().sum() == 0
    assert batch["feat_lens"].tolist() == [3, 5] and batch["token_lens"].tolist() == [4, 1]
    assert batch["tokens"].tolist() == [[7, 8, 9, 10], [11, 1, 1, 1]] and batch["tokens"].dtype == torch.long
    with pytest.raises(ValueError):
        collate(feats, [[1]])
    with pytest.raises(ValueError):
        collate([torch.randn(3, 80), torch.randn(3, 40)], [[1], [2]])


def test_skip_empty_skips_only_blank_transcripts(tmp_path):
    write_tone(tmp_path / "a.wav")
    ok, blank = json.dumps({"audio": "a.wav", "text": "hi"}), json.dumps({"audio": "a.wav", "text": " "})
    path = write_lines(tmp_path / "m.jsonl", [ok, blank, ok])
    examples, skipped = read_manifest(path, skip_empty=True)
    assert len(examples) == 2 and skipped == Counter(empty_text=1)
    with pytest.raises(DataError, match=r"m\.jsonl:2: empty transcript"):
        read_manifest(path)
    path = write_lines(tmp_path / "m2.jsonl", [ok, blank, "{not json"])
    with pytest.raises(DataError, match=r"m2\.jsonl:3"):  # other bad lines still raise
        read_manifest(path, skip_empty=True)


def test_no_speech_rows_have_an_empty_transcript(tmp_path):
    write_tone(tmp_path / "a.wav")
    rows = [json.dumps({"audio": "a.wav", "text": "", "no_speech": True}), json.dumps({"audio": "a.wav", "text": "hi"})]
    path = write_lines(tmp_path / "m.jsonl", rows)
    (silent, spoken), skipped = read_manifest(path)
    assert silent.no_speech and silent.text == "" and silent.spoken == "" and not skipped
    assert not spoken.no_speech and spoken.spoken == "hi"
    write_manifest(tmp_path / "again.jsonl", [silent, spoken])  # written back as read
    assert [e.no_speech for e in read_manifest(tmp_path / "again.jsonl")[0]] == [True, False]


def test_collate_pads_to_a_multiple():
    feats = [torch.randn(3, 80), torch.randn(33, 80)]
    b = collate(feats, multiple=32)
    assert b["feats"].shape == (2, 64, 80) and b["feat_lens"].tolist() == [3, 33]
    assert torch.equal(b["feats"][1, :33], feats[1]) and b["feats"][:, 33:].abs().sum() == 0
    assert collate(feats[:1], multiple=32)["feats"].shape == (1, 32, 80)
    assert collate([torch.randn(32, 80)], multiple=32)["feats"].shape == (1, 32, 80)


def test_collate_features_only():
    b = collate([torch.ones(3, 80), torch.ones(5, 80)])
    assert set(b) == {"feats", "feat_lens", "tokens", "token_lens"}
    assert b["feats"].shape == (2, 5, 80) and b["feat_lens"].tolist() == [3, 5]
    assert b["token_lens"].tolist() == [0, 0]
