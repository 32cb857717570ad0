"""Hand-written batched sampling with the KV cache, group rollouts and per-token log-probs.

generate(): left-pad the prompts (given as input embeddings, so audio prompts work),
prefill each prompt once, copy its cache to its G samples, then decode all B*G rows
together, one token per step. generate_naive() samples the same way with a full forward
per step and no cache: the reference the tests hold generate() to.
sequence_logprobs() recomputes the log-probs of given completions in one teacher-forced
forward (GRPO's policy and reference log-probs).

Log-probs are always under the FULL-vocabulary distribution at the sampling temperature,
log_softmax(logits / temperature) (plain log_softmax at temperature 0), never the
top-k/top-p truncated one: they are pi_old in GRPO's ratio pi_theta / pi_old, and
sequence_logprobs computes pi_theta the same way, so the ratio starts at exactly 1.
Call model.eval() first: dropout during a rollout would make pi_old disagree with itself.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from nanospeechrl.llm import KVCache, PrefixCache


class Rollout(NamedTuple):
    tokens: torch.Tensor  # (N, max_new_tokens) long, N = B * num_samples, row b*G+g from prompt b; 0 past the end
    lengths: torch.Tensor  # (N,) generated tokens per row, the EOS included
    logprobs: torch.Tensor  # (N, max_new_tokens) float32 log-prob of each sampled token; 0 past the end


def left_pad(prompt_embeds, prompt_lengths=None):
    """Prompts -> left-padded embeddings (B, T, D) and pad (B,) = padding slots per row.

    prompt_embeds: a list of (T_i, D) tensors, or a right-padded (B, T, D) tensor whose real
    rows are prompt_lengths (B,) long (None: every row is full). Differentiable.
    """
    if isinstance(prompt_embeds, (list, tuple)):
        T = max(p.shape[0] for p in prompt_embeds)
        lengths = torch.tensor([p.shape[0] for p in prompt_embeds], device=prompt_embeds[0].device)
        embeds = torch.stack([F.pad(p, (0, 0, T - p.shape[0], 0)) for p in prompt_embeds])
    else:
        B, T, D = prompt_embeds.shape
        lengths = torch.full((B,), T) if prompt_lengths is None else torch.as_tensor(prompt_lengths)
        lengths = lengths.to(prompt_embeds.device)
        src = torch.arange(T, device=prompt_embeds.device)[None] - (T - lengths)[:, None]  # (B, T) source index
        embeds = prompt_embeds.gather(1, src.clamp(min=0)[..., None].expand(B, T, D))
        embeds = embeds * (src >= 0)[..., None].to(embeds.dtype)  # padding slots hold zeros
    if (lengths < 1).any() or (lengths > T).any():
        raise ValueError(f"prompt lengths must be in [1, {T}], got {lengths.tolist()}")
    return embeds, (T - lengths).long()


def filter_logits(logits, top_k=0, top_p=1.0):
    """Set logits outside the top-k and then the top-p (nucleus) set to -inf. (N, V) -> (N, V)."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the more likely ones already hold more than top_p; the first always stays.
        drop_sorted = probs.cumsum(dim=-1) - probs > top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """One token per row from logits (N, V) -> tokens (N,), log-probs (N,) under log_softmax(logits / T)."""
    logits = logits.float()
    if temperature:
        logits = logits / temperature
    log_z = logits.logsumexp(dim=-1, keepdim=True)  # (N, 1): log-probs are logits - log_z
    if temperature == 0:  # greedy
        token = logits.argmax(dim=-1)
    else:  # inverse-CDF sampling: one uniform number per row (torch.multinomial draws one per token)
        cdf = (filter_logits(logits, top_k, top_p) - log_z).exp().cumsum(dim=-1)  # unnormalised if filtered
        u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
        token = (cdf < u).sum(dim=-1).clamp(max=cdf.shape[-1] - 1)  # the first token whose cdf reaches u
    logprob = (logits.gather(-1, token[:, None]) - log_z).squeeze(-1)
    return token, logprob


def finish_rollout(tokens, logprobs, max_new_tokens, eos_id):
    """Per-step lists of (N,) tensors -> Rollout, cut after each row's first EOS and padded to max_new_tokens."""
    tokens, logprobs = torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)  # (N, L)
    N, L = tokens.shape
    lengths = torch.full((N,), L, device=tokens.device)
    if eos_id is not None:
        is_eos = tokens == eos_id
        lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, lengths)  # first EOS, kept
    keep = torch.arange(L, device=tokens.device)[None] < lengths[:, None]  # (N, L)
    extra = max_new_tokens - L  # all rows stopped early
    tokens, logprobs = F.pad(tokens * keep, (0, extra)), F.pad(logprobs * keep, (0, extra))
    return Rollout(tokens, lengths, logprobs)


