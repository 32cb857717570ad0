"""
The built-in speech corpus: text from grammar.py (asr) or tasks.py (sqa, ast) spoken by eSpeak NG
voices (synth.py), with random rate, pitch, gain and background noise, written as JSONL
manifests + 16-bit WAV files.

    root = build_corpus(CorpusConfig())             # data/builtin-<hash>/{train,dev,...}.jsonl
    root = build_corpus(CorpusConfig(task="sqa"))   # spoken QA: passage audio, question prompt, answer

Splits (voice = "<accent>+<variant>", see synth.py):
    train        training accents x training variants
    dev, test    training accents x held-out variants   (voices never seen in training)
    test_accent  the held-out accent x training variants (an accent never seen in training)
    test_long    like test, 20-30 s passages of several sentences (asr only; where speech LLMs hallucinate)
    test_noisy   the test sentences again, other held-out voices, in a room with noise or babble at
                 0-15 dB SNR, some band-limited (asr only; augment.py)
    no_speech    silence and noise, nothing said: the transcript must be empty (asr only)
    dev_long, dev_noisy  test_long and test_noisy made of the dev sentences (asr only): where RL
                 settings are chosen, so that nothing is chosen on a test split
    test_seen    the test sentences spoken by training voices (tts only: zero-shot vs seen voices)
No sentence of a dev/test split occurs in train (grammar.split_texts guarantees it). The asr train
split also holds, interleaved so that its first n rows are the same whatever its size: long rows
(2-8 training sentences in one voice, up to 30 s), degraded rows (a room, noise or babble down to
0 dB SNR, band limits), and no-speech rows (silence or noise, an empty transcript).
The directory name holds a hash of the config: the same config reuses the built corpus.
"""
import glob
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from nanospeechrl import augment
from nanospeechrl.builtin import synth, tasks
from nanospeechrl.audio import SAMPLE_RATE, save
from nanospeechrl.builtin.grammar import passage, sentence, split_texts

SPLITS = ["train", "dev", "test", "test_accent", "test_long", "test_noisy", "no_speech", "dev_long", "dev_noisy"]
# tts: the asr sentences; test_seen speaks the test sentences again with training voices
TASK_SPLITS = {"asr": SPLITS, "sqa": SPLITS[:4], "ast": SPLITS[:4], "tts": SPLITS[:3] + ["test_seen"]}
CORPUS_VERSION = 4  # bump when the rendering below changes, so old corpora are not reused


@dataclass
class CorpusConfig:
    task: str = "asr"                  # asr, sqa (spoken QA), ast (speech translation, English -> Spanish) or tts
    seed: int = 0                      # everything (texts, voices, noise) is deterministic in it
    n_train: int = 4000                # utterances per split ...
    n_dev: int = 200
    n_test: int = 200
    n_test_accent: int = 200
    n_test_long: int = 40
    test_accent: str = "en-029"        # accent heard only in test_accent
    n_heldout_variants: int = 12       # voice variants heard only in dev/test/test_long
    rate: tuple = (140, 200)           # speaking rate range, words per minute
    pitch: tuple = (25, 75)            # eSpeak pitch range (0-99)
    gain_db: tuple = (-15.0, 0.0)      # peak level range, dB below full scale
    snr_db: tuple = (10.0, 40.0)       # signal-to-noise ratio range of additive noise
    long_seconds: tuple = (20.0, 30.0)  # duration range of test_long utterances
    include_odd: bool = False          # also use the odd (whisper, robot, ...) variants
    n_test_noisy: int = 200            # test_noisy utterances (asr)
    n_no_speech: int = 100             # no_speech eval clips (asr)
    long_frac: float = 0.1             # asr train: long rows added, per single-sentence row
    degrade_frac: float = 0.3          # asr train: share of rows degraded (room, noise, babble, band)
    no_speech_frac: float = 0.02       # asr train: silence / noise rows added, per single-sentence row


def voice_pools(cfg):
    """(train_variants, heldout_variants, train_accents), deterministic in cfg.seed."""
    if cfg.test_accent not in synth.ACCENTS:
        raise ValueError(f"test_accent {cfg.test_accent!r} is not one of {synth.ACCENTS}")
    variants = [v for v in synth.variants() if cfg.include_odd or v not in synth.ODD_VARIANTS]
    random.Random(cfg.seed).shuffle(variants)
    heldout, train = sorted(variants[:cfg.n_heldout_variants]), sorted(variants[cfg.n_heldout_variants:])
    return train, heldout, [a for a in synth.ACCENTS if a != cfg.test_accent]


def corpus_dir(cfg, root="data"):
    key = json.dumps({"version": CORPUS_VERSION, **asdict(cfg)}, sort_keys=True)
    return os.path.join(root, "builtin-" + hashlib.sha1(key.encode()).hexdigest()[:10])


