"""Conformer audio encoder (Gulati et al. 2020) with a CTC head.

log-mel (B, T, n_mels) -> Conv2d subsampling x4 -> conformer blocks -> (B, T/4, d_model).
Padding is handled exactly: no valid output frame ever depends on a padded input frame
(tests/test_encoder.py checks a padded batch against each utterance run alone).
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanospeechrl.data import map_batches
from nanospeechrl.llm import apply_rope, rope_tables, sdpa

FRAMES_PER_SECOND = 100  # log-mel frames per second (10 ms hop, see audio.py)


@dataclass
class EncoderConfig:
    n_mels: int = 80  # log-mel bins per input frame
    d_model: int = 144  # hidden width
    conv_channels: int = 32  # channels of the subsampling convs (the costliest part on a CPU: 64 cost 1.4x the step)
    n_layer: int = 4  # number of conformer blocks
    n_head: int = 4  # attention heads; d_model // n_head must be even for RoPE
    ff_mult: int = 4  # feed-forward hidden = ff_mult * d_model
    conv_kernel: int = 15  # depthwise conv kernel (odd, so 'same' padding is symmetric)
    dropout: float = 0.1  # dropout after subsampling, in FFN/attention/conv modules
    vocab_size: int = 0  # CTC classes; index 0 is the CTC blank. Set by the caller (0 = no CTC head)
    max_frames: int = 3000  # longest input accepted, in input frames (3000 = 30 s)


def conv_out_lengths(lengths):
    """Output length of one 3x3 stride-2 conv with padding 1: ceil(L / 2)."""
    return (lengths - 1) // 2 + 1  # floor((L + 2*1 - 3) / 2) + 1


def subsampled_lengths(lengths):
    """Encoder output frames for `lengths` input frames: two stride-2 convs, ceil(ceil(L/2)/2)."""
    return conv_out_lengths(conv_out_lengths(lengths))


def padding_mask(lengths, T):
    """(B,) lengths -> (B, T) bool, True at padded frames."""
    return torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]


class Subsample(nn.Module):
    """Two 3x3 stride-2 Conv2d over (time, freq), SiLU, then a linear to d_model: time / 4.

    With padding 1 any length >= 1 works. A valid output frame's receptive field can reach one
    step past the last valid frame; that position is the conv's zero padding when an utterance
    runs alone, so we zero it (input and intermediate) in a padded batch too: outputs then match.
    """

    def __init__(self, config):
        super().__init__()
        c = config.conv_channels
        self.conv1 = nn.Conv2d(1, c, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        n_freq = subsampled_lengths(torch.tensor(config.n_mels)).item()  # frequency shrinks like time
        self.out = nn.Linear(c * n_freq, config.d_model)

    def forward(self, feats, lengths):  # (B, T, n_mels), (B,)
        x = feats.masked_fill(padding_mask(lengths, feats.shape[1])[..., None], 0.0)
        x = F.silu(self.conv1(x[:, None]))  # (B, C, T/2, F/2)
        lengths = conv_out_lengths(lengths)
        x = x.masked_fill(padding_mask(lengths, x.shape[2])[:, None, :, None], 0.0)  # bias+SiLU made them non-zero
        x = F.silu(self.conv2(x))  # (B, C, T/4, F/4)
        x = self.out(x.transpose(1, 2).flatten(2))  # (B, T/4, d_model)
        return x, conv_out_lengths(lengths)


class FeedForward(nn.Module):
    """Pre-norm FFN; the block adds it twice with weight 1/2 (macaron style)."""

    def __init__(self, config):
        super().__init__()
        d = config.d_model
        self.net = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, config.ff_mult * d), nn.SiLU(), nn.Dropout(config.dropout),
            nn.Linear(config.ff_mult * d, d), nn.Dropout(config.dropout),
        )

    def forward(self, x):  # (B, T, D)
        return self.net(x)


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention; RoPE on q, k makes scores depend on relative position."""

    def __init__(self, config):
        super().__init__()
        d = config.d_model
        self.n_head, self.p = config.n_head, config.dropout
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, keep, cos, sin):  # x (B, T, D), keep (B, T) True at valid frames
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)  # bf16 under autocast, as q and k are
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, hd)
        # mask keys only: every query row keeps >= 1 valid key, so no all -inf row (NaN) even for padded queries
        y = sdpa(q, k, v, attn_mask=keep[:, None, None, :], dropout_p=self.p if self.training else 0.0)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, D)))


