"""asr.corpora.load_data's RL hold-out (--rl-holdout): utterances kept out of stages 0-1 for stage 2."""
import json

import pytest
from types import SimpleNamespace

from nanospeechrl.builtin import corpus as builtin
from nanospeechrl.builtin.corpus import CorpusConfig
from nanospeechrl.asr.corpora import load_data


def config(**kw):
    return SimpleNamespace(**{"data": "builtin", "task": "asr", "eval": "", "seed": 0, "skip_bad": False,
                              "rl_holdout": 0, "n_train": 10, "n_sqa": 10, "n_ast": 10, "n_test": 3,
                              "n_test_understanding": 3, "splits": "", "long_frac": 0.1, **kw})


def test_manifest_holds_out_a_seeded_random_subset(tmp_path):
    for i in range(10):
        (tmp_path / f"u{i}.wav").write_bytes(b"")  # the manifest reader checks that audio exists
    rows = [json.dumps({"audio": f"u{i}.wav", "text": f"utterance {i}"}) for i in range(10)]
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.jsonl").write_text(rows[0] + "\n")
    cfg = config(data=str(tmp_path / "train.jsonl"), eval=f"dev={tmp_path / 'dev.jsonl'}")
    train, rl, *_ = load_data(cfg)
    assert [ex.text for ex in train] == [f"utterance {i}" for i in range(10)] and rl == []  # default: as listed
    train, rl, *_ = load_data(config(**{**vars(cfg), "rl_holdout": 3}))
    texts, held = [ex.text for ex in train], [ex.text for ex in rl]
    assert len(texts) == 7 and len(held) == 3 and sorted(texts + held) == sorted(f"utterance {i}" for i in range(10))
    assert held != [f"utterance {i}" for i in range(7, 10)]  # a random subset, not the tail (LibriSpeech: speakers)
    assert [ex.text for ex in load_data(config(**{**vars(cfg), "rl_holdout": 3}))[1]] == held  # seeded
    assert len(load_data(config(**{**vars(cfg), "rl_holdout": 100}))[1]) == 5  # never more than half


def test_builtin_hold_out_leaves_the_sft_set_as_it_was():
    """The built-in corpus is built rl_holdout utterances larger and the extra ones are held out,
    so stages 0-1 see the same utterances (texts, voices, noise) whatever --rl-holdout is."""
    small = builtin._jobs(CorpusConfig(n_train=10, n_dev=2, n_test=2, n_test_accent=2, n_test_long=1))["train"]
    large = builtin._jobs(CorpusConfig(n_train=14, n_dev=2, n_test=2, n_test_accent=2, n_test_long=1))["train"]
    n = builtin.sft_rows(CorpusConfig(), 10)
    assert n == len(small) == 11  # 10 sentences and one long row
    assert large[:n] == small
    assert {job["text"] for job in large[n:]}.isdisjoint(job["text"] for job in small)


def test_unknown_split_fails_before_any_corpus_is_built():
    with pytest.raises(SystemExit, match=r"no built-in split asr/tset; choose from asr/dev, asr/test"):
        load_data(config(task="mix", splits="sqa/dev,asr/tset"))
