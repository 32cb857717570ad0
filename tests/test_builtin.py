import hashlib
import os

import pytest

from nanospeechrl import audio
from nanospeechrl.builtin import synth
from nanospeechrl.builtin.corpus import SPLITS, CorpusConfig, build_corpus, corpus_dir, voice_pools
from nanospeechrl.rewards import normalize
from nanospeechrl.data import read_manifest

TINY = CorpusConfig(n_train=10, n_dev=3, n_test=3, n_test_accent=3, n_test_long=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return build_corpus(TINY, root=str(root), processes=2, verbose=False)


def read(corpus, split):
    return read_manifest(os.path.join(corpus, f"{split}.jsonl"))[0]


def test_splits_and_audio(corpus):
    for split, n in zip(SPLITS, [10, 3, 3, 3, 1]):
        rows = read(corpus, split)
        assert len(rows) == n
        for ex in rows:
            wav = audio.load(ex.audio)
            assert abs(len(wav) / audio.SAMPLE_RATE - ex.duration) < 0.01
            assert 0.05 < wav.abs().max() <= 1.0
    long = read(corpus, "test_long")[0]
    assert 20.0 <= long.duration <= 30.0 and len(long.text.split()) >= 40


def test_held_out_voices_and_texts(corpus):
    accent, variant = lambda ex: ex.speaker.split("+")[0], lambda ex: ex.speaker.split("+")[1]
    train = read(corpus, "train")
    train_vars, heldout_vars, _ = voice_pools(TINY)
    assert {variant(ex) for ex in train} <= set(train_vars)
    assert TINY.test_accent not in {accent(ex) for ex in train}
    for split in ["dev", "test", "test_long"]:  # unseen voice variants, seen accents
        assert {variant(ex) for ex in read(corpus, split)} <= set(heldout_vars)
        assert {accent(ex) for ex in read(corpus, split)} <= set(synth.ACCENTS) - {TINY.test_accent}
    assert {accent(ex) for ex in read(corpus, "test_accent")} == {TINY.test_accent}
    assert not set(train_vars) & set(heldout_vars)
    train_texts = {normalize(ex.text) for ex in train}
    for split in SPLITS[1:]:
        assert not {normalize(ex.text) for ex in read(corpus, split)} & train_texts


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
