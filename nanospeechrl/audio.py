"""Audio frontend: load/save (soundfile), resampling, whisper-style log-mel, SpecAugment, Griffin-Lim.

Everything inside the library is mono float32 at 16 kHz; features are 80-bin log-mel with a
25 ms window and 10 ms hop, scaled exactly like whisper's so values sit roughly in [-1, 1.5].
Signal processing is plain torch (no torchaudio); soundfile only reads and writes files.
"""
import functools
import math
import os

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

SAMPLE_RATE = 16000  # Hz, the only rate used inside the library
N_FFT = 400  # 25 ms window at 16 kHz
HOP_LENGTH = 160  # 10 ms hop at 16 kHz
N_MELS = 80  # mel bins


class AudioError(ValueError):
    """Bad audio input; the message starts with the offending file's path."""


# ----------------------------------------------------------------------------- file I/O

def _wav_truncated(path) -> bool:
    """True when a RIFF/WAVE file's data chunk claims more bytes than the file holds.
    libsndfile reads such a file silently and just returns the frames that are present."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        while len(chunk := f.read(8)) == 8:
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                # streaming writers put 0 or 0xFFFFFFFF here for "unknown": not truncation
                return 0 < size < 0xFFFFFFFF and f.tell() + size > os.fstat(f.fileno()).st_size
            f.seek(size + (size & 1), 1)  # RIFF chunks are padded to even sizes
    return False


def load(path) -> torch.Tensor:
    """Read wav/flac/ogg/... -> (T,) mono float32 at SAMPLE_RATE; AudioError names the file if bad."""
    if not os.path.isfile(path):
        raise AudioError(f"{path}: file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (RuntimeError, OSError) as e:  # soundfile's errors subclass RuntimeError
        raise AudioError(f"{path}: cannot read audio ({e})") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file has zero samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio contains NaN or inf samples")
    if _wav_truncated(path):
        raise AudioError(f"{path}: truncated file (header declares more data than the file holds)")
    wav = torch.from_numpy(data.mean(axis=1))  # stereo -> mono by averaging channels
    return resample(wav, sr, SAMPLE_RATE)


def save(path, wav: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> None:
    """Write (T,) audio; the format follows the extension (.wav -> PCM_16, .flac, .ogg)."""
    # clamp first: float -> PCM conversion in libsndfile does not clip, it can wrap around
    sf.write(str(path), wav.detach().float().clamp(-1, 1).cpu().numpy(), sample_rate)


# ----------------------------------------------------------------------------- resampling

@functools.lru_cache(maxsize=16)
def _sinc_kernels(orig: int, new: int, zeros: int, rolloff: float):
    """Polyphase windowed-sinc filters for gcd-reduced rates: (new, 1, K) and the one-sided width.
    Row j holds the taps that produce output phase j from a block of `orig` input samples."""
    cutoff = min(orig, new) * rolloff  # lowpass at min(rates)/2 * rolloff, in gcd-rate units
    width = math.ceil(zeros * orig / cutoff)  # input taps each side to cover `zeros` sinc lobes
    # time from output phase j (at j/new) to input tap k (at k/orig), in sinc zero crossings
    t = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    x = ((t[None] - torch.arange(new, dtype=torch.float64)[:, None] / new) * cutoff).clamp(-zeros, zeros)
    window = torch.cos(x * math.pi / (2 * zeros)) ** 2  # Hann, zero at +-zeros
    kernels = torch.special.sinc(x) * window * cutoff / orig  # cutoff/orig gives unit DC gain
    return kernels[:, None].float(), width


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int, zeros: int = 16, rolloff: float = 0.945):
    """Band-limited resampling of (..., T) -> (..., ceil(T * new_sr / orig_sr)); identity if rates match."""
    if orig_sr == new_sr:
        return wav
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernels, width = _sinc_kernels(orig, new, zeros, rolloff)
    T = wav.shape[-1]
    x = F.pad(wav.reshape(-1, 1, T), (width, width + orig))  # (N, 1, T + pads)
    # one strided conv emits `new` output phases per block of `orig` input samples
    y = F.conv1d(x, kernels.to(wav), stride=orig)  # (N, new, blocks)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # interleave phases in time order
    out_len = math.ceil(new * T / orig)
    return y[:, :out_len].reshape(*wav.shape[:-1], out_len)


# ----------------------------------------------------------------------------- log-mel

def _hz_to_mel(f):
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa's default, used by whisper)."""
    f = np.asarray(f, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(f < 1000.0, f * 3.0 / 200.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * np.exp(logstep * (m - 15.0)))


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular mel filter bank (n_mels, n_fft//2 + 1), slaney scale and slaney area normalisation."""
    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(0, _hz_to_mel(sample_rate / 2), n_mels + 2))  # (n_mels + 2,)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise, fall = (fft_hz - lo) / (mid - lo), (hi - fft_hz) / (hi - mid)
    weights = np.maximum(0, np.minimum(rise, fall)) * (2.0 / (hi - lo))  # every triangle has area 1
    return torch.from_numpy(weights).float()


def n_frames(num_samples):
    """Frames produced for num_samples (int or tensor) by a centred STFT with HOP_LENGTH."""
    return num_samples // HOP_LENGTH + 1


def _power_spectrogram(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, N_FFT//2 + 1, n_frames(T)) power, centred with reflect padding per row.
    Each row is reflected at its own end, so padding never leaks into its valid frames."""
    pad = N_FFT // 2
    idx = torch.arange(-pad, wav.shape[1] + pad, device=wav.device)[None]  # sample index per padded slot
    last = (lengths.clamp(min=1) - 1)[:, None]
    src = torch.where(idx > last, 2 * last - idx, idx.abs())  # reflect at both ends (edge not repeated)
    src = torch.minimum(src.clamp(min=0), last)  # only rows shorter than pad (or far past the end) hit this
    x = torch.gather(wav, 1, src)  # (B, T + N_FFT)
    window = torch.hann_window(N_FFT, device=wav.device)  # periodic, as whisper
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
    return stft.abs() ** 2


def log_mel(wav: torch.Tensor, lengths: torch.Tensor | None = None):
    """Whisper-style log-mel. (T,) -> (T_frames, N_MELS); (B, T) -> ((B, T_frames, N_MELS), frame_lengths (B,)).
    The dynamic-range floor (max - 8) uses each utterance's own valid frames; padded frames are 0."""
    single = wav.dim() == 1
    wav = wav[None] if single else wav
    if lengths is None:
        lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
    lengths = lengths.to(wav.device)
    mel = mel_filters().to(wav.device) @ _power_spectrogram(wav.float(), lengths)  # (B, N_MELS, T_frames)
    log_spec = mel.clamp(min=1e-10).log10()
    frame_lengths = n_frames(lengths)
    valid = torch.arange(mel.shape[-1], device=wav.device)[None] < frame_lengths[:, None]  # (B, T_frames)
    peak = log_spec.masked_fill(~valid[:, None], -math.inf).amax(dim=(1, 2))  # (B,) per utterance
    log_spec = torch.maximum(log_spec, peak[:, None, None] - 8.0)  # keep 80 dB of dynamic range
    feats = ((log_spec + 4.0) / 4.0).masked_fill(~valid[:, None], 0.0).transpose(1, 2)  # (B, T_frames, N_MELS)
    return feats[0] if single else (feats, frame_lengths)


# ----------------------------------------------------------------------------- SpecAugment

def _band_mask(B: int, size: int, n_masks: int, max_width: int, generator) -> torch.Tensor:
    """(B, size) bool: n_masks bands per row, each of width uniform in [0, max_width] at a uniform start."""
    max_width = min(max_width, size)
    widths = torch.randint(0, max_width + 1, (B, n_masks, 1), generator=generator)
    starts = (torch.rand(B, n_masks, 1, generator=generator) * (size - widths + 1)).long()
    pos = torch.arange(size)
    return ((pos >= starts) & (pos < starts + widths)).any(dim=1)


def spec_augment(feats: torch.Tensor, n_freq_masks: int = 2, freq_width: int = 15, n_time_masks: int = 2,
                 time_frac: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment on (T, F) or (B, T, F): a new tensor with frequency and time bands set to 0.
    0 (not the mean) so the result never depends on how much padding a batch carries.
    Time masks are at most time_frac * T frames wide (T = the tensor's time length)."""
    x = feats[None] if feats.dim() == 2 else feats
    B, T, Fdim = x.shape
    time_mask = _band_mask(B, T, n_time_masks, max(1, int(time_frac * T)), generator)  # (B, T)
    freq_mask = _band_mask(B, Fdim, n_freq_masks, freq_width, generator)  # (B, F)
    mask = (time_mask[:, :, None] | freq_mask[:, None, :]).to(x.device)
    out = x.masked_fill(mask, 0.0)
    return out[0] if feats.dim() == 2 else out


# ----------------------------------------------------------------------------- Griffin-Lim

def mel_to_linear(logmel: torch.Tensor, n_iter: int = 30) -> torch.Tensor:
    """(T_frames, N_MELS) scaled log-mel -> (N_FFT//2 + 1, T_frames) linear magnitude: the
    non-negative least-squares power spectrum under the mel filters (multiplicative updates
    from the filters' transpose). The plain pseudo-inverse, clamped at 0, leaves a spiky
    spectrum whenever the mel is not exactly one the filters made (any generated mel)."""
    fb = mel_filters().double().to(logmel.device)  # (N_MELS, F)
    mel_power = 10.0 ** (logmel.double() * 4.0 - 4.0).T  # (N_MELS, T): undo (x + 4) / 4 and log10
    power = (fb.T @ mel_power) / (fb.T.sum(dim=1, keepdim=True) + 1e-10)  # smooth, non-negative start
    for _ in range(n_iter):  # Lee & Seung's update for min ||fb @ power - mel_power||, power >= 0
        power = power * (fb.T @ mel_power) / (fb.T @ (fb @ power) + 1e-30)
    return power.sqrt().float()


def griffin_lim(magnitude: torch.Tensor, n_iter: int = 32, momentum: float = 0.99,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(N_FFT//2 + 1, T_frames) magnitude -> (HOP_LENGTH * (T_frames - 1),) waveform.
    Fast Griffin-Lim (Perraudin et al. 2013): plain Griffin-Lim plus a momentum step."""
    window = torch.hann_window(N_FFT, device=magnitude.device)
    length = HOP_LENGTH * (magnitude.shape[-1] - 1)
    stft = functools.partial(torch.stft, n_fft=N_FFT, hop_length=HOP_LENGTH, window=window, return_complex=True)
    istft = functools.partial(torch.istft, n_fft=N_FFT, hop_length=HOP_LENGTH, window=window, length=length)
    phase = torch.rand(magnitude.shape, generator=generator).to(magnitude.device) * (2 * math.pi)
    angles = torch.polar(torch.ones_like(magnitude), phase)
    previous = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = stft(istft(magnitude * angles))  # project onto consistent spectrograms
        angles = rebuilt - previous * (momentum / (1 + momentum))  # momentum: over-step past the last estimate
        angles = angles / angles.abs().clamp(min=1e-16)  # keep only the phase
        previous = rebuilt
    return istft(magnitude * angles)