def _items(cfg):
    """{split: [{"text": target, "prompt": ..., "transcript": the words spoken if not text,
    "kind": long | no_speech for the asr train rows that are}]}."""
    if cfg.task not in TASK_SPLITS:
        raise ValueError(f"unknown corpus task {cfg.task!r}; choose from {', '.join(TASK_SPLITS)}")
    if cfg.task in ("sqa", "ast"):
        return tasks.split_task_texts(cfg.task, cfg.seed, cfg.n_train, cfg.n_dev, cfg.n_test, cfg.n_test_accent)
    texts = split_texts(cfg.seed, cfg.n_train, cfg.n_dev, cfg.n_test, cfg.n_test_accent, cfg.n_test_long)
    texts["test_seen"], texts["test_noisy"], texts["no_speech"] = texts["test"], texts["test"][:cfg.n_test_noisy], []
    texts["dev_noisy"], texts["dev_long"] = texts["dev"][:cfg.n_test_noisy], _dev_passages(texts["dev"], cfg)
    items = {split: [{"text": t} for t in texts[split]] for split in TASK_SPLITS[cfg.task]}
    if cfg.task == "asr":
        items["no_speech"] = [{"text": "", "kind": "no_speech"} for _ in range(cfg.n_no_speech)]
        items["train"] = _with_extra_rows(items["train"], cfg)
    return items


def _dev_passages(dev, cfg):
    """dev_long: n_test_long passages of 55-85 words made of dev sentences (a shuffled deck, dealt
    again when it runs out), so no sentence outside dev is used up."""
    rng, deck = random.Random(f"{cfg.seed}/dev_long"), []

    def deal(_):
        if not deck:
            deck.extend(rng.sample(dev, len(dev)))
        return deck.pop()

    return [passage(rng, 55, 85, draw=deal) for _ in range(cfg.n_test_long)] if dev else []


def _with_extra_rows(rows, cfg):
    """The asr train rows with long and no-speech rows interleaved: after single row j, a long row
    when floor((j + 1) * long_frac) grows (likewise no-speech), so a prefix never depends on n_train."""
    rng, out = random.Random(f"{cfg.seed}/long"), []
    sentences = [row["text"] for row in rows]
    for j, row in enumerate(rows):
        out.append(row)
        if int((j + 1) * cfg.long_frac) > int(j * cfg.long_frac):  # sentences of rows up to j: prefix-stable
            out.append({"text": " ".join(rng.sample(sentences[:j + 1], min(j + 1, rng.randint(2, 8)))),
                        "kind": "long"})
        if int((j + 1) * cfg.no_speech_frac) > int(j * cfg.no_speech_frac):
            out.append({"text": "", "kind": "no_speech"})
    return out


def sft_rows(cfg, n):
    """How many train rows the first n sentences make (with the long and no-speech rows after them):
    the rows that stay in training whatever --rl-holdout adds after them."""
    return n + (int(n * cfg.long_frac) + int(n * cfg.no_speech_frac) if cfg.task == "asr" else 0)


def _jobs(cfg):
    """One render job (row fields, voice, prosody, noise) per utterance, per split."""
    items = _items(cfg)
    train_vars, heldout_vars, accents = voice_pools(cfg)
    pools = {"train": (accents, train_vars), "dev": (accents, heldout_vars), "test": (accents, heldout_vars),
             "test_accent": ([cfg.test_accent], train_vars), "test_long": (accents, heldout_vars),
             "test_seen": (accents, train_vars), "test_noisy": (accents, heldout_vars),
             "no_speech": (accents, heldout_vars), "dev_long": (accents, heldout_vars),
             "dev_noisy": (accents, heldout_vars)}
    seconds = {"test_long": cfg.long_seconds, "dev_long": cfg.long_seconds, **({"train": (0.0, 30.0)} if cfg.task == "asr" else {})}  # long rows
    jobs = {}
    for split in TASK_SPLITS[cfg.task]:
        rng = random.Random(f"{cfg.seed}-{split}")  # a split's voices don't depend on other splits' sizes
        split_accents, split_vars = pools[split]
        jobs[split] = []
        for i, item in enumerate(items[split]):  # row by row: a prefix of rows never depends on the rest
            job = dict(
                row={k: v for k, v in item.items() if v and k != "kind"}, text=item.get("transcript") or item["text"],
                path=f"audio/{split}/{i:06d}.wav",
                voice=f"{rng.choice(split_accents)}+{rng.choice(split_vars)}",
                rate=rng.randint(*cfg.rate), pitch=rng.randint(*cfg.pitch),
                gain_db=rng.uniform(*cfg.gain_db), snr_db=rng.uniform(*cfg.snr_db),
                noise_seed=rng.getrandbits(32), noise_color=rng.choice(["white", "pink", "brown"]),
                seconds=seconds.get(split))
            if item.get("kind") == "no_speech":  # silence (-90..-60 dB peak) or noise
                job.update(no_speech=True, seconds=rng.uniform(1.0, 8.0), row={"text": "", "no_speech": True},
                           gain_db=rng.uniform(-90.0, -60.0) if rng.random() < 0.5 else rng.uniform(-40.0, 0.0))
            elif split in ("test_noisy", "dev_noisy") or (split == "train" and cfg.task == "asr" and
                                                          rng.random() < cfg.degrade_frac):
                job["degrade"] = _conditions(rng, harsh=split != "train")
                job["babble"] = [(sentence(rng), f"{rng.choice(split_accents)}+{rng.choice(split_vars)}")
                                 for _ in range(rng.randint(2, 4))]
            jobs[split].append(job)
    return jobs


