"""
Token2Text: speech tokens -> text, the reward model DiffRO differentiates through.

    tokens (B, T) -> token-embedding table E (n_codes, d) -> conformer blocks -> CTC head

Its input layer is an embedding table, so a distribution (or a one-hot vector) over tokens
times E is a valid input too: `logprob_of_text(one_hot @ E)` is differentiable in the one-hot
vectors. Trained on the speech tokenizer's tokens of real audio (CTC on the transcripts) and
frozen before RL. It is not the tokenizer's own upper half: a separate model, other seed.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanospeechrl.data import pad_ids
from nanospeechrl.encoder import CTCHead, Conformer, EncoderConfig, ctc_greedy_decode, ctc_loss, ctc_text


@dataclass
class Token2TextConfig:
    n_codes: int = 729  # speech-token vocabulary
    d_model: int = 144  # width
    n_layer: int = 4  # conformer blocks
    vocab_size: int = 38  # CTC classes (blank + characters)
    repeat: int = 1  # each token read this many times (the tokenizer's stride: CTC needs a frame per character)


class Token2Text(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        enc = EncoderConfig(d_model=config.d_model, n_layer=config.n_layer, dropout=0.0, vocab_size=config.vocab_size)
        self.embedding = nn.Embedding(config.n_codes, config.d_model)
        self.body = Conformer(enc)
        self.head = CTCHead(enc)

    def logits_from_embeds(self, x, lengths):
        """(B, T, d) token embeddings, (B,) -> CTC logits (B, repeat * T, vocab)."""
        r = self.config.repeat
        return self.head(self.body(x.repeat_interleave(r, 1), r * lengths))

    def forward(self, tokens, lengths):
        """Speech tokens (B, T), lengths (B,) -> CTC logits (B, repeat * T, vocab), their lengths."""
        return self.logits_from_embeds(self.embedding(tokens), lengths), self.config.repeat * lengths

    def ctc_loss(self, tokens, labels, device):
        """Mean CTC loss of lists of speech tokens against lists of CTC labels (training)."""
        logits, lengths = self(*pad_ids(tokens, device))
        targets = torch.tensor([c for t in labels for c in t], device=device)  # concatenated, as F.ctc_loss allows
        return ctc_loss(logits, lengths, targets, torch.tensor([len(t) for t in labels], device=device))

    def logprob_of_text(self, one_hot, lengths, labels, label_lengths):
        """log P_ctc(text | tokens) (B,) for token distributions one_hot (B, T, n_codes) (one-hot
        or soft), summed over every alignment; differentiable in one_hot."""
        logits = self.logits_from_embeds(one_hot.to(self.embedding.weight.dtype) @ self.embedding.weight, lengths)
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
        return -F.ctc_loss(log_probs, labels, self.config.repeat * lengths, label_lengths, blank=0, reduction="none",
                           zero_infinity=True)


@torch.no_grad()
def transcribe_tokens(model, tokens, batch_size, device):
    """Greedy CTC transcripts of lists of speech tokens."""
    model.eval()
    out = []
    for start in range(0, len(tokens), batch_size):
        logits, lengths = model(*pad_ids(tokens[start:start + batch_size], device))
        out += [ctc_text(x) for x in ctc_greedy_decode(logits.float(), lengths)]
    return out
