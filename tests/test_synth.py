import pytest
import torch

from nanospeechrl.builtin import synth
from nanospeechrl.audio import SAMPLE_RATE

TEXT = "The small red boat sailed across the lake at seven in the morning."


def test_synthesize_speaks_at_16k():
    wav = synth.synthesize(TEXT, "en-us+m3", rate=170)
    assert wav.dtype == torch.float32 and wav.dim() == 1
    seconds = len(wav) / SAMPLE_RATE
    assert 2.5 < seconds < 7.0  # 13 words at 170 wpm is ~4.6 s plus a little silence
    assert 0.05 < wav.abs().max() <= 1.0
    voiced = (wav.unfold(0, 400, 160).pow(2).mean(1) > 1e-4).float().mean()  # frames with energy
    assert voiced > 0.5


def test_rate_and_pitch_change_the_audio():
    slow = synth.synthesize(TEXT, "en-us", rate=120)
    fast = synth.synthesize(TEXT, "en-us", rate=240)
    assert len(fast) < 0.7 * len(slow)  # eSpeak's rate is close to linear in words per minute
    low, high = (synth.synthesize("Hello there my friend.", "en-us+m3", pitch=p) for p in (10, 90))

    def f0(w):  # autocorrelation peak between 60 and 400 Hz, on the loudest 100 ms
        start = int(w.unfold(0, 1600, 160).pow(2).mean(1).argmax()) * 160
        x = w[start:start + 1600] - w[start:start + 1600].mean()
        lags = torch.arange(SAMPLE_RATE // 400, SAMPLE_RATE // 60)
        ac = torch.stack([(x[:-lag] * x[lag:]).sum() for lag in lags])
        return SAMPLE_RATE / lags[ac.argmax()]
    assert f0(high) > f0(low) * 1.2


def test_voices_cross_accents_and_variants():
    variants = synth.variants()
    assert len(variants) >= 90 and "m3" in variants and "f3" in variants
    default = synth.voices()
    assert len(default) == len(synth.ACCENTS) * (len(variants) - len(synth.ODD_VARIANTS & set(variants)))
    assert not any(v.endswith("+whisper") for v in default)
    assert any(v.endswith("+whisper") for v in synth.voices(include_odd=True))
    for voice in ["en-gb-scotland+f2", "en-029+klatt", "en+m1"]:  # every accent file loads
        assert len(synth.synthesize("Yes.", voice)) > 1000


def test_bad_input():
    with pytest.raises(ValueError, match="unknown eSpeak voice"):
        synth.synthesize("hello", "en-xx+nobody")
    with pytest.raises(ValueError, match="empty"):
        synth.synthesize("   ", "en-us")


def test_parallel_synthesis_is_reproducible():
    # eSpeak carries state between utterances in C statics; synthesize_many must not.
    jobs = [dict(text=f"Number {w} is the word of the day.", voice=v, rate=150 + 10 * i)
            for i, (w, v) in enumerate(zip(["one", "two", "three", "four", "five"], synth.voices()[::97]))]
    synth.synthesize("This utterance dirties the parent's state.", "en-us+f2")
    a = synth.synthesize_many(jobs, processes=2, shard_size=2)
    b = synth.synthesize_many(jobs, processes=1, shard_size=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0][:1000], a[1][:1000])
