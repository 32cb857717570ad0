"""
Acoustic conditions of real recordings that clean synthetic speech lacks: room reverberation,
competing talkers, noise down to 0 dB SNR, a band-limited channel. Waveforms are 1-D float
tensors at 16 kHz; every random choice comes from the numpy Generator passed in, so a corpus
built from a seed is the same every time.

    reverb(wav, rt60, drr_db, rng)      convolve with a synthetic room impulse response
    band_limit(wav, low_hz, high_hz)    a channel that passes only low_hz..high_hz
    colored_noise(n, color, rng)        white / pink / brown Gaussian noise
    mix(wav, noise, snr_db)             add noise (or babble) at a signal-to-noise ratio
    degrade(wav, conditions, rng, babble=None)    all of it, as a dict of conditions says

The room impulse response is the usual statistical model: a direct-path impulse, then after a
few milliseconds a tail of Gaussian noise whose energy decays by 60 dB over rt60 seconds, scaled
so the direct-to-reverberant energy ratio is drr_db.
"""
import numpy as np
import torch

from nanospeechrl.audio import SAMPLE_RATE


def room_impulse_response(rt60, drr_db, rng, predelay=0.004):
    """A synthetic RIR (numpy float64): 1 at t = 0, then an exponentially decaying noise tail."""
    n = int(rt60 * SAMPLE_RATE)
    tail = rng.standard_normal(n) * 10 ** (-3.0 * np.arange(n) / max(1, n))  # -60 dB in energy at rt60
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail ** 2) + 1e-12))  # tail energy / direct energy
    h = np.zeros(int(predelay * SAMPLE_RATE) + n)
    h[0] = 1.0
    h[-n:] += tail
    return h


def _fft_filter(x, response):
    """Multiply x's spectrum by response(freqs_hz) (zero-padded to a power of two, so no wrap-around)."""
    size = 1 << (2 * len(x) - 1).bit_length()
    spectrum = np.fft.rfft(x, size) * response(np.fft.rfftfreq(size, 1 / SAMPLE_RATE))
    return np.fft.irfft(spectrum, size)[:len(x)]


def reverb(wav, rt60, drr_db, rng):
    """wav in a room: convolved with room_impulse_response, same length and RMS as wav."""
    x = wav.double().numpy()
    h = room_impulse_response(rt60, drr_db, rng)
    size = 1 << (len(x) + len(h) - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:len(x)]
    y *= np.sqrt(np.mean(x ** 2) / (np.mean(y ** 2) + 1e-12))
    return torch.from_numpy(y).to(wav.dtype)


def band_limit(wav, low_hz, high_hz, width_hz=100.0):
    """Pass low_hz..high_hz with smooth (raised-cosine, width_hz) edges; a telephone is ~300-3400."""
    def response(f):
        rise = np.clip((f - low_hz) / width_hz + 0.5, 0, 1)
        fall = np.clip((high_hz - f) / width_hz + 0.5, 0, 1)
        return np.sin(0.5 * np.pi * rise) ** 2 * np.sin(0.5 * np.pi * fall) ** 2
    return torch.from_numpy(_fft_filter(wav.double().numpy(), response)).to(wav.dtype)


def colored_noise(n, color, rng):
    """Unit-variance Gaussian noise (numpy) with a 1/f^0 (white), 1/f (pink) or 1/f^2 (brown) power spectrum."""
    size = 1 << (n - 1).bit_length()  # a power of two: FFTs of prime-ish lengths are slow
    spectrum = np.fft.rfft(rng.standard_normal(size))
    f = np.maximum(np.fft.rfftfreq(size), 1.0 / size)
    spectrum /= f ** {"white": 0.0, "pink": 0.5, "brown": 1.0}[color]
    noise = np.fft.irfft(spectrum, size)[:n]
    return noise / (noise.std() + 1e-12)


def mix(wav, noise, snr_db):
    """wav + noise scaled to snr_db below wav's power (noise tiled or cut to wav's length)."""
    x, v = wav.double().numpy(), np.resize(np.asarray(noise, dtype=np.float64), len(wav))
    v = v * np.sqrt(np.mean(x ** 2) / (np.mean(v ** 2) + 1e-12) / 10 ** (snr_db / 10))
    return torch.from_numpy(x + v).to(wav.dtype)


def degrade(wav, conditions, rng, babble=None):
    """Apply the conditions dict (keys optional): rt60 + drr_db (reverb), band (low_hz, high_hz),
    snr_db with noise = white | pink | brown | babble (babble: a waveform of other talkers)."""
    if conditions.get("rt60"):
        wav = reverb(wav, conditions["rt60"], conditions["drr_db"], rng)
    if conditions.get("band"):
        wav = band_limit(wav, *conditions["band"])
    if conditions.get("noise"):
        noise = babble if conditions["noise"] == "babble" else colored_noise(len(wav), conditions["noise"], rng)
        wav = mix(wav, noise, conditions["snr_db"])
    return wav