def _conditions(rng, harsh):
    """Random acoustic conditions for augment.degrade: a room (always when harsh, else half the
    time), noise or babble at 0-20 dB SNR (0-15 when harsh), band limits a quarter of the time."""
    out = {"noise": rng.choice(["white", "pink", "brown", "babble", "babble"]),
           "snr_db": rng.uniform(0.0, 15.0 if harsh else 20.0)}
    if harsh or rng.random() < 0.5:
        out.update(rt60=rng.uniform(0.2, 1.0), drr_db=rng.uniform(-5.0, 10.0))
    if rng.random() < 0.25:
        out["band"] = (rng.uniform(50.0, 400.0), rng.uniform(3000.0, 7000.0))
    return out


def _speak(job):
    """The job's text in its voice, re-spoken at a corrected rate until its duration is in
    job["seconds"] (when given) -> float64 numpy waveform."""
    rate = job["rate"]
    for _ in range(4):  # long-form: re-speak at a corrected rate until the duration fits
        wav = synth.synthesize(job["text"], job["voice"], rate, job["pitch"]).numpy().astype(np.float64)
        seconds = len(wav) / SAMPLE_RATE
        lo, hi = job["seconds"] or (0, float("inf"))
        if lo <= seconds <= hi:
            break
        rate = int(np.clip(rate * seconds / ((lo + hi) / 2), 80, 400))  # eSpeak's rate is ~linear
    else:
        raise RuntimeError(f"could not speak {job['text'][:40]!r}... within {lo}-{hi} s")
    return wav


def _render(job):
    """Speak one job (or, no_speech, make silence or noise), add noise, degrade it as the job says,
    set its peak level, write it. Runs in a worker process. -> seconds of audio."""
    rng = np.random.default_rng(job["noise_seed"])
    if job.get("no_speech"):  # colored noise at a peak of gain_db: -90..-60 dB is near silence
        wav = augment.colored_noise(int(job["seconds"] * SAMPLE_RATE), job["noise_color"], rng)
    else:
        wav = _speak(job)
        speech_power = np.mean(wav ** 2) + 1e-12
        wav = wav + augment.colored_noise(len(wav), job["noise_color"], rng) * np.sqrt(
            speech_power / 10 ** (job["snr_db"] / 10))
    if job.get("degrade"):
        babble = None
        if job["degrade"]["noise"] == "babble":  # other talkers, end to end, as long as the utterance
            babble = np.zeros(len(wav))
            for text, voice in job["babble"]:
                talker = synth.synthesize(text, voice, job["rate"], job["pitch"]).numpy().astype(np.float64)
                talker = np.resize(talker, len(wav))  # tiled or cut
                babble += talker / (talker.std() + 1e-12)
        wav = augment.degrade(torch.from_numpy(wav), job["degrade"], rng, babble).numpy()
    wav *= 10 ** (job["gain_db"] / 20) / (np.abs(wav).max() + 1e-9)  # peak at gain_db below full scale
    save(job["out"], torch.from_numpy(wav.astype(np.float32)))
    return len(wav) / SAMPLE_RATE


def build_corpus(cfg=CorpusConfig(), root="data", processes=None, verbose=True):
    """Render every split of the corpus under root, or reuse it if already built.
    Returns the corpus directory. Built in a temp dir and renamed: a kill leaves no half corpus."""
    out = corpus_dir(cfg, root)
    if os.path.exists(os.path.join(out, "config.json")):
        return out
    for stale in glob.glob(out + ".tmp-*"):  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out + f".tmp-{os.getpid()}"
    t0 = time.time()
    jobs = _jobs(cfg)
    for split in jobs:
        os.makedirs(os.path.join(tmp, "audio", split), exist_ok=True)
        for job in jobs[split]:
            job["out"] = os.path.join(tmp, job["path"])
    flat = [job for split in jobs for job in jobs[split]]
    if verbose:
        print(f"building the built-in corpus in {out}: {len(flat)} utterances ...", flush=True)
    durations = synth.parallel_map(_render, flat, processes)
    for job, seconds in zip(flat, durations):
        job["duration"] = round(seconds, 3)
    for split in jobs:
        with open(os.path.join(tmp, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for job in jobs[split]:
                row = {"audio": job["path"], **job["row"], "task": cfg.task, "speaker": job["voice"],
                       "duration": job["duration"]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    hours = sum(durations) / 3600
    with open(os.path.join(tmp, "config.json"), "w") as f:  # written last: marks a complete corpus
        json.dump({"version": CORPUS_VERSION, **asdict(cfg), "hours": round(hours, 3)}, f, indent=1)
    shutil.rmtree(out, ignore_errors=True)  # an incomplete corpus (no config.json) from a killed build
    os.replace(tmp, out)
    if verbose:
        print(f"built {hours:.2f} h of audio in {time.time() - t0:.0f} s", flush=True)
    return out
