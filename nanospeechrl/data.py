"""Utterance records, JSONL manifests, the LibriSpeech reader, a log-mel feature cache and
length-bucketed batching (an endless, resumable stream of padded batches for training).

Loaders return (examples, skipped). With skip_bad=False the first bad input raises an error
naming the file and line; with skip_bad=True it is dropped and counted in `skipped`, a
Counter keyed by reason ("bad_json", "missing_field", "bad_field", "empty_text",
"missing_audio", "malformed_line", "bad_audio", "too_long"), so the caller can report it.
"""
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from nanospeechrl import audio
from nanospeechrl.devices import autocast
from nanospeechrl.tokenizer import TASKS

KNOWN_FIELDS = ("audio", "text", "task", "prompt", "transcript", "speaker", "duration")
MAX_DURATION = 24 * 3600.0  # seconds: a manifest 'duration' beyond a day is a broken line, not audio


class DataError(ValueError):
    """Bad dataset input; the message starts with the file (and line) at fault."""


@dataclass
class Example:
    audio: str  # absolute path of the audio file
    text: str  # target text: transcript, answer or translation
    task: str = "asr"  # one of tokenizer.TASKS
    prompt: str = ""  # task prompt, e.g. the question for sqa
    transcript: str = ""  # the words spoken, when text is not (sqa, ast): stage 0's CTC target
    speaker: str = ""  # speaker id (for speaker-disjoint splits and TTS)
    duration: float | None = None  # seconds, when the manifest says so
    source: str = ""  # "file:line" it was read from, for error messages
    extra: dict = field(default_factory=dict)  # other manifest fields, written back by write_manifest

    @property
    def no_speech(self) -> bool:
        """A clip with nothing said (silence, noise): its transcript is empty by design ("no_speech": true)."""
        return self.extra.get("no_speech") is True

    @property
    def spoken(self) -> str:
        """The words spoken in the audio ('' when unknown): the transcript, or an asr / tts example's text."""
        return self.transcript or (self.text if self.task in ("asr", "tts") else "")


class _BadLine(Exception):
    """One unusable input line; `reason` is its key in the skipped Counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _read_lines(path, parse, skip_bad: bool, skip_empty: bool = False):
    """Run parse(line, source) on every non-blank line of `path`, collecting the Examples."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")  # not splitlines(): JSON strings may hold U+2028 and friends
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    examples, skipped = [], Counter()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        source = f"{path}:{lineno}"
        try:
            examples.append(parse(line, source))
        except _BadLine as e:
            if not (skip_bad or (skip_empty and e.reason == "empty_text")):
                raise DataError(f"{source}: {e}") from None
            skipped[e.reason] += 1
    if not examples:
        why = f" (skipped: {dict(skipped)})" if skipped else ""
        raise DataError(f"{path}: no usable examples{why}")
    return examples, skipped


