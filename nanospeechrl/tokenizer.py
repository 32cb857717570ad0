"""Byte-level BPE text tokenizer (HuggingFace `tokenizers`) with fixed special tokens.

Byte-level means the base alphabet is all 256 bytes, so any unicode string encodes
(unseen characters fall back to their UTF-8 bytes) and decode(encode(s)) == s exactly.
Special tokens have fixed ids 0..7 and are never produced by encode(): the literal
text "<eos>" in a transcript encodes as ordinary bytes, so data can't inject control tokens.
"""
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<asr>", "<sqa>", "<ast>", "<tts>", "<audio>"]
TASKS = ["asr", "sqa", "ast", "tts"]  # each task has a "<task>" prompt token
N_BYTES = 256  # size of the byte-level base alphabet


class Tokenizer:
    def __init__(self, hf: HFTokenizer):
        self.hf = hf
        # Match special tokens only via their ids, never in input text. This flag is
        # not stored in tokenizer.json, so it is set here for both train and load.
        self.hf.encode_special_tokens = True

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512, extra_special=()) -> "Tokenizer":
        special = SPECIAL_TOKENS + [s for s in extra_special if s not in SPECIAL_TOKENS]
        if vocab_size < N_BYTES + len(special):
            raise ValueError(f"vocab_size={vocab_size} is smaller than 256 bytes + "
                             f"{len(special)} special tokens")
        hf = HFTokenizer(models.BPE())  # no unk_token: every byte is in the alphabet
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special,  # added first, so they get ids 0..len(special)-1
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer)
        return cls(hf)

    @classmethod
    def load(cls, path) -> "Tokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(HFTokenizer.from_file(str(path)))

    @classmethod
    def from_pretrained(cls, directory) -> "Tokenizer":
        """A pretrained model's tokenizer.json with our special tokens (task tokens, <eos>, ...)
        added after its vocabulary where it lacks them: they keep their names, not ids 0..7."""
        hf = cls.load(directory).hf
        hf.add_special_tokens([t for t in SPECIAL_TOKENS if hf.token_to_id(t) is None])
        return cls(hf)

    def save(self, path) -> Path:
        """Write tokenizer.json to `path` (a directory or a .json file path)."""
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "tokenizer.json"
        self.hf.save(str(path))
        return path

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"Tokenizer.encode expects str, got {type(text).__name__}")
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_to_id(self, name: str) -> int:
        i = self.hf.token_to_id(name)
        if i is None:
            raise KeyError(f"unknown token {name!r}")
        return i

    def task_id(self, task: str) -> int:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        return self.token_to_id(f"<{task}>")

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()  # includes special tokens

    @property
    def pad_id(self) -> int:
        return self.token_to_id("<pad>")

    @property
    def bos_id(self) -> int:
        return self.token_to_id("<bos>")

    @property
    def eos_id(self) -> int:
        return self.token_to_id("<eos>")
