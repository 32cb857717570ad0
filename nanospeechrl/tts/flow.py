"""
Token-to-mel by conditional flow matching (Lipman et al. 2023; CosyVoice 2's decoder, in miniature).

Speech tokens come at 25 per second and our log-mel (audio.py) at 100 frames per second, so
each token owns 4 mel frames. The estimator works at the token rate on "folded" frames: the 4
mel frames of a token side by side, (B, T_tok, 4 * 80); tokens at 12.5 a second (the tokenizer's
stride 2) are each read at repeat = 2 positions, told apart by an embedding. Conditions: the
token's embedding and the voice, both dropped together with probability cfg_drop in training
(classifier-free guidance); the flow time t enters as a sinusoidal embedding. The voice is the speaker encoder's
embedding and, beside it, the flow's own reference encoder over a real clip of the voice (a
prompt in CosyVoice's sense, pooled over time): trained with the flow on another utterance of
the same voice, it learns whatever about the voice the mel needs and a classifier did not keep.

Optimal-transport path from noise x0 ~ N(0, I) to the (normalised) mel x1:
    x_t = (1 - (1 - sigma_min) t) x0 + t x1,    target velocity u = x1 - (1 - sigma_min) x0
loss = MSE(v(x_t, t, cond), u) over the real frames. Sampling integrates dx/dt = v from t = 0
to 1 with N Euler steps on a cosine schedule, each step's velocity guided:
    v = v(x, t, cond) + w * (v(x, t, cond) - v(x, t, no cond)).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanospeechrl.encoder import Conformer, EncoderConfig, padding_mask
from nanospeechrl.tts.speaker import SpeakerConfig, SpeakerEncoder

FOLD = 4  # mel frames per estimator position (100 / 25)


@dataclass
class FlowConfig:
    n_codes: int = 729  # speech-token vocabulary
    speaker_dim: int = 128  # speaker-embedding size
    reference_dim: int = 128  # the reference encoder's output size (0: condition on the speaker embedding alone)
    n_mels: int = 80
    repeat: int = 1  # estimator positions per speech token (the tokenizer's stride: 2 at 12.5 tokens a second)
    d_model: int = 192  # estimator width
    n_layer: int = 4  # conformer blocks
    n_head: int = 4
    cfg_drop: float = 0.2  # training: conditions dropped together with this probability
    cfg_strength: float = 2.0  # sampling: w, how far guidance pushes past the conditional velocity
    sigma_min: float = 1e-6  # the path's noise floor at t = 1
    mel_mean: float = 0.0  # log-mel normalisation (set from the training data)
    mel_std: float = 1.0


def time_embedding(t, dim):
    """Sinusoidal embedding of flow times t (B,) in [0, 1] -> (B, dim)."""
    freqs = torch.exp(-math.log(1000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = 1000.0 * t[:, None].float() * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def fold(mel, n_tokens):
    """(B, T, n_mels) -> (B, n_tokens, FOLD * n_mels), zero-padded or cut to FOLD * n_tokens frames."""
    B, T, M = mel.shape
    mel = F.pad(mel, (0, 0, 0, max(0, FOLD * n_tokens - T)))[:, :FOLD * n_tokens]
    return mel.reshape(B, n_tokens, FOLD * M)


def unfold(x):
    """(B, T_tok, FOLD * n_mels) -> (B, FOLD * T_tok, n_mels)."""
    B, T, D = x.shape
    return x.reshape(B, T * FOLD, D // FOLD)


class TokenToMel(nn.Module):
    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.tokens = nn.Embedding(config.n_codes, d)
        self.within = nn.Embedding(config.repeat, d) if config.repeat > 1 else None  # which of a token's positions
        self.speaker = nn.Linear(config.speaker_dim + config.reference_dim, d)
        self.reference = SpeakerEncoder(SpeakerConfig(channels=128, n_layer=3, dim=config.reference_dim),
                                        config.n_mels) if config.reference_dim else None
        self.x_in = nn.Linear(FOLD * config.n_mels, d)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.body = Conformer(EncoderConfig(d_model=d, n_layer=config.n_layer, n_head=config.n_head, dropout=0.0))
        self.out = nn.Linear(d, FOLD * config.n_mels)
        # The exact velocity is ~(x1 - x_t) / (1 - t): it needs x_t itself, all FOLD * n_mels values of
        # its noise, which a d-wide body cannot carry through. A time-dependent gate on x_t passes it by.
        self.x_gate = nn.Linear(d, FOLD * config.n_mels)
        nn.init.zeros_(self.x_gate.weight)
        nn.init.zeros_(self.x_gate.bias)

    def voice(self, speaker, ref_feats=None, ref_lens=None):
        """The voice condition (B, speaker_dim + reference_dim): speaker embeddings (B, speaker_dim)
        and the reference encoder's summary of real clips of each voice (B, T, n_mels), (B,)."""
        if self.reference is None:
            return speaker
        return torch.cat([speaker, self.reference(ref_feats, ref_lens).to(speaker.dtype)], dim=-1)

    def positions(self, tokens, lengths):
        """Speech tokens (B, T_tok), (B,) -> the estimator's positions: each token repeat times (B, T), (B,)."""
        r = self.config.repeat
        return tokens.repeat_interleave(r, 1), r * lengths

    def velocity(self, x, t, tokens, lengths, speaker, keep_cond):
        """The estimator. x (B, T, FOLD * n_mels) at flow time t (B,); tokens (B, T), lengths (B,) at
        the estimator's positions (positions()); speaker: voice() (B, voice size); keep_cond (B,) bool:
        False drops the conditions (CFG's unconditional branch). -> velocity like x."""
        cond = self.tokens(tokens) + self.speaker(speaker)[:, None]  # (B, T, d)
        if self.within is not None:
            cond = cond + self.within(torch.arange(tokens.shape[1], device=tokens.device) % self.config.repeat)
        time = self.time(time_embedding(t, self.config.d_model))[:, None]  # (B, 1, d)
        h = self.x_in(x) + cond * keep_cond[:, None, None] + time
        return self.out(self.body(h, lengths)) + self.x_gate(time) * x

    def normalise(self, mel):
        return (mel - self.config.mel_mean) / self.config.mel_std

    def loss(self, mel, mel_lens, tokens, lengths, speaker, generator=None):
        """Flow-matching MSE on a batch: mel (B, T, n_mels) with mel_lens (B,) frames, tokens
        (B, T_tok) with lengths (B,), speaker: voice() (B, voice size)."""
        tokens, lengths = self.positions(tokens, lengths)
        B, T_tok = tokens.shape
        x1 = fold(self.normalise(mel), T_tok)
        x0 = torch.randn(x1.shape, generator=generator).to(x1.device)
        t = torch.rand(B, generator=generator).to(x1.device)
        keep_cond = torch.rand(B, generator=generator).to(x1.device) >= self.config.cfg_drop
        s = self.config.sigma_min
        x_t = (1 - (1 - s) * t[:, None, None]) * x0 + t[:, None, None] * x1
        error = (self.velocity(x_t, t, tokens, lengths, speaker, keep_cond) - (x1 - (1 - s) * x0)) ** 2
        real = fold((~padding_mask(mel_lens, FOLD * T_tok))[..., None].float().expand(-1, -1, self.config.n_mels),
                    T_tok)  # 1 on the frames the audio has (not the padding, not the last token's overhang)
        return (error * real).sum() / real.sum().clamp(min=1)

    @torch.no_grad()
    def sample(self, tokens, lengths, speaker, steps=10, cfg_strength=None, generator=None):
        """Tokens (B, T_tok) with lengths (B,), speaker: voice() (B, voice size) -> log-mel (B, FOLD * repeat
        * T_tok, n_mels) after `steps` Euler steps; frames past FOLD * repeat * lengths are zero."""
        w = self.config.cfg_strength if cfg_strength is None else cfg_strength
        tokens, lengths = self.positions(tokens, lengths)
        B, T_tok = tokens.shape
        x = torch.randn(B, T_tok, FOLD * self.config.n_mels, generator=generator).to(self.out.weight.device)
        times = 1 - torch.cos(torch.linspace(0, 1, steps + 1) * math.pi / 2)  # cosine schedule: small first steps
        both = torch.cat([torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.bool)]).to(x.device)
        for t0, t1 in zip(times[:-1].tolist(), times[1:].tolist()):
            t = torch.full((2 * B,), t0, device=x.device)
            v_cond, v_free = self.velocity(x.repeat(2, 1, 1), t, tokens.repeat(2, 1), lengths.repeat(2),
                                           speaker.repeat(2, 1), both).float().chunk(2)
            x = x + (t1 - t0) * (v_cond + w * (v_cond - v_free))
        mel = unfold(x) * self.config.mel_std + self.config.mel_mean
        return mel.masked_fill(padding_mask(FOLD * lengths, mel.shape[1])[..., None], 0.0)