def read_manifest(path, skip_bad=False, check_audio_exists=True, skip_empty=False):
    """JSONL manifest -> (list[Example], skipped Counter). Audio paths are relative to the manifest.
    skip_empty: skip and count blank transcripts even when other bad lines raise."""
    base = Path(path).parent

    def parse(line, source):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise _BadLine("bad_json", f"not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(row, dict):
            raise _BadLine("bad_json", f"expected a JSON object, got {type(row).__name__}")
        for key in ("audio", "text"):
            if key not in row:
                raise _BadLine("missing_field", f"missing field {key!r}")
        for key in ("audio", "text", "task", "prompt", "transcript"):
            if key in row and not isinstance(row[key], str):
                raise _BadLine("bad_field", f"field {key!r} must be a string, got {type(row[key]).__name__}")
        task = row.get("task", "asr")
        if row.get("no_speech") is True and (row["text"].strip() or task != "asr"):
            raise _BadLine("bad_field", "a 'no_speech' row is an asr row with an empty 'text'")
        if not row["text"].strip() and row.get("no_speech") is not True:
            raise _BadLine("empty_text", "empty transcript ('text' is blank; a clip with nothing said "
                                         "says \"no_speech\": true)")
        if task not in TASKS:
            raise _BadLine("bad_field", f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        if task == "sqa" and not row.get("prompt", "").strip():
            raise _BadLine("missing_field", "task 'sqa' needs a 'prompt' (the question about the audio)")
        duration = row.get("duration")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                     or not 0 <= duration <= MAX_DURATION):
            raise _BadLine("bad_field", f"field 'duration' must be a number of seconds in 0..{MAX_DURATION}, "
                                        f"got {duration!r}")
        wav = os.path.abspath(base / row["audio"])  # an absolute "audio" path is kept as is
        if check_audio_exists and not os.path.isfile(wav):
            raise _BadLine("missing_audio", f"audio file not found: {wav}")
        return Example(audio=wav, text=row["text"], task=task, prompt=row.get("prompt", ""),
                       transcript=row.get("transcript", ""),
                       speaker=str(row.get("speaker", "")),  # numeric ids (LibriSpeech-style) become strings
                       duration=None if duration is None else float(duration), source=source,
                       extra={k: v for k, v in row.items() if k not in KNOWN_FIELDS})

    return _read_lines(path, parse, skip_bad, skip_empty)


def write_manifest(path, examples) -> None:
    """Write examples as JSONL with audio paths relative to the manifest's directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = os.path.abspath(path.parent)
    lines = []
    for ex in examples:
        row = {"audio": os.path.relpath(ex.audio, base), "text": ex.text, "task": ex.task}
        if ex.prompt:
            row["prompt"] = ex.prompt
        if ex.transcript:
            row["transcript"] = ex.transcript
        if ex.speaker:
            row["speaker"] = ex.speaker
        if ex.duration is not None:
            row["duration"] = ex.duration
        row.update({k: v for k, v in ex.extra.items() if k not in KNOWN_FIELDS})
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader never sees half a manifest


def read_librispeech(root, skip_bad=False, skip_empty=False):
    """LibriSpeech-style tree (root/**/SPK-CH.trans.txt + SPK-CH-UTT.flac) -> (examples, skipped)."""
    root = Path(root)
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise DataError(f"{root}: no *.trans.txt files below it (not a LibriSpeech-style directory)")
    examples, skipped = [], Counter()
    for trans in transcripts:
        def parse(line, source, folder=trans.parent):
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise _BadLine("malformed_line", f"expected 'UTTERANCE-ID TRANSCRIPT', got {line.strip()!r}")
            utt, text = parts
            flac = folder / f"{utt}.flac"
            if not flac.is_file():
                raise _BadLine("missing_audio", f"audio file not found: {flac}")
            # LibriSpeech is upper case; lower-casing gives the BPE tokenizer one spelling per
            # word (metrics normalise case anyway, so no score depends on this)
            return Example(audio=os.path.abspath(flac), text=text.lower(), speaker=utt.split("-")[0], source=source)

        exs, skips = _read_lines(trans, parse, skip_bad, skip_empty)
        examples += exs
        skipped += skips
    return examples, skipped


def load_examples(spec, skip_bad=False, skip_empty=False):
    """A .jsonl manifest or a LibriSpeech-style directory -> (examples, skipped)."""
    p = Path(spec)
    if p.is_file() and p.suffix == ".jsonl":
        return read_manifest(p, skip_bad, skip_empty=skip_empty)
    if p.is_dir() and next(p.rglob("*.trans.txt"), None) is not None:
        return read_librispeech(p, skip_bad, skip_empty)
    what = "a file without the .jsonl suffix" if p.is_file() else \
        "a directory with no *.trans.txt below it" if p.is_dir() else "not found"
    raise DataError(f"{p}: {what}; expected a .jsonl manifest or a LibriSpeech-style directory")


# ----------------------------------------------------------------------------- feature cache

def _cache_key(examples) -> str:
    """Hash of the frontend constants and each file's path, size and mtime: any change recomputes."""
    h = hashlib.sha256()
    constants = {k: v for k, v in vars(audio).items() if k.isupper() and isinstance(v, (int, float, str))}
    h.update(json.dumps(constants, sort_keys=True).encode())
    for ex in examples:
        try:
            st = os.stat(ex.audio)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"  # load() will report it
        h.update(f"{ex.audio}\0{stamp}\n".encode())
    return h.hexdigest()[:24]


def _compute(examples, skip_bad: bool):
    """Log-mel for every example -> (feats list of (T, N_MELS), errors list: "" when fine)."""
    feats, errors = [], []
    threads = torch.get_num_threads()
    # one utterance's FFT is too small to split: intra-op threads only spin and contend
    # (measured 30x slower with 2 threads than with 1 on a busy 2-core machine)
    torch.set_num_threads(1)
    try:
        for ex in examples:
            try:
                feats.append(audio.log_mel(audio.load(ex.audio)))  # (T, N_MELS)
                errors.append("")
            except audio.AudioError as e:
                if not skip_bad:  # fail before spending minutes on the rest
                    raise audio.AudioError(f"{e} (listed at {ex.source})") from None
                feats.append(torch.zeros(0, audio.N_MELS))
                errors.append(str(e))
    finally:
        torch.set_num_threads(threads)
    return feats, errors


def features(examples, cache_dir=None, skip_bad=False, max_frames=None):
    """Log-mel features, computed once and kept in one .pt file in cache_dir.

    Returns (feats, kept, skipped): feats[i] (T_i, N_MELS) belongs to kept[i]; unreadable audio
    raises AudioError (or counts "bad_audio"), more than max_frames frames raises DataError
    (or counts "too_long"). Errors name the audio file and the manifest line it came from.
    """
    if not examples:
        return [], [], Counter()
    cache = Path(cache_dir) / f"feats-{_cache_key(examples)}.pt" if cache_dir is not None else None
    blob = None
    if cache is not None and cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
        except Exception:  # unreadable cache (e.g. from an older torch): just recompute it
            blob = None
    if blob is not None:
        feats, errors = list(torch.split(blob["feats"], blob["lens"].tolist())), blob["errors"]
    else:
        feats, errors = _compute(examples, skip_bad)
        if cache is not None:
            # one concatenated tensor saves and loads far faster than thousands of small ones
            blob = {"feats": torch.cat(feats), "lens": torch.tensor([len(f) for f in feats]), "errors": errors}
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.name + ".tmp")
            torch.save(blob, tmp)
            os.replace(tmp, cache)  # atomic: a killed run never leaves half a cache file
    kept_feats, kept, skipped = [], [], Counter()
    for ex, feat, error in zip(examples, feats, errors):
        if error:  # only reachable from a cache written with skip_bad=True
            if not skip_bad:
                raise audio.AudioError(f"{error} (listed at {ex.source})")
            skipped["bad_audio"] += 1
        elif max_frames is not None and len(feat) > max_frames:
            if not skip_bad:
                raise DataError(f"{ex.audio}: {len(feat)} frames is more than max_frames={max_frames} "
                                f"(listed at {ex.source})")
            skipped["too_long"] += 1
        else:
            kept_feats.append(feat)
            kept.append(ex)
    return kept_feats, kept, skipped