@torch.no_grad()
def generate(model, prompt_embeds, prompt_lengths=None, max_new_tokens=64, temperature=1.0, top_k=0,
             top_p=1.0, eos_id=None, num_samples=1, generator=None):
    """Sample num_samples completions per prompt with the KV cache -> Rollout of B * num_samples rows.

    prompt_embeds: list of (T_i, D) or right-padded (B, T, D) with prompt_lengths (B,).
    temperature 0 is greedy. eos_id None: every row runs max_new_tokens. generator: a
    torch.Generator on the model's device, for reproducible sampling.
    """
    embeds, pad = left_pad(prompt_embeds, prompt_lengths)  # (B, T, D), (B,)
    B, T, _ = embeds.shape
    if T + max_new_tokens > model.config.max_seq_len:  # fail before decoding, not halfway through
        raise ValueError(f"a prompt of {T} slots + max_new_tokens={max_new_tokens} exceeds the model's "
                         f"max_seq_len={model.config.max_seq_len}")
    param = next(model.parameters())
    cache = KVCache(model.config, B, T + max_new_tokens, pad, param.device, param.dtype)
    logits = model(embeds=embeds.to(param.dtype), kv_cache=cache)[:, -1]  # (B, V): one prefill per prompt
    if num_samples > 1:  # copy each prompt's cache to its G rows instead of prefilling it G times
        cache = cache.repeat_interleave(num_samples)
        logits = logits.repeat_interleave(num_samples, dim=0)  # (B*G, V)
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    tokens, logprobs = [], []
    for step in range(max_new_tokens):
        token, logprob = sample_next(logits, temperature, top_k, top_p, generator)
        tokens.append(token)
        logprobs.append(logprob)
        if eos_id is not None:
            done |= token == eos_id  # finished rows keep decoding in the batch; their output is cut later
            if done.all():
                break
        if step + 1 < max_new_tokens:
            logits = model.decode_step(token, cache)  # (B*G, V)
    return finish_rollout(tokens, logprobs, max_new_tokens, eos_id)


@torch.no_grad()
def generate_naive(model, prompt_embeds, prompt_lengths=None, max_new_tokens=64, temperature=1.0, top_k=0,
                   top_p=1.0, eos_id=None, num_samples=1, generator=None):
    """generate() without a cache: every step reruns the model on the whole sequence. Reference only."""
    embeds, pad = left_pad(prompt_embeds, prompt_lengths)  # (B, T, D), (B,)
    embeds = embeds.to(next(model.parameters()).dtype).repeat_interleave(num_samples, dim=0)  # (B*G, T, D)
    pad = pad.repeat_interleave(num_samples)
    done = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    tokens, logprobs = [], []
    for step in range(max_new_tokens):
        logits = model(embeds=embeds, pad=pad)[:, -1]  # (B*G, V)
        token, logprob = sample_next(logits, temperature, top_k, top_p, generator)
        tokens.append(token)
        logprobs.append(logprob)
        if eos_id is not None:
            done |= token == eos_id
            if done.all():
                break
        embeds = torch.cat([embeds, model.embed(token[:, None])], dim=1)
    return finish_rollout(tokens, logprobs, max_new_tokens, eos_id)


def sequence_logprobs(model, prompt_embeds, prompt_lengths, completion_tokens, completion_lengths,
                      temperature=1.0):
    """Per-token log-probs of given completions, teacher-forced (differentiable).

    completion_tokens (N, L) with N = B * G, row b*G+g continuing prompt b (the Rollout
    layout); completion_lengths (N,). Returns (N, L) log_softmax(logits / temperature) at
    each token, 0 past each row's length. Each prompt runs once and its keys and values are
    shared by its G completions (llm.PrefixCache), as in generate(): with audio prompts several
    times longer than the completions, most of the work of running every row whole
    (sequence_logprobs_naive, the twin the tests hold this to).
    """
    embeds, pad = left_pad(prompt_embeds, prompt_lengths)  # (B, T, D), (B,)
    B, N, L = embeds.shape[0], *completion_tokens.shape
    if N % B:
        raise ValueError(f"sequence_logprobs: {N} completions do not split into groups over {B} prompts")
    cache = PrefixCache(pad)
    first = model(embeds=embeds.to(model.wte.weight.dtype), kv_cache=cache)[:, -1:]  # (B, 1, V): predicts token 0
    logits = first.repeat_interleave(N // B, dim=0)
    if L > 1:  # the rest: each completion's tokens after its prompt's shared keys and values
        logits = torch.cat([logits, model(idx=completion_tokens[:, :-1], kv_cache=cache.repeat_interleave(N // B))],
                           dim=1)
    return _token_logprobs(logits, completion_tokens, completion_lengths, temperature)


def sequence_logprobs_naive(model, prompt_embeds, prompt_lengths, completion_tokens, completion_lengths,
                            temperature=1.0):
    """sequence_logprobs running every row whole (prompt copied G times). Reference only."""
    embeds, pad = left_pad(prompt_embeds, prompt_lengths)  # (B, T, D), (B,)
    B, T, _ = embeds.shape
    N, L = completion_tokens.shape
    embeds, pad = embeds.repeat_interleave(N // B, dim=0), pad.repeat_interleave(N // B)
    x = torch.cat([embeds.to(model.wte.weight.dtype), model.embed(completion_tokens[:, :-1])], dim=1)
    logits = model(embeds=x, pad=pad)[:, T - 1:]  # (N, L, V): slot T-1+i predicts token i
    return _token_logprobs(logits, completion_tokens, completion_lengths, temperature)


def _token_logprobs(logits, tokens, lengths, temperature):
    """(N, L, V) logits -> (N, L) log-probs of tokens at the temperature, 0 past each row's length."""
    N, L = tokens.shape
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    logprobs = -F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view(N, L)
    keep = torch.arange(L, device=logprobs.device)[None] < lengths.to(logprobs.device)[:, None]
    return logprobs * keep
