import hashlib
import os
import re

import pytest

from nanospeechrl import audio
from nanospeechrl.builtin import synth
from nanospeechrl.asr.rl_data import sentences
from nanospeechrl.builtin.corpus import SPLITS, CorpusConfig, _jobs, build_corpus, corpus_dir, voice_pools
from nanospeechrl.rewards import normalize
from nanospeechrl.data import read_manifest

TINY = CorpusConfig(n_train=10, n_dev=3, n_test=3, n_test_accent=3, n_test_long=1, n_test_noisy=2, n_no_speech=2,
                    long_frac=0.2, no_speech_frac=0.1, degrade_frac=0.5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return build_corpus(TINY, root=str(root), processes=2, verbose=False)


def read(corpus, split):
    return read_manifest(os.path.join(corpus, f"{split}.jsonl"))[0]


def test_splits_and_audio(corpus):
    for split, n in zip(SPLITS, [10 + 2 + 1, 3, 3, 3, 1, 2, 2, 1, 2]):  # train: + 2 long rows + 1 no-speech row
        rows = read(corpus, split)
        assert len(rows) == n
        for ex in rows:
            wav = audio.load(ex.audio)
            assert abs(len(wav) / audio.SAMPLE_RATE - ex.duration) < 0.01
            assert (0.05 < wav.abs().max() <= 1.0) or ex.no_speech
    for split in ("test_long", "dev_long"):
        long = read(corpus, split)[0]
        assert 20.0 <= long.duration <= 30.0 and len(long.text.split()) >= 40, split
    dev = {normalize(ex.text) for ex in read(corpus, "dev")}  # dev_long, dev_noisy: the dev sentences only
    assert {normalize(s) for s in re.split(r"(?<=[.!?])\s+", read(corpus, "dev_long")[0].text)} <= dev
    assert {normalize(ex.text) for ex in read(corpus, "dev_noisy")} <= dev


def test_held_out_voices_and_texts(corpus):
    accent, variant = lambda ex: ex.speaker.split("+")[0], lambda ex: ex.speaker.split("+")[1]
    train = read(corpus, "train")
    train_vars, heldout_vars, _ = voice_pools(TINY)
    assert {variant(ex) for ex in train} <= set(train_vars)
    assert TINY.test_accent not in {accent(ex) for ex in train}
    for split in ["dev", "test", "test_long", "dev_long", "dev_noisy"]:  # unseen voice variants, seen accents
        assert {variant(ex) for ex in read(corpus, split)} <= set(heldout_vars)
        assert {accent(ex) for ex in read(corpus, split)} <= set(synth.ACCENTS) - {TINY.test_accent}
    assert {accent(ex) for ex in read(corpus, "test_accent")} == {TINY.test_accent}
    assert not set(train_vars) & set(heldout_vars)
    train_texts = {normalize(ex.text) for ex in train if ex.text}
    for split in SPLITS[1:]:
        assert not {normalize(ex.text) for ex in read(corpus, split)} & train_texts


def test_asr_train_split_has_long_and_no_speech_rows_and_test_noisy_repeats_test(corpus):
    train = read(corpus, "train")
    single = [ex for ex in train if not ex.no_speech and sentences(ex.text) == 1]
    long = [ex for ex in train if sentences(ex.text) > 1]
    silent = [ex for ex in train if ex.no_speech]
    assert len(single) == 10 and len(long) == 2 and len(silent) == 1
    singles = {normalize(ex.text) for ex in single}
    for ex in long:  # 2-8 training sentences, each said alone elsewhere in train, at most 30 s
        parts = [normalize(p) for p in re.split(r"(?<=[.!?])\s+", ex.text)]
        assert 2 <= len(parts) <= 8 and set(parts) <= singles and ex.duration <= 30.0
    assert silent[0].text == "" and silent[0].spoken == ""
    noisy, test = read(corpus, "test_noisy"), read(corpus, "test")
    assert [ex.text for ex in noisy] == [ex.text for ex in test][:2]
    assert all(ex.no_speech and ex.text == "" for ex in read(corpus, "no_speech"))


def test_train_rows_are_the_same_whatever_the_corpus_size():
    small, large = (_jobs(CorpusConfig(**{**TINY.__dict__, "n_train": n}))["train"] for n in (10, 30))
    drop = lambda job: {k: v for k, v in job.items() if k != "out"}  # noqa: E731
    assert [drop(j) for j in small] == [drop(j) for j in large[:len(small)]]
    assert any(j.get("degrade") for j in large) and any(j.get("no_speech") for j in large)


def test_reused_and_reproducible(corpus, tmp_path):
    mtime = os.path.getmtime(os.path.join(corpus, "train.jsonl"))
    assert build_corpus(TINY, root=os.path.dirname(corpus), verbose=False) == corpus  # reused as is
    assert os.path.getmtime(os.path.join(corpus, "train.jsonl")) == mtime
    again = build_corpus(TINY, root=str(tmp_path), processes=1, verbose=False)  # rebuilt elsewhere

    def digest(root):
        h = hashlib.sha1()
        for split in SPLITS:
            for ex in read(root, split):
                h.update(ex.text.encode() + open(ex.audio, "rb").read())
        return h.hexdigest()
    assert digest(again) == digest(corpus)  # bit-identical, whatever the process count
    other = CorpusConfig(**{**TINY.__dict__, "seed": 1})
    assert os.path.basename(corpus_dir(other)) != os.path.basename(corpus)


def test_tts_corpus_speaks_the_test_sentences_again_in_training_voices(tmp_path):
    cfg = CorpusConfig(task="tts", n_train=4, n_dev=2, n_test=3, n_test_accent=0, n_test_long=0)
    root = build_corpus(cfg, root=str(tmp_path), processes=1, verbose=False)
    assert sorted(f for f in os.listdir(root) if f.endswith(".jsonl")) == [
        "dev.jsonl", "test.jsonl", "test_seen.jsonl", "train.jsonl"]
    test, seen, train = read(root, "test"), read(root, "test_seen"), read(root, "train")
    assert [ex.text for ex in seen] == [ex.text for ex in test] and all(ex.task == "tts" for ex in seen)
    assert all(ex.spoken == ex.text for ex in train)  # tts rows say their text: CTC targets for the tokenizer
    train_vars, heldout_vars, _ = voice_pools(cfg)
    assert {ex.speaker.split("+")[1] for ex in seen} <= set(train_vars)
    assert {ex.speaker.split("+")[1] for ex in test} <= set(heldout_vars)


def test_bad_config():
    with pytest.raises(ValueError, match="test_accent"):
        voice_pools(CorpusConfig(test_accent="en-mars"))
