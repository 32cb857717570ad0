"""
Built-in speech synthesiser: eSpeak NG, shipped as a library plus its data inside the
espeakng-loader wheel, called through ctypes. No downloads, no system packages.

    wav = synthesize("Hello there.", voice="en-us+f3", rate=170, pitch=55)  # (T,) float32, 16 kHz

A voice is "<accent>+<variant>": the accent picks eSpeak's English pronunciation rules
(US, RP, Scottish, Caribbean, ...), the variant its timbre (male/female formants, klatt,
breathy, ...). eSpeak keeps global state in the C library, so one process speaks one
utterance at a time; `synthesize_many` spreads work over processes, reproducibly.
"""
import ctypes
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import espeakng_loader
import numpy as np
import torch

from nanospeechrl.audio import SAMPLE_RATE, resample

# eSpeak NG's English accents (voice files under espeak-ng-data/lang/gmw/; "en" is British).
ACCENTS = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
# Variants kept out of the default voice pool: hard to understand even for people
# (whispered, croaky, robotic, echoing, distorted), so the tiny model learns speech first;
# and Storm, whose file forces the en-us accent (it would leak into the held-out accent).
ODD_VARIANTS = {"whisper", "whisperf", "croak", "Demonic", "UniRobot", "anikaRobot",
                "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
                "robosoft7", "robosoft8", "Tweaky", "kaukovalta", "klatt3", "Storm"}

# espeak_AUDIO_OUTPUT / espeak_PARAMETER / flag values from speak_lib.h
_OUTPUT_SYNCHRONOUS, _RATE, _VOLUME, _PITCH, _RANGE = 2, 1, 2, 3, 4
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    """The C library, initialised once per process; audio arrives through a callback."""

    def __init__(self):
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self.lib.espeak_Initialize(
            _OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to initialise (returned {self.sample_rate})")
        self.chunks = []
        self.callback = _CALLBACK(self._collect)  # keep a reference: ctypes must not free it
        self.lib.espeak_SetSynthCallback(self.callback)
        self.pid = os.getpid()

    def _collect(self, wav, n, events):
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = carry on synthesising

    def speak(self, text, voice, rate, pitch, pitch_range, seed):
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"unknown eSpeak voice {voice!r} (see nanospeechrl.builtin.synth.voices())")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, 100)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))  # pitch flutter etc. draw from rand()
        self.chunks = []
        data = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != 0:
            raise RuntimeError(f"eSpeak NG failed on {text!r} with voice {voice!r} (error {err})")
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


_engine = None


def _get_engine():
    global _engine
    if _engine is None or _engine.pid != os.getpid():  # a forked child needs its own state
        _engine = _Engine()
    return _engine


@lru_cache(maxsize=1)
def variants():
    """All voice variants shipped in espeak-ng-data/voices/!v (names without spaces)."""
    folder = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
    return sorted(name for name in os.listdir(folder) if " " not in name)


def voices(accents=ACCENTS, include_odd=False):
    """Every "<accent>+<variant>" voice: the built-in corpus's speakers."""
    return [f"{accent}+{v}" for accent in accents for v in variants()
            if include_odd or v not in ODD_VARIANTS]


def synthesize(text, voice="en-us", rate=170, pitch=50, pitch_range=50, seed=0):
    """Speak `text`. rate: words per minute (80-450); pitch, pitch_range: 0-99; seed:
    eSpeak's random numbers. Returns (T,) float32 in [-1, 1] at SAMPLE_RATE. Bit-exact
    reproducible only in a fresh process (see parallel_map); audibly the same always."""
    if not text.strip():
        raise ValueError("cannot synthesise empty text")
    engine = _get_engine()
    pcm = engine.speak(text, voice, rate, pitch, pitch_range, seed)
    wav = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    return resample(wav, engine.sample_rate, SAMPLE_RATE)


def _run_shard(fn_and_items):
    fn, items = fn_and_items
    torch.set_num_threads(1)  # one thread per worker process: n processes x n threads would thrash
    return [fn(x) for x in items]


def parallel_map(fn, items, processes=None, shard_size=32):
    """[fn(x) for x in items] over `processes` worker processes (default: all cores), in order.
    eSpeak keeps state between utterances in C statics (its pitch-flutter index, for one), so
    a waveform depends on what its process spoke before. For results that do not depend on
    the process count, items go in fixed shards and each shard runs in a fresh process
    forked from a server that never spoke. fn must be a module-level function."""
    shards = [(fn, items[i:i + shard_size]) for i in range(0, len(items), shard_size)]
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([fn.__module__])  # fork workers with our modules imported
    with ProcessPoolExecutor(processes or os.cpu_count(), mp_context=ctx, max_tasks_per_child=1) as ex:
        return [y for ys in ex.map(_run_shard, shards) for y in ys]


def _synthesize_job(job):
    return synthesize(**job).numpy()  # numpy pickles cheaply between processes


def synthesize_many(jobs, processes=None, shard_size=32):
    """synthesize(**job) for each dict in `jobs`, in parallel. Returns waveforms in order,
    the same whatever the number of processes."""
    return [torch.from_numpy(w) for w in parallel_map(_synthesize_job, jobs, processes, shard_size)]