class ConvModule(nn.Module):
    """LayerNorm -> pointwise GLU -> depthwise conv -> LayerNorm -> SiLU -> pointwise -> dropout."""

    def __init__(self, config):
        super().__init__()
        d, k = config.d_model, config.conv_kernel
        if k % 2 == 0:
            raise ValueError(f"conv_kernel must be odd for 'same' padding, got {k}")
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)  # a pointwise (1x1) conv is a per-frame linear
        self.dw = nn.Conv1d(d, d, k, padding=k // 2, groups=d)
        # LayerNorm, not BatchNorm: its statistics are per frame, so padded frames (and the batch
        # composition) can never change a valid frame's output; BatchNorm would mix them in.
        self.dw_norm = nn.LayerNorm(d)
        self.pw2 = nn.Linear(d, d)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, pad):  # x (B, T, D), pad (B, T, 1) True at padded frames
        x = F.glu(self.pw1(self.norm(x)), dim=-1)
        x = x.masked_fill(pad, 0.0)  # the depthwise kernel spans neighbours: padded frames must be zero, as alone
        x = self.dw(x.transpose(1, 2)).transpose(1, 2)
        return self.drop(self.pw2(F.silu(self.dw_norm(x))))


class ConformerBlock(nn.Module):
    """x + FFN/2 -> x + MHSA -> x + Conv -> x + FFN/2 -> LayerNorm."""

    def __init__(self, config):
        super().__init__()
        self.ff1, self.ff2 = FeedForward(config), FeedForward(config)
        self.attn = SelfAttention(config)
        self.conv = ConvModule(config)
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, x, keep, cos, sin):  # (B, T, D), (B, T) True at valid frames
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, keep, cos, sin)
        x = x + self.conv(x, ~keep[..., None])
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


def run_blocks(blocks, x, lengths, n_head):
    """Conformer blocks over (B, T', D) frames with lengths (B,) -> (B, T', D), zero past each
    length, so whatever consumes them (frame stacking, pooling) sees clean zeros."""
    keep = ~padding_mask(lengths, x.shape[1])  # (B, T')
    cos, sin = rope_tables(x.shape[1], x.shape[-1] // n_head, device=x.device)  # llm.py's RoPE
    for block in blocks:
        x = block(x, keep, cos, sin)
    return x.masked_fill(~keep[..., None], 0.0)


class Conformer(nn.Module):
    """n_layer conformer blocks on frames that are already d_model wide (no subsampling): the
    TTS half's token-rate networks (speech tokenizer's upper half, Token2Text, flow estimator)."""

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.blocks = nn.ModuleList(ConformerBlock(config) for _ in range(config.n_layer))

    def forward(self, x, lengths):  # (B, T', D), (B,) -> (B, T', D)
        return run_blocks(self.blocks, x, lengths, self.n_head)


class Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.d_model % config.n_head or (config.d_model // config.n_head) % 2:
            raise ValueError(f"d_model {config.d_model} / n_head {config.n_head} must be an even integer (RoPE)")
        self.config = config
        self.subsample = Subsample(config)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(config) for _ in range(config.n_layer))

    def forward(self, feats, lengths):  # (B, T, n_mels), (B,) -> (B, T', D), (B,)
        B, T, n_mels = feats.shape
        cfg = self.config
        if n_mels != cfg.n_mels:
            raise ValueError(f"expected {cfg.n_mels} mel bins per frame, got feats of shape {tuple(feats.shape)}")
        if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise ValueError(f"lengths must be (B,) = ({B},) with values in [1, {T}], got {lengths.tolist()}")
        longest = int(lengths.max())  # padding past max_frames (batches padded to a shape multiple) is fine
        if longest > cfg.max_frames:
            raise ValueError(f"input has {longest} frames ({longest / FRAMES_PER_SECOND:.2f} s) but the encoder "
                             f"supports at most {cfg.max_frames} frames ({cfg.max_frames / FRAMES_PER_SECOND:.2f} s)")
        x, lengths = self.subsample(feats, lengths)  # (B, T', D)
        return run_blocks(self.blocks, self.drop(x), lengths, cfg.n_head), lengths


def encode_all(encoder, feats, batch_size, device):
    """A frozen encoder's output for every utterance, once: a list of (T', D) float32 CPU tensors."""
    encoder.eval()

    def encode(b):
        hidden, lens = encoder(b["feats"], b["feat_lens"])
        return [h[:n].clone() for h, n in zip(hidden.float().cpu(), lens.tolist())]

    return map_batches(encode, feats, batch_size, device, desc="encode")


class CTCHead(nn.Module):
    """Linear projection to CTC logits; class 0 is the blank."""

    def __init__(self, config):
        super().__init__()
        if config.vocab_size < 2:
            raise ValueError(f"CTC needs vocab_size >= 2 (blank + 1 label), got {config.vocab_size}")
        self.proj = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, hidden):  # (B, T', D) -> (B, T', V)
        return self.proj(hidden)


