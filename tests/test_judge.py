"""The TTS evaluation's judges (tts/judge.py): which judge is the default, and the refusal of a
judge whose training text holds a TTS dev or test text."""
import json

import pytest
import torch

from nanospeechrl.asr.corpora import builtin_corpora
from nanospeechrl.builtin.corpus import CorpusConfig, _items
from safetensors.torch import save_file

from nanospeechrl import audio
from nanospeechrl.report import tts_tables
from nanospeechrl.tts.judge import check_unseen, default_judge, training_texts


def asr_config(**train):
    """The parts of a train_asr.py checkpoint config that training_texts reads."""
    base = dict(task="asr", data="builtin", seed=0, n_train=30, n_test=6, n_test_understanding=4, n_sqa=5, n_ast=5,
                rl_holdout=0, long_frac=0.1)
    return {"train": {**base, **train}, "llm": {}}


def write_config(path, config):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file({"w": torch.zeros(1)}, path / "model.safetensors")  # what makes a checkpoint directory
    return path


def test_builtin_asr_and_tts_corpora_of_one_seed_share_no_dev_or_test_text(tmp_path):
    judge = write_config(tmp_path / "asr" / "stage1", asr_config())
    tts = _items(CorpusConfig(task="tts", seed=0, n_train=30, n_dev=6, n_test=6, n_test_accent=0, n_test_long=0))
    held_out = [x["text"] for split in ("dev", "test", "test_seen") for x in tts[split]]
    check_unseen(judge, held_out)  # passes: the ASR train split never holds its (= the TTS) dev / test sentences
    texts = training_texts(judge)
    corpus = builtin_corpora(type("C", (), asr_config()["train"]))[0][1]
    assert set(x["text"] for x in _items(corpus)["train"] if x["text"]) <= set(texts)
    with pytest.raises(SystemExit, match="holds 1 of the 13 TTS dev and test texts"):
        check_unseen(judge, held_out + [texts[3]])  # a sentence it trained on


def test_a_manifest_judge_is_checked_by_its_own_texts(tmp_path):
    manifest = tmp_path / "train.jsonl"
    audio.save(tmp_path / "a.wav", 0.1 * torch.randn(8000))
    manifest.write_text(json.dumps({"audio": "a.wav", "text": "Good morning. Yes or no."}) + "\n")
    judge = write_config(tmp_path / "judge", asr_config(data=str(manifest)))
    check_unseen(judge, ["the cat sat"])
    with pytest.raises(SystemExit, match="e.g. 'yes or no'"):  # a sentence inside a longer row counts
        check_unseen(judge, ["the cat sat", "yes or no"])


def test_the_default_judge_is_train_asr_speech_llm_beside_the_run(tmp_path):
    assert default_judge(tmp_path / "tts") == ""
    stage1 = write_config(tmp_path / "asr" / "stage1", asr_config())
    assert default_judge(tmp_path / "tts") == ""  # not finished: no state.json
    (stage1 / "state.json").write_text("{}")
    assert default_judge(str(tmp_path / "tts") + "/") == str(stage1)
    write_config(tmp_path / "asr" / "stage0", {"train": {}, "encoder": {}})
    (tmp_path / "asr" / "stage0" / "state.json").write_text("{}")
    assert default_judge(tmp_path / "other" / "tts") == ""


def test_report_card_shows_the_other_judges_column_only_where_one_scored():
    row = {"stage": "eval", "split": "training voices", "model": "(a) real audio", "judge": "speech LLM",
           "wer": 0.1, "cer": 0.05, "similarity": 0.8, "duration_ratio": 1.0}
    one = "\n".join(tts_tables([row]))
    assert "other judge CER" not in one and "| (a) real audio | 10.0% | 5.0% | 0.800 | 1.00 |" in one
    two = "\n".join(tts_tables([{**row, "ctc/cer": 0.12}]))
    assert "| CER | other judge CER |" in two and "| 5.0% | 12.0% | 0.800 |" in two
