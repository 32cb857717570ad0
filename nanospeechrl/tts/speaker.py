"""
Speaker encoder: log-mel -> an L2-normalised voice embedding.

    log-mel (B, T, 80) -> [per-utterance mean removed] -> 1-D convolutions (stride 2 twice)
        -> masked mean + std pooling over time -> linear -> L2 normalise   (B, dim)

Trained to classify the training voices with cosine-softmax heads (a scaled cosine between the
embedding and each class's weight vector, as in NormFace / AM-softmax without the margin), so
the cosine of two embeddings is what the training shaped. A voice label may have parts: a
built-in voice "en-gb-scotland+f3" is an accent and a variant, each with its own head, which
learns from ~7 utterances per voice what a single 500-way head could not. Padding never
matters: every conv sees zeros past a row's length and pooling counts valid frames only.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanospeechrl.data import map_batches
from nanospeechrl.encoder import conv_out_lengths, padding_mask


@dataclass
class SpeakerConfig:
    channels: int = 256  # conv width
    n_layer: int = 4  # conv layers (the first two have stride 2)
    kernel: int = 5  # conv kernel (odd)
    dim: int = 128  # embedding size
    mean_norm: bool = False  # subtract each utterance's mean log-mel first (channel normalisation)
    classes: tuple = ()  # classes per label part, e.g. (n accents, n variants); set by the trainer
    scale: float = 16.0  # cosine-softmax temperature: logits = scale * cos(embedding, class vector)


class SpeakerEncoder(nn.Module):
    def __init__(self, config, n_mels=80):
        super().__init__()
        if config.kernel % 2 == 0:
            raise ValueError(f"kernel {config.kernel} must be odd")
        self.config = config
        c, k = config.channels, config.kernel
        self.convs = nn.ModuleList(nn.Conv1d(n_mels if i == 0 else c, c, k, stride=2 if i < 2 else 1, padding=k // 2)
                                   for i in range(config.n_layer))
        self.proj = nn.Linear(2 * c, config.dim)
        self.heads = nn.ParameterList(nn.Parameter(torch.randn(n, config.dim) * 0.1) for n in config.classes)

    def forward(self, feats, lengths):
        """(B, T, 80), (B,) -> embeddings (B, dim), unit length."""
        x = feats.float()
        if self.config.mean_norm:
            keep = ~padding_mask(lengths, x.shape[1])
            mean = (x * keep[..., None]).sum(1, keepdim=True) / lengths[:, None, None]
            x = x - mean
        x = x.transpose(1, 2)  # (B, 80, T)
        for i, conv in enumerate(self.convs):
            x = x.masked_fill(padding_mask(lengths, x.shape[-1])[:, None], 0.0)  # zeros past the end, as alone
            x = F.gelu(conv(x))
            if i < 2:
                lengths = conv_out_lengths(lengths)  # stride 2, padding k // 2: ceil(L / 2) as a 3-tap conv
        keep = (~padding_mask(lengths, x.shape[-1]))[:, None].float()  # (B, 1, T')
        n = lengths[:, None].float()
        mean = (x * keep).sum(-1) / n
        std = (((x - mean[..., None]) ** 2 * keep).sum(-1) / n).clamp(min=1e-6).sqrt()
        return F.normalize(self.proj(torch.cat([mean, std], dim=1)).float(), dim=-1)  # fp32: cosines stay <= 1

    def loss(self, embeddings, labels):
        """Cross-entropy of every label part's cosine-softmax head. labels (B, n_parts) long."""
        total = 0.0
        for part, weight in enumerate(self.heads):
            logits = self.config.scale * embeddings @ F.normalize(weight, dim=-1).T
            total = total + F.cross_entropy(logits, labels[:, part])
        return total / len(self.heads)

    @torch.no_grad()
    def predict(self, embeddings):
        """(B, dim) -> the most likely class of every label part, (B, n_parts)."""
        return torch.stack([(embeddings @ F.normalize(w, dim=-1).T).argmax(-1) for w in self.heads], dim=1)


def embed_all(model, feats, batch_size, device):
    """Speaker embeddings (N, dim) float32 on the CPU of a list of log-mel (T, 80)."""
    model.eval()
    rows = map_batches(lambda b: list(model(b["feats"], b["feat_lens"]).float().cpu()), feats, batch_size, device)
    return torch.stack(rows)


def label_parts(speaker):
    """A speaker id -> its label parts: "en-us+f3" -> ["en-us", "f3"], "1089" -> ["1089"]."""
    return speaker.split("+")