def ctc_loss(logits, out_lengths, targets, target_lengths):
    """CTC loss (blank = 0), mean over the batch of per-utterance loss / target length.

    targets: (B, S) padded label ids in 1..V-1 (or concatenated 1-D). Impossible alignments
    (more labels than frames) give 0 instead of inf, so one bad utterance can't poison a step.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T', B, V), fp32 for stability
    return F.ctc_loss(log_probs, targets, out_lengths, target_lengths, blank=0,
                      reduction="mean", zero_infinity=True)


def ctc_logprob(logits, lengths, labels):
    """log P_ctc(labels | audio), summed over all alignments, for K candidate label sequences
    per utterance: logits (B, T', V), lengths (B,), labels B lists of K label lists -> (B, K).
    -inf where a candidate cannot be aligned (more labels than frames)."""
    B, K = len(labels), len(labels[0])
    log_probs = F.log_softmax(logits.float(), dim=-1).repeat_interleave(K, dim=0).transpose(0, 1)  # (T', B*K, V)
    flat = [seq for row in labels for seq in row]
    targets = torch.tensor([i for seq in flat for i in seq], dtype=torch.long, device=logits.device)
    target_lengths = torch.tensor([len(seq) for seq in flat], device=logits.device)
    nll = F.ctc_loss(log_probs, targets, lengths.repeat_interleave(K), target_lengths, blank=0, reduction="none")
    return -nll.view(B, K)


def ctc_greedy_decode(logits, lengths, blank=0):
    """Best path per utterance: argmax per frame, collapse repeats, then drop blanks."""
    best = logits.argmax(dim=-1).tolist()  # (B, T')
    out = []
    for path, n in zip(best, lengths.tolist()):
        labels, prev = [], None
        for tok in path[:n]:
            if tok != prev and tok != blank:  # a blank between two equal labels keeps both
                labels.append(tok)
            prev = tok
        out.append(labels)
    return out


CTC_CHARS = " 'abcdefghijklmnopqrstuvwxyz0123456789"  # CTC labels 1..N on normalised text; 0 = blank


def ctc_labels(text):
    """Normalised text -> CTC label ids (characters outside CTC_CHARS dropped)."""
    return [CTC_CHARS.index(c) + 1 for c in text if c in CTC_CHARS]


def ctc_text(labels):
    return "".join(CTC_CHARS[i - 1] for i in labels)
