import numpy as np
import torch

from nanospeechrl import augment
from nanospeechrl.audio import SAMPLE_RATE


def tone(hz, seconds=1.0):
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    return torch.sin(2 * torch.pi * hz * t)


def band_power(wav, lo, hi):
    spectrum = np.abs(np.fft.rfft(wav.numpy())) ** 2
    f = np.fft.rfftfreq(len(wav), 1 / SAMPLE_RATE)
    return spectrum[(f >= lo) & (f < hi)].sum()


def test_room_impulse_response_decays_by_60_db_over_rt60():
    rng = np.random.default_rng(0)
    h = augment.room_impulse_response(0.5, 0.0, rng)
    tail = h[int(0.004 * SAMPLE_RATE):]
    first, last = (tail[:800] ** 2).mean(), (tail[-800:] ** 2).mean()
    assert 10 * np.log10(first / last) > 45  # the last 50 ms is ~57 dB below the first
    assert np.isclose((tail ** 2).sum(), 1.0)  # drr 0 dB: tail energy = the direct impulse's


def test_reverb_keeps_length_and_level_and_smears_in_time():
    wav = torch.zeros(SAMPLE_RATE, dtype=torch.float64)
    wav[1000] = 1.0  # a click
    out = augment.reverb(wav, 0.6, 0.0, np.random.default_rng(1))
    assert out.shape == wav.shape and torch.isclose((out ** 2).mean(), (wav ** 2).mean())
    late = (out[1000 + 1600:] ** 2).sum() / (out ** 2).sum()  # energy 100 ms after the click: the room's
    assert 0.03 < late < 0.08  # half the energy is the tail, 10 ** (-6 * 0.1 / 0.6) of it after 100 ms: 0.05
    assert (out[:1000] ** 2).sum() < 1e-12  # and nothing before it (causal)


def test_band_limit_passes_the_band_only():
    wav = tone(100) + tone(1000) + tone(6000)
    out = augment.band_limit(wav, 300.0, 3400.0)
    assert band_power(out, 900, 1100) > 0.95 * band_power(wav, 900, 1100)
    assert band_power(out, 50, 200) < 1e-4 * band_power(wav, 50, 200)
    assert band_power(out, 5500, 6500) < 1e-4 * band_power(wav, 5500, 6500)


def test_mix_hits_the_requested_snr():
    wav = tone(440)
    for snr in (0.0, 7.5, 20.0):
        noise = augment.colored_noise(len(wav) // 3, "pink", np.random.default_rng(2))  # tiled to fit
        out = augment.mix(wav, noise, snr)
        measured = 10 * np.log10((wav ** 2).mean().item() / ((out - wav) ** 2).mean().item())
        assert abs(measured - snr) < 1e-6


def test_colored_noise_slopes():
    rng = np.random.default_rng(3)
    for color, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        x = augment.colored_noise(2 ** 16, color, rng)
        f = np.fft.rfftfreq(len(x))[1:]
        p = np.abs(np.fft.rfft(x))[1:] ** 2
        fit = np.polyfit(np.log(f[100:10000]), np.log(p[100:10000]), 1)[0]
        assert abs(fit - slope) < 0.15 and abs(x.std() - 1) < 1e-6


def test_degrade_is_deterministic_in_the_rng_and_applies_each_condition():
    wav = tone(300, 0.5)
    babble = np.random.default_rng(9).standard_normal(len(wav))
    cond = {"rt60": 0.3, "drr_db": 3.0, "band": (100.0, 4000.0), "noise": "babble", "snr_db": 5.0}
    a = augment.degrade(wav, cond, np.random.default_rng(4), babble)
    b = augment.degrade(wav, cond, np.random.default_rng(4), babble)
    assert torch.equal(a, b) and not torch.allclose(a, wav, atol=0.1)
    assert torch.equal(augment.degrade(wav, {}, np.random.default_rng(4)), wav)  # no conditions: untouched
