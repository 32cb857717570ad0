import os
import re

import pytest
import torch

from nanospeechrl import audio
from nanospeechrl.tts.samples_page import LEGEND, align, mark_errors, missing_files, write_page, write_sample

SYSTEMS = ["real", "Griffin-Lim", "SFT"]
TEXTS = ["The red cat sat.", "A dog ran home <b>& fast", "We met Anna in town."]
HYPS = {"The red cat sat.": "the bed cat sat down",  # a substitution and an insertion
        "A dog ran home <b>& fast": "a dog home b fast",  # a deletion ("ran")
        "We met Anna in town.": "we met anna in town"}


def sample(gen, seconds=0.1):
    return 0.1 * torch.randn(int(audio.SAMPLE_RATE * seconds), generator=gen), torch.randn(12, 80, generator=gen)


def build(folder, texts=TEXTS):
    """A page of two voice sets; "real" written by write_sample (paths in), the rest passed as tensors."""
    gen = torch.Generator().manual_seed(0)
    sets = {}
    for set_name in ("training voices", "held-out voices"):
        items = []
        for i, text in enumerate(texts):
            systems = {}
            for name in SYSTEMS:
                wav, mel = sample(gen)
                if name == "real":
                    wav, mel = write_sample(folder, f"{set_name[:4]}-{i}-real", wav, mel)
                systems[name] = {"wav": wav, "mel": mel, "hyp": HYPS[text] if name == "SFT" else text}
            items.append({"text": text, "systems": systems})
        sets[set_name] = items
    return write_page(folder, "TTS <samples>", sets, SYSTEMS, intro="judge: a CTC ASR")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    path = build(str(tmp_path_factory.mktemp("samples")))
    return path, open(path, encoding="utf-8").read()


def test_every_reference_exists_and_one_player_per_item_and_system(page):
    path, text = page
    assert missing_files(path) == []
    assert text.count("<audio") == 2 * len(TEXTS) * len(SYSTEMS)
    assert text.count("<img") == 2 * len(TEXTS) * len(SYSTEMS)
    srcs = re.findall(r'src="([^"]+)"', text)
    assert srcs and not any(os.path.isabs(s) for s in srcs)  # relative: the folder can be moved or copied
    assert all(open(os.path.join(os.path.dirname(path), s), "rb").read(4) in (b"RIFF", b"\x89PNG") for s in srcs)


def test_error_marks_of_a_known_example():
    assert align("the red cat sat", "the bed cat sat down") == [
        ("equal", "the", "the"), ("sub", "red", "bed"), ("equal", "cat", "cat"), ("equal", "sat", "sat"),
        ("ins", None, "down")]
    marked = mark_errors("the red cat sat", "the bed cat sat down")
    assert marked.count('class="sub"') == 1 and re.search(r'class="sub"[^>]*>bed<span class="was">red<', marked)
    assert re.findall(r"<ins>(.*?)</ins>", marked) == ["down"] and "<del>" not in marked
    assert re.findall(r"<del>(.*?)</del>", mark_errors("a dog ran home", "a dog home")) == ["ran"]
    assert mark_errors("", "hello there").count("<ins>") == 2  # nothing said: every word heard is an error


def test_page_marks_errors_and_scores_per_item(page):
    text = page[1].split(LEGEND)[1]  # the legend shows one mark of each kind
    # each set: SFT's rows hold one substitution, one insertion, one deletion; "real" rows none
    assert text.count('<span class="sub"') == 2 and text.count("<ins>") == 2 and text.count("<del>") == 2
    assert "WER 50% (2/4)" in text  # the red cat sat -> the bed cat sat down
    assert "WER 0% (0/5) &middot; CER 0%" in text


def test_text_is_escaped(page):
    _, text = page
    assert "A dog ran home &lt;b&gt;&amp; fast" in text and "<b>&" not in text
    assert "<title>TTS &lt;samples&gt;</title>" in text


def test_missing_files_reports_a_deleted_file(tmp_path):
    path = build(str(tmp_path), texts=TEXTS[:1])
    assert missing_files(path) == []
    os.remove(tmp_path / "trai-0-real.png")
    os.remove(tmp_path / "held-out-voices-0-sft.wav")
    assert missing_files(path) == ["trai-0-real.png", "held-out-voices-0-sft.wav"]
