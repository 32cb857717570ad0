"""
Supervised semantic speech tokens: CosyVoice 2's S3Tokenizer in miniature.

    log-mel (B, T, 80) -> conv subsampling x4 + lower conformer blocks (encoder.Encoder)
        -> (stride 2: adjacent frames merged) -> FSQ bottleneck: 25 / stride tokens/s, levels ** dims codes
        -> (stride 2: each token split into 2 frames) -> upper conformer blocks -> CTC head on characters

Trained with the ASR objective alone (CTC on the transcript), so what survives the bottleneck
is what was said, not who said it or how loud. The tokens are the FSQ codes; the text-to-token
LM predicts them and the flow-matching model turns them back into log-mel.

FSQ (finite scalar quantisation, Mentzer et al. 2023): project to `dims` values, squash each
with tanh into (-h, h) for h = (levels - 1) / 2, round it to one of `levels` integers, and pass
the gradient straight through the rounding. The code of a frame is its digits in base `levels`.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanospeechrl.data import map_batches
from nanospeechrl.encoder import CTCHead, Conformer, Encoder, EncoderConfig


@dataclass
class TokenizerConfig:
    encoder: dict  # EncoderConfig fields of the lower half (its n_layer: blocks before the bottleneck)
    n_upper: int = 2  # conformer blocks between the bottleneck and the CTC head
    fsq_dims: int = 6  # bottleneck width; 0: no bottleneck (the comparison encoder)
    fsq_levels: int = 3  # values per dimension (odd): levels ** dims codes
    stride: int = 1  # encoder frames per token: 25 / stride tokens a second (CTC still reads 25 frames a second)

    @property
    def n_codes(self):
        return self.fsq_levels ** self.fsq_dims


class FSQ(nn.Module):
    def __init__(self, d_model, dims, levels):
        super().__init__()
        if levels < 3 or levels % 2 == 0:
            raise ValueError(f"fsq_levels={levels}: an odd number >= 3 (rounding needs a 0 level)")
        self.dims, self.levels, self.half = dims, levels, (levels - 1) // 2
        self.down, self.up = nn.Linear(d_model, dims), nn.Linear(dims, d_model)
        self.register_buffer("powers", levels ** torch.arange(dims), persistent=False)

    def forward(self, h):
        """(..., d_model) -> quantised (..., d_model) with a straight-through gradient, codes (...)."""
        z = torch.tanh(self.down(h).float()) * self.half  # each value in (-half, half)
        q = z + (torch.round(z) - z).detach()  # forward: integers; backward: identity
        return self.up(q / self.half), self.codes(q)

    def codes(self, q):
        """Integer levels (..., dims) in [-half, half] -> codes (...) in [0, levels ** dims)."""
        return ((q.detach().round().long() + self.half) * self.powers).sum(-1)

    def values(self, codes):
        """Codes (...) -> their integer levels (..., dims) as floats: the inverse of codes()."""
        return (codes[..., None] // self.powers % self.levels - self.half).float()

    def embed(self, codes):
        """Codes (...) -> what the layer after the bottleneck sees for them (..., d_model)."""
        return self.up(self.values(codes) / self.half)


class SpeechTokenizer(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        lower = EncoderConfig(**config.encoder)
        self.lower = Encoder(lower)
        self.fsq = FSQ(lower.d_model, config.fsq_dims, config.fsq_levels) if config.fsq_dims else None
        d, k = lower.d_model, config.stride  # merged frames are normed, as the conformer's output they replace
        self.merge = nn.Sequential(nn.Linear(k * d, d), nn.LayerNorm(d)) if k > 1 else None
        self.split = nn.Linear(d, k * d) if k > 1 else None
        self.upper = Conformer(EncoderConfig(**{**config.encoder, "n_layer": config.n_upper}))
        self.head = CTCHead(lower)

    def forward(self, feats, lengths):
        """Log-mel (B, T, 80), (B,) -> CTC logits (B, T', V), lengths (B,), codes (B, T') (None without FSQ)."""
        hidden, lengths = self.lower(feats, lengths)
        hidden, token_lens = self.strided(hidden, lengths)
        codes = None
        if self.fsq is not None:
            hidden, codes = self.fsq(hidden)
        if self.split is not None:  # back to the encoder's rate, distinct frames, so CTC has one per character
            B, T, D = hidden.shape
            hidden, lengths = self.split(hidden).reshape(B, T * self.config.stride, D), token_lens * self.config.stride
        return self.head(self.upper(hidden, lengths)), lengths, codes

    def strided(self, hidden, lengths):
        """(B, T', D), (B,) -> stride adjacent frames merged into one (B, ceil(T' / stride), D), lengths
        (the encoder zeroes its padded frames, so a last odd frame merges with zeros, as it would alone)."""
        if self.merge is None:
            return hidden, lengths
        s, (B, T, D) = self.config.stride, hidden.shape
        hidden = F.pad(hidden, (0, 0, 0, -T % s))
        return self.merge(hidden.reshape(B, -1, s * D)), (lengths + s - 1) // s

    @torch.no_grad()
    def tokenize(self, feats, lengths):
        """Log-mel (B, T, 80), (B,) -> codes (B, T') at 25 / stride per second, lengths (B,)."""
        hidden, lengths = self.strided(*self.lower(feats, lengths))
        return self.fsq(hidden)[1], lengths


def tokenize_all(model, feats, batch_size, device):
    """Speech tokens of every utterance: a list of code lists (25 / stride per second of audio)."""
    model.eval()

    def tokenize(b):
        codes, lengths = model.tokenize(b["feats"], b["feat_lens"])
        return [c[:n].tolist() for c, n in zip(codes, lengths.tolist())]

    return map_batches(tokenize, feats, batch_size, device)


def codebook_usage(codes, n_codes):
    """Share of the codebook used and the perplexity (exp of the code entropy) over a 1-D
    tensor of codes: how much of the bottleneck the tokens really use."""
    counts = torch.bincount(codes, minlength=n_codes).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codes_used": (counts > 0).float().mean().item(), "perplexity": entropy.exp().item()}