# ----------------------------------------------------------------------------- batching

# Batches are padded to a multiple of this many frames: few distinct shapes, so the oneDNN
# kernels that bf16 autocast runs on a CPU, compiled once per shape, are reused (bench/train_step.py).
SHAPE_MULTIPLE = 32


def bucket_batches(lengths, max_frames_per_batch=None, batch_size=None, shuffle=True, seed=0, multiple=1):
    """Indices grouped into batches of similar length -> list[list[int]], every index exactly once.

    Sorted by length, then cut greedily so that padded size max_len * n <= max_frames_per_batch
    (short utterances make big batches) and n <= batch_size. A single item longer than the
    budget gets a batch of its own. With shuffle, equal lengths are tie-broken randomly and
    the batch order is shuffled, both deterministically in `seed` (pass seed + epoch).
    Lengths count rounded up to a multiple of `multiple`, as collate(multiple=...) pads them.
    """
    if max_frames_per_batch is None and batch_size is None:
        raise ValueError("bucket_batches needs max_frames_per_batch or batch_size")
    lengths = [-(-int(n) // multiple) * multiple for n in lengths]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist() if shuffle else list(range(len(lengths)))
    order.sort(key=lengths.__getitem__)  # stable: ties keep the random order
    batches, batch = [], []
    for i in order:  # ascending, so the newest item is always the batch's longest
        too_many = batch_size is not None and len(batch) + 1 > batch_size
        too_big = max_frames_per_batch is not None and lengths[i] * (len(batch) + 1) > max_frames_per_batch
        if batch and (too_many or too_big):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    if shuffle:
        batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def collate(feats, token_ids=None, pad_id=0, multiple=1):
    """feats: list of (T_i, N_MELS); token_ids: list of id lists, or None -> dict of padded batch
    tensors: feats (B, T, N_MELS) zero-padded to T = T_max rounded up to a multiple of
    `multiple`, feat_lens (B,), and with token_ids also tokens (B, L_max) pad_id-padded, token_lens (B,)."""
    if token_ids is None:
        token_ids = [[]] * len(feats)
    if len(feats) != len(token_ids) or not feats:
        raise ValueError(f"collate needs equal, non-zero numbers of features and token lists, "
                         f"got {len(feats)} and {len(token_ids)}")
    dims = {tuple(f.shape[1:]) for f in feats}
    if len(dims) != 1 or any(f.dim() != 2 for f in feats):
        raise ValueError(f"collate expects (T, n_mels) features of one width, got shapes "
                         f"{sorted({tuple(f.shape) for f in feats})[:4]}")
    tokens = [torch.tensor(t, dtype=torch.long) for t in token_ids]
    return {
        "feats": F.pad(pad_sequence([f.float() for f in feats], batch_first=True),
                       (0, 0, 0, -max(len(f) for f in feats) % multiple)),  # (B, T, N_MELS)
        "feat_lens": torch.tensor([len(f) for f in feats], dtype=torch.long),  # (B,)
        "tokens": pad_sequence(tokens, batch_first=True, padding_value=pad_id),  # (B, L_max)
        "token_lens": torch.tensor([len(t) for t in tokens], dtype=torch.long),  # (B,)
    }


def pad_ids(id_lists, device):
    """Id lists -> (ids (B, L_max) long, 0-padded; lengths (B,)) on device. An empty list is one id 0
    (a model needs a frame to read)."""
    lengths = torch.tensor([max(1, len(t)) for t in id_lists], device=device)
    ids = torch.zeros(len(id_lists), int(lengths.max()), dtype=torch.long, device=device)
    for i, t in enumerate(id_lists):
        ids[i, :len(t)] = torch.tensor(t, dtype=torch.long)
    return ids, lengths


def crops(feats, idx, size, generator):
    """A random window of at most `size` frames of each of feats[idx] -> a list of (<= size, D)."""
    out = []
    for i in idx:
        start = int(torch.randint(0, max(1, len(feats[i]) - size + 1), (1,), generator=generator))
        out.append(feats[i][start:start + size])
    return out


def batches_forever(lengths, cursor, seed, max_frames=None, batch_size=None):
    """Length-bucketed batches of indices (under max_frames padded frames, or of batch_size),
    epoch after epoch, each epoch shuffled with seed + epoch; cursor = [epoch, batch index]
    is advanced in place, so a checkpoint that saves it resumes mid-epoch."""
    while True:
        epoch_batches = bucket_batches(lengths, None if batch_size else max_frames, batch_size,
                                       seed=seed + cursor[0], multiple=SHAPE_MULTIPLE)
        while cursor[1] < len(epoch_batches):
            cursor[1] += 1
            yield epoch_batches[cursor[1] - 1]
        cursor[0], cursor[1] = cursor[0] + 1, 0


def to_batch(feats, idx, device, augment=False, generator=None, token_ids=None):
    """Padded batch of feats[idx] (SpecAugment-ed if asked) and token_ids, on device: collate()'s dict."""
    b = collate([feats[i] for i in idx], token_ids, multiple=SHAPE_MULTIPLE)
    if augment:
        b["feats"] = audio.spec_augment(b["feats"], generator=generator)
    return {k: v.to(device) for k, v in b.items()}


@torch.no_grad()
def map_batches(fn, feats, batch_size, device, desc=None):
    """[fn(batch)...] over feats (a list of (T, D)) in length-sorted padded batches (to_batch's
    dict, under bf16 autocast where it is on); fn returns one result per row. -> results in input order."""
    out = [None] * len(feats)
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]))
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, leave=False) if desc else starts:
        idx = order[start:start + batch_size]
        with autocast(device):
            for i, result in zip(idx, fn(to_batch(feats, idx, device))):
                out[i] = result
    return out
