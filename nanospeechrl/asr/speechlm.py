"""
The speech-aware LLM: conformer encoder -> projector -> decoder LLM.

    prompt = [audio embeddings][task token][prompt tokens]     target = [text tokens][<eos>]

The projector stacks `stack` consecutive encoder frames (40 ms each after the encoder's 4x
subsampling) and maps them to the LLM width with a small MLP, so the LLM sees one audio
embedding per 80 ms by default. SFT is cross-entropy on the target tokens only.

Decoding is greedy, or joint CTC/attention rescoring (`decode(nbest=N)`, after Watanabe et al.
2017): the greedy output and N samples are scored by the LLM and by the encoder's CTC head
(kept from stage 0), and the best sum wins.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanospeechrl.checkpoint import load_checkpoint, read_config
from nanospeechrl.devices import autocast
from nanospeechrl.encoder import CTCHead, Encoder, EncoderConfig, ctc_labels, ctc_logprob
from nanospeechrl.llm import LLM, LLMConfig
from nanospeechrl.rewards import normalize
from nanospeechrl.sampler import generate, sequence_logprobs
from nanospeechrl.tokenizer import Tokenizer


@dataclass
class ProjectorConfig:
    stack: int = 2  # encoder frames stacked into one LLM embedding


class Projector(nn.Module):
    def __init__(self, d_audio, d_model, stack):
        super().__init__()
        self.stack = stack
        self.net = nn.Sequential(nn.Linear(d_audio * stack, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, x, lengths):
        """(B, T, D_audio), (B,) -> (B, ceil(T / stack), D_model), (B,)"""
        B, T, D = x.shape
        x = F.pad(x, (0, 0, 0, -T % self.stack))  # encoder output is zero past lengths, so is this pad
        x = x.reshape(B, -1, D * self.stack)
        return self.net(x), (lengths + self.stack - 1) // self.stack


class SpeechLM(nn.Module):
    def __init__(self, encoder_config, llm, projector_config=ProjectorConfig()):
        super().__init__()
        self.encoder = Encoder(encoder_config)
        self.ctc_head = CTCHead(encoder_config) if encoder_config.vocab_size else None  # stage 0's, for decode()
        self.projector = Projector(encoder_config.d_model, llm.config.n_embd, projector_config.stack)
        self.llm = llm

    def encode(self, feats, feat_lens):
        """Log-mel (B, T, n_mels), (B,) -> audio embeddings (B, T', D), lengths (B,)."""
        hidden, lens = self.encoder(feats, feat_lens)
        return self.projector(hidden, lens)

    def prompts(self, audio, audio_lens, prompt_ids):
        """Per-row prompt embeddings [audio][task token + prompt tokens]: a list of (T_i, D)."""
        out = []
        for b, ids in enumerate(prompt_ids):
            text = self.llm.embed(torch.tensor(ids, device=audio.device))  # (P, D)
            out.append(torch.cat([audio[b, :audio_lens[b]], text.to(audio.dtype)]))
        return out

    def sft_loss(self, feats, feat_lens, prompt_ids, target_ids):
        """Mean cross-entropy over target tokens. prompt_ids, target_ids: lists of id lists
        (targets end with <eos>)."""
        return self.sft_loss_from_audio(*self.encode(feats, feat_lens), prompt_ids, target_ids)

    def sft_loss_from_audio(self, audio, audio_lens, prompt_ids, target_ids):
        """sft_loss given audio embeddings (from encode, or a frozen encoder's cached output
        through the projector). Rows are right-padded: with causal attention, padding at the
        end changes nothing before it, and RoPE positions match the sampler's."""
        prompts = self.prompts(audio, audio_lens, prompt_ids)
        rows, labels = [], []
        for prompt, target in zip(prompts, target_ids):
            tgt = torch.tensor(target, device=audio.device)
            rows.append(torch.cat([prompt, self.llm.embed(tgt[:-1]).to(prompt.dtype)]))  # input: all but the last
            labels.append(torch.cat([torch.full((len(prompt) - 1,), -100, device=audio.device), tgt]))
        T = -(-max(len(r) for r in rows) // 16) * 16  # few distinct shapes (see data.SHAPE_MULTIPLE)
        x = torch.stack([F.pad(r, (0, 0, 0, T - len(r))) for r in rows])  # (B, T, D)
        y = torch.stack([F.pad(lab, (0, T - len(lab)), value=-100) for lab in labels])  # (B, T)
        logits = self.llm(embeds=x)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100)

    @torch.no_grad()
    def generate(self, feats, feat_lens, prompt_ids, eos_id, max_new_tokens=128, **sampling):
        """Sample completions for a batch of audio; sampling: temperature, top_k, top_p,
        num_samples, generator (see sampler.generate). Returns a sampler.Rollout."""
        return self.generate_from_audio(*self.encode(feats, feat_lens), prompt_ids, eos_id, max_new_tokens,
                                        **sampling)

    @torch.no_grad()
    def generate_from_audio(self, audio, audio_lens, prompt_ids, eos_id, max_new_tokens=128, **sampling):
        return generate(self.llm, self.prompts(audio, audio_lens, prompt_ids),
                        max_new_tokens=max_new_tokens, eos_id=eos_id, **sampling)

    def logprobs_from_audio(self, audio, audio_lens, prompt_ids, tokens, lengths, temperature=1.0):
        """Per-token log-probs (N, L) of completions (a Rollout's tokens and lengths; N = B * G)
        under this model, differentiable: GRPO's policy, old-policy and reference log-probs."""
        return sequence_logprobs(self.llm, self.prompts(audio, audio_lens, prompt_ids), None, tokens, lengths,
                                 temperature)

    def completion_logprobs(self, hidden, hidden_lens, prompt_ids, tokens, lengths, temperature=1.0):
        """GRPO's log-probs: (N, L) float32 of completions given the frozen encoder's output
        (B, T', D), (B,), through this model's projector and LLM (the policy's or the reference's)."""
        with autocast(hidden.device):
            audio = self.projector(hidden, hidden_lens)
            return self.logprobs_from_audio(*audio, prompt_ids, tokens, lengths, temperature).float()

    @torch.no_grad()
    def decode(self, feats, feat_lens, prompt_ids, tokenizer, max_new_tokens=128, nbest=0, ctc_weight=0.1,
               generator=None, **sampling):
        """Log-mel features and per-row prompt ids -> one string per row.
        nbest=0: one completion, greedy unless `sampling` (temperature, top_k, top_p) says otherwise.
        nbest>0 (ASR): the greedy output and nbest samples at temperature 1 are the candidates;
        the one with the highest (1 - ctc_weight) * log P_llm + ctc_weight * log P_ctc wins, each
        log-probability of the whole candidate (the CTC term on its normalised characters;
        none without a CTC head)."""
        if nbest and sampling.get("temperature", 0.0) != 0.0:
            raise ValueError("decode: nbest rescoring starts from the greedy output; leave temperature at 0")
        hidden, lens = self.encoder(feats, feat_lens)
        audio = self.projector(hidden, lens)
        outs = [self.generate_from_audio(*audio, prompt_ids, tokenizer.eos_id, max_new_tokens, generator=generator,
                                         **{"temperature": 0.0, **sampling})]
        if nbest:  # temperature 1: the samples' log-probs are the model's own, comparable with greedy's.
            # A sample twice as long as every greedy output is a loop: stop there, and drop it below.
            budget = min(max_new_tokens, 2 * int(outs[0].lengths.max()) + 8)
            outs.append(self.generate_from_audio(*audio, prompt_ids, tokenizer.eos_id, budget,
                                                 temperature=1.0, num_samples=nbest, generator=generator))
        B = len(prompt_ids)
        texts, llm, dropped = [[] for _ in range(B)], [], []
        for j, out in enumerate(outs):  # rows are prompt-major: row r continues prompt r // k
            k = len(out.lengths) // B
            for r, (row, n) in enumerate(zip(out.tokens.tolist(), out.lengths.tolist())):
                texts[r // k].append(tokenizer.decode(row[:n]))
            llm.append(out.logprobs.float().sum(dim=1).view(B, k))
            last = out.tokens.gather(1, out.lengths[:, None] - 1).view(B, k)
            dropped.append((last != tokenizer.eos_id) & (j > 0))  # an unfinished sample (greedy always stays)
        if not nbest:
            return [row[0] for row in texts]
        score = (1 - ctc_weight) * torch.cat(llm, dim=1)  # (B, 1 + nbest)
        if self.ctc_head is not None:
            labels = [[ctc_labels(normalize(t)) for t in row] for row in texts]
            score = score + ctc_weight * ctc_logprob(self.ctc_head(hidden), lens, labels).to(score.device)
        score = score.masked_fill(torch.cat(dropped, dim=1), -math.inf)
        return [row[i] for row, i in zip(texts, score.argmax(dim=1).tolist())]

    def transcribe(self, feats, feat_lens, tokenizer, task="asr", prompt="", max_new_tokens=128, **decoding):
        """A batch of log-mel features -> list of strings; decoding: decode()'s options (default greedy)."""
        ids = [tokenizer.task_id(task)] + tokenizer.encode(prompt)
        return self.decode(feats, feat_lens, [ids] * len(feats), tokenizer, max_new_tokens, **decoding)


def prompt_ids(tokenizer, example, max_tokens):
    """[<task>] + the tokens of example.prompt, at most max_tokens in all -> (ids, truncated)."""
    ids = [tokenizer.task_id(example.task)] + tokenizer.encode(example.prompt)
    return ids[:max_tokens], len(ids) > max_tokens


def load_speechlm(path, map_location="cpu"):
    """A stage-1 (or later) checkpoint directory -> (SpeechLM in eval mode, Tokenizer)."""
    config = read_config(path)
    if "llm" not in config:
        raise ValueError(f"{path}: not a speech-LLM checkpoint (no 'llm' in config.json; a stage-0 encoder?)")
    model = SpeechLM(EncoderConfig(**config["encoder"]), LLM(LLMConfig(**config["llm"])),
                     ProjectorConfig(**config["projector"]))
    loaded = load_checkpoint(path, model, map_location=map_location)
    return model.to(map_location).eval(), Tokenizer.load(loaded["dir"])
