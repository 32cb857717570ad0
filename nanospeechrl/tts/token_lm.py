"""
The text-to-token LM: llm.LLM reading text and writing speech tokens, sampled with sampler.py.

    prompt = [<tts>][text BPE tokens][<bos>]        completion = [speech tokens][EOS]

One embedding table holds both vocabularies: ids 0 .. n_codes-1 are the speech tokens (the
FSQ codes themselves), n_codes is EOS, and the text tokenizer's ids follow from n_codes + 1.
The output layer scores only the first n_codes + 1 ids, so a sample is always a speech token
or EOS, and log-probs (GRPO's ratio, DiffRO's KL) are over that vocabulary. No speaker input:
timbre enters in flow matching, as in CosyVoice 2.

Every row has a length cap proportional to its text: cap = ceil(max_ratio * text tokens) + 8
speech tokens. A sample that reaches its cap without EOS is cut there and counted as capped.
"""
import math

import torch
import torch.nn.functional as F

from nanospeechrl.llm import LLM
from nanospeechrl.sampler import Rollout, generate, left_pad
from nanospeechrl.tts.text_front import spoken


class TokenLM(LLM):
    def __init__(self, config, n_codes):
        """config: an LLMConfig whose vocab_size covers speech tokens + EOS + the text vocabulary."""
        super().__init__(config)
        self.n_codes = n_codes
        self.eos_id = n_codes

    def head(self, x):
        """Logits over speech tokens + EOS only: (..., n_codes + 1)."""
        return F.linear(self.norm(x), self.lm_head.weight[:self.n_codes + 1])

    def prompt(self, tokenizer, text):
        """Text -> prompt ids in this LM's vocabulary."""
        return prompt_ids(tokenizer, text, self.n_codes)

    def embed_prompts(self, prompts):
        """Prompt id lists -> a list of (P_i, D) embeddings (sampler.generate's input)."""
        device = self.wte.weight.device
        return [self.embed(torch.tensor(p, device=device)) for p in prompts]

    def sft_loss(self, prompts, targets):
        """Mean cross-entropy over the target tokens (speech tokens + EOS) given the prompts."""
        rows, labels = [], []
        device = self.wte.weight.device
        for prompt, target in zip(prompts, targets):
            tgt = torch.tensor(target, device=device)
            rows.append(torch.tensor(prompt + target[:-1], device=device))
            labels.append(torch.cat([torch.full((len(prompt) - 1,), -100, device=device), tgt]))
        T = -(-max(len(r) for r in rows) // 16) * 16  # few distinct shapes (data.SHAPE_MULTIPLE)
        x = torch.stack([F.pad(r, (0, T - len(r))) for r in rows])
        y = torch.stack([F.pad(lab, (0, T - len(lab)), value=-100) for lab in labels])
        logits = self(idx=x)  # (B, T, n_codes + 1)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100)


def prompt_ids(tokenizer, text, n_codes):
    """Text -> [<tts>][text tokens][<bos>] as ids of an LM with n_codes speech tokens (text ids
    shifted past them and EOS). The text is read through the front end first ("42" -> "forty two";
    text_front.spoken, the identity on text already in words): training, RL, evaluation and
    synthesis all build their prompts here, so they all read a number the same way."""
    ids = tokenizer.encode(spoken(text))
    return [n_codes + 1 + i for i in [tokenizer.task_id("tts")] + ids + [tokenizer.bos_id]]


def completion_logits(lm, prompts, tokens, lengths):
    """Teacher-forced logits (N, L, n_codes + 1) at each completion position (the distribution
    that token i was drawn from), differentiable. prompts: B id lists; tokens (N, L) with N = B * G
    rows in the Rollout layout; positions past lengths hold garbage, mask them."""
    embeds, pad = left_pad(lm.embed_prompts(prompts))  # (B, T, D), (B,)
    B, T, _ = embeds.shape
    G = tokens.shape[0] // B
    x = torch.cat([embeds.repeat_interleave(G, dim=0), lm.embed(tokens[:, :-1])], dim=1)
    return lm(embeds=x, pad=pad.repeat_interleave(G))[:, T - 1:]  # slot T-1+i predicts token i


def token_logprobs(logits, tokens, lengths, temperature=1.0):
    """Log-probs (N, L) float32 of tokens under logits / temperature, 0 past each row's length."""
    logp = (logits.float() / temperature).log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    return logp * (torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None])


def length_caps(prompts, max_ratio):
    """Each prompt's speech-token budget: ceil(max_ratio * its text tokens) + 8."""
    return [math.ceil(max_ratio * (len(p) - 2)) + 8 for p in prompts]


@torch.no_grad()
def sample_tokens(lm, prompts, max_ratio, num_samples=1, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Speech tokens for each prompt (num_samples rows each, prompt-major) with the KV-cached
    sampler -> (Rollout with lengths cut at each row's cap, capped (N,) bool: no EOS within it).
    A Rollout row's tokens are its speech tokens and then EOS (lengths count the EOS)."""
    room = lm.config.max_seq_len - max(len(p) for p in prompts)  # the context holds the longest prompt + its cap
    caps = torch.tensor(length_caps(prompts, max_ratio)).clamp(max=room).repeat_interleave(num_samples)
    out = generate(lm, lm.embed_prompts(prompts), max_new_tokens=int(caps.max()), temperature=temperature,
                   top_k=top_k, top_p=top_p, eos_id=lm.eos_id, num_samples=num_samples, generator=generator)
    return cut_at_caps(out, caps.to(out.lengths.device), lm.eos_id)


def cut_at_caps(rollout, caps, eos_id):
    """Cut each row of a Rollout at its own cap; -> (Rollout, capped (N,) bool)."""
    L = rollout.tokens.shape[1]
    last = rollout.tokens.gather(1, (rollout.lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    finished = (last == eos_id) & (rollout.lengths <= caps)
    lengths = torch.where(finished, rollout.lengths, torch.minimum(rollout.lengths, caps))
    keep = torch.arange(L, device=lengths.device)[None] < lengths[:, None]
    return Rollout(rollout.tokens * keep, lengths, rollout.logprobs * keep), ~finished


def speech_tokens(rollout, eos_id):
    """A Rollout's rows -> lists of speech tokens (the EOS, if any, dropped)."""
    out = []
    for row, n in zip(rollout.tokens.tolist(), rollout.lengths.tolist()):
        row = row[:n]
        out.append(row[:-1] if row and row[-1] == eos_id else row)
    return out
