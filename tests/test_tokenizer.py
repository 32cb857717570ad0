import pytest

from nanospeechrl.tokenizer import SPECIAL_TOKENS, Tokenizer

CORPUS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "she said it's 42 degrees, isn't it?",
    "one two three four five six seven eight nine ten",
] * 20


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS, vocab_size=300)


def test_special_ids_fixed(tok):
    for i, name in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(name) == i
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.task_id("asr") == 3 and tok.task_id("tts") == 6


def test_unknown_task_lists_valid(tok):
    with pytest.raises(ValueError, match="asr, sqa, ast, tts"):
        tok.task_id("diarize")


@pytest.mark.parametrize("text", [
    "the cat sat on the mat",
    "it's 3.14159 -- really?!  (double  spaces)",
    "café naïve Zürich",
    "日本語のテキスト",  # CJK never seen in training
    "emoji 😀🎉 and ✓",
    " leading and trailing ",
    "tabs\tand\nnewlines",
])
def test_round_trip_exact(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(i >= len(SPECIAL_TOKENS) for i in ids)  # encode never emits specials


def test_empty_and_type(tok):
    assert tok.encode("") == []
    assert tok.decode([]) == ""
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


def test_literal_special_text_is_plain(tok):
    # "<eos>" typed in data must not become the control token; it round-trips as text.
    ids = tok.encode("stop <eos> here <pad>")
    assert tok.eos_id not in ids and tok.pad_id not in ids
    assert tok.decode(ids) == "stop <eos> here <pad>"


def test_decode_skips_specials(tok):
    ids = [tok.bos_id, tok.task_id("asr")] + tok.encode("the cat") + [tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "the cat"


def test_merges_compress(tok):
    text = "the cat sat on the mat"
    assert len(tok.encode(text)) < len(text.encode("utf-8"))


def test_vocab_size_and_extra_special():
    t = Tokenizer.train(CORPUS, vocab_size=280, extra_special=["<spk>"])
    assert t.vocab_size <= 280
    assert t.token_to_id("<spk>") == len(SPECIAL_TOKENS)
    assert t.token_to_id("<eos>") == 2
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(CORPUS, vocab_size=100)


def test_deterministic_training():
    a = Tokenizer.train(CORPUS, vocab_size=300)
    b = Tokenizer.train(CORPUS, vocab_size=300)
    text = "the quick cat jumps over 42 mats"
    assert a.encode(text) == b.encode(text)
    assert a.hf.to_str() == b.hf.to_str()


def test_save_load_round_trip(tok, tmp_path):
    path = tok.save(tmp_path)
    assert path == tmp_path / "tokenizer.json"
    loaded = Tokenizer.load(tmp_path)
    text = "it's 42 <eos> café 😀"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.eos_id not in loaded.encode(text)  # behaviour survives save/load
    assert loaded.vocab_size == tok.vocab_size
    with pytest.raises(FileNotFoundError, match="missing"):
        Tokenizer.load(tmp_path / "missing")
