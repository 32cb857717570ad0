"""
Real-time factor of the built-in synthesiser: seconds of 16 kHz speech made per second of
wall time, per core. Target: >= 50x real time per core.

    python bench/synth.py
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from nanospeechrl.builtin import synth  # noqa: E402
from nanospeechrl.builtin.grammar import split_texts  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    texts = split_texts(0, 400, 0, 0, 0, 0)["train"]
    voices = synth.voices()
    jobs = [dict(text=t, voice=voices[(i * 37) % len(voices)], rate=140 + i % 60) for i, t in enumerate(texts)]
    synth.synthesize("warm up", "en-us")

    t0 = time.perf_counter()  # one core, one process
    seconds = sum(len(synth.synthesize(**job)) for job in jobs[:100]) / 16000
    rtf_one = seconds / (time.perf_counter() - t0)
    print(f"single process: {seconds:.0f} s of speech, {rtf_one:.0f}x real time")

    processes = os.cpu_count()
    t0 = time.perf_counter()  # all cores, fresh process per shard (the corpus builder's path)
    seconds = sum(len(w) for w in synth.synthesize_many(jobs, processes)) / 16000
    elapsed = time.perf_counter() - t0
    print(f"parallel, {processes} processes: {seconds:.0f} s of speech in {elapsed:.1f} s, "
          f"{seconds / elapsed:.0f}x real time, {seconds / elapsed / processes:.0f}x per core "
          f"(includes starting the worker processes)")
    print("real-time factor per core (target >= 50):")
    print(f"{min(rtf_one, seconds / elapsed / processes):.1f}")
