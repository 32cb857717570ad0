"""Decoder-only transformer LLM (Llama-style) and its pre-allocated KV cache.

RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, optional tied embeddings. The model
takes token ids or input embeddings, so the speech LLM can feed one sequence of
[audio embeddings][text token embeddings] built with `LLM.embed`.

Prompts of different lengths share a batch LEFT-padded: row b has `pad[b]` padding slots
before its first real token. A key mask hides the padding from attention and RoPE
positions count from each row's first real token, so a padded row computes what the same
prompt computes alone. With left padding every row's next token lands in the same cache
slot, so a decode step is one in-place write for the whole batch.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

CUDA_SDPA = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class LLMConfig:
    vocab_size: int = 1024  # token ids (text BPE or speech tokens, specials included)
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # query heads
    n_kv_head: int = 2  # key/value heads, shared by n_head // n_kv_head query heads (GQA)
    n_embd: int = 256  # model width; head_dim = n_embd // n_head
    max_seq_len: int = 512  # longest sequence in slots: left padding + prompt + completion
    dropout: float = 0.0  # dropout on attention probabilities and residual branches (training only)
    tie_embeddings: bool = True  # the output head reuses the input embedding matrix
    rope_theta: float = 10000.0  # RoPE base; larger = slower-rotating, longer-range frequencies
    mlp_hidden: int = 0  # SwiGLU hidden width; 0: ~8/3 n_embd rounded up to a multiple of 32
    norm_eps: float = 1e-6  # RMSNorm epsilon
    qkv_bias: bool = False  # biases on the query/key/value projections (Qwen2 has them)


class KVCache:
    """Keys and values of every layer, pre-allocated and written in place.

    k, v: (n_layer, B, n_kv_head, max_len, head_dim). The first `pos` slots are filled, the
    same number for every row (prompts are left-padded); `pad` (B,) counts each row's
    padding slots at the start.
    """

    def __init__(self, config, batch_size, max_len, pad=None, device=None, dtype=torch.float32):
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pad = torch.zeros(batch_size, dtype=torch.long, device=device) if pad is None else pad.to(device)
        self.pos = 0
        self.fused = self.bias = None  # LLM.decode_step's fused weights and padding bias, made on first use

    def update(self, layer, k, v):
        """Write k, v (B, n_kv_head, T, head_dim) at slots [pos, pos + T); return slots [0, pos + T)."""
        end = self.pos + k.shape[2]
        if end > self.k.shape[3]:
            raise ValueError(f"KVCache is full: {end} slots needed, {self.k.shape[3]} allocated")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def repeat_interleave(self, n):
        """A new cache with each row repeated n times (row b -> rows b*n .. b*n+n-1): group rollouts."""
        new = KVCache.__new__(KVCache)
        new.k, new.v = self.k.repeat_interleave(n, dim=1), self.v.repeat_interleave(n, dim=1)
        new.pad, new.pos, new.fused, new.bias = self.pad.repeat_interleave(n), self.pos, None, None
        return new


class PrefixCache:
    """KVCache's differentiable twin for training: each layer's keys and values are concatenated,
    not written in place, so gradients flow through them. A prompt runs once and its keys and
    values are shared by its G completions (repeat_interleave), as in the sampler's rollouts."""

    def __init__(self, pad):
        self.k, self.v, self.pad, self.pos = {}, {}, pad, 0

    def update(self, layer, k, v):
        if layer in self.k:
            k, v = torch.cat([self.k[layer], k], dim=2), torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def repeat_interleave(self, n):
        new = PrefixCache(self.pad.repeat_interleave(n))
        new.k = {i: k.repeat_interleave(n, dim=0) for i, k in self.k.items()}
        new.v = {i: v.repeat_interleave(n, dim=0) for i, v in self.v.items()}
        new.pos = self.pos
        return new


def rope_tables(n_positions, head_dim, theta=10000.0, device=None):
    """RoPE's cos, sin (n_positions, head_dim / 2): position p rotates channel pair i by
    p * theta^(-2i / head_dim). Shared by this LLM and the conformer encoder."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = torch.outer(torch.arange(n_positions, device=device).float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate channel pairs (i, i + head_dim/2) by position-dependent angles. x: (B, H, T, head_dim)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def attention_mask(q_slots, n_keys, pad):
    """(B, 1, T, n_keys) bool: the query at slot i sees key j iff j <= i and j is not padding.

    A padding query also sees itself, so no row is fully masked (SDPA would return NaN);
    its output is garbage that no real token ever attends to.
    """
    k = torch.arange(n_keys, device=q_slots.device)
    causal = k[None, :] <= q_slots[:, None]  # (T, S)
    real = k[None, :] >= pad[:, None]  # (B, S)
    self_ = k[None, :] == q_slots[:, None]  # (T, S)
    return ((causal[None] & real[:, None]) | self_[None]).unsqueeze(1)


def sdpa(q, k, v, **kw):
    """F.scaled_dot_product_attention, but in fp32 under CPU autocast: PyTorch's bf16 CPU
    attention backward profiled ~8x slower than fp32's on our models, and attention is a small
    share of their FLOPs. The result is fp32; the next Linear casts it back to bf16.
    In bf16 on CUDA, without cuDNN's attention (PyTorch's first choice on H100s): it builds a
    plan for every new shape, and our batches come in hundreds of shapes (bench/train_step.py)."""
    if q.device.type == "cuda" and q.dtype != torch.float32:
        with sdpa_kernel(CUDA_SDPA):
            return F.scaled_dot_product_attention(q, k, v, **kw)
    if q.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return F.scaled_dot_product_attention(q, k, v, **kw)
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kw)


class Attention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        if config.n_embd % config.n_head or config.n_head % config.n_kv_head:
            raise ValueError(f"n_embd ({config.n_embd}) must divide by n_head ({config.n_head}) "
                             f"and n_head by n_kv_head ({config.n_kv_head})")
        self.layer_idx, self.n_head, self.n_kv_head = layer_idx, config.n_head, config.n_kv_head
        self.head_dim, self.dropout = config.n_embd // config.n_head, config.dropout
        self.wq = nn.Linear(config.n_embd, config.n_head * self.head_dim, bias=config.qkv_bias)
        self.wk = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=config.qkv_bias)
        self.wv = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=config.qkv_bias)
        self.wo = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos, sin, mask, kv_cache):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.wv(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, Hkv, S, hd): the past and these T
        # enable_gqa: query head h reads kv head h // (n_head // n_kv_head), without copying k, v.
        y = sdpa(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=True,
                 dropout_p=self.dropout if self.training else 0.0)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, D)


class SwiGLU(nn.Module):
    def __init__(self, config):
        super().__init__()
        # ~8/3 width keeps params equal to a 4x GELU MLP
        hidden = config.mlp_hidden or (8 * config.n_embd // 3 + 31) // 32 * 32
        self.gate = nn.Linear(config.n_embd, hidden, bias=False)
        self.up = nn.Linear(config.n_embd, hidden, bias=False)
        self.down = nn.Linear(hidden, config.n_embd, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(config.n_embd, config.norm_eps), nn.RMSNorm(config.n_embd, config.norm_eps)
        self.attn, self.mlp = Attention(config, layer_idx), SwiGLU(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask, kv_cache):
        x = x + self.drop(self.attn(self.norm1(x), cos, sin, mask, kv_cache))
        return x + self.drop(self.mlp(self.norm2(x)))


class LLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = nn.RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # one Parameter, two uses
        cos, sin = rope_tables(config.max_seq_len, config.n_embd // config.n_head, config.rope_theta)
        # Derived from the config, so not saved in checkpoints. (max_seq_len, head_dim / 2)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:  # residual-branch outputs scaled down so the residual stream starts ~unit size
                std = 0.02 / (2 * config.n_layer) ** 0.5 if name.endswith(("wo.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    @torch.no_grad()
    def decode_step(self, token, cache):
        """One new token per row -> logits (B, vocab): what forward(idx=token[:, None], kv_cache=cache)
        computes (tests/test_llm.py holds it to that), in fewer, larger operations for the
        sampler's inner loop: q, k, v (and gate, up) in one matmul each from weights fused once
        per cache, RoPE on q and k together, and attention written out for a single query, with
        padding hidden by an additive bias kept in the cache instead of a mask built every step."""
        c, B, pos = self.config, token.shape[0], cache.pos
        if pos + 1 > min(c.max_seq_len, cache.k.shape[3]):
            raise ValueError(f"sequence of {pos + 1} slots exceeds max_seq_len {c.max_seq_len} or the cache")
        if cache.fused is None:  # (w_qkv, b_qkv, w_gate_up) per block, and the padding bias (B, 1, 1, max_len)
            cache.fused = [(torch.cat([b.attn.wq.weight, b.attn.wk.weight, b.attn.wv.weight]),
                            torch.cat([b.attn.wq.bias, b.attn.wk.bias, b.attn.wv.bias]) if c.qkv_bias else None,
                            torch.cat([b.mlp.gate.weight, b.mlp.up.weight])) for b in self.blocks]
            slots = torch.arange(cache.k.shape[3], device=token.device)
            padding = (slots[None] < cache.pad[:, None])[:, None, None]  # (B, 1, 1, max_len)
            cache.bias = torch.zeros(padding.shape, dtype=cache.k.dtype, device=token.device).masked_fill(
                padding, float("-inf"))
        H, Hkv, hd = c.n_head, c.n_kv_head, c.n_embd // c.n_head
        position = pos - cache.pad  # (B,) RoPE position of the new token
        cos, sin = self.rope_cos[position][:, None], self.rope_sin[position][:, None]  # (B, 1, hd/2)
        bias = cache.bias[..., :pos + 1]
        x = self.wte(token)  # (B, D)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for i, (block, (w_qkv, b_qkv, w_gate_up)) in enumerate(zip(self.blocks, cache.fused)):
            qkv = F.linear(F.rms_norm(x, (c.n_embd,), block.norm1.weight, c.norm_eps), w_qkv, b_qkv)
            qk = apply_rope(qkv[:, :(H + Hkv) * hd].view(B, H + Hkv, hd), cos, sin)
            cache.k[i, :, :, pos] = qk[:, H:]
            cache.v[i, :, :, pos] = qkv[:, (H + Hkv) * hd:].view(B, Hkv, hd)
            k, v = cache.k[i, :, :, :pos + 1], cache.v[i, :, :, :pos + 1]  # (B, Hkv, S, hd)
            q = qk[:, :H].reshape(B, Hkv, H // Hkv, hd).to(k.dtype)  # query head h reads kv head h // (H / Hkv)
            with torch.autocast(x.device.type, enabled=False):  # in the cache's dtype, as forward's sdpa
                attn = ((q @ k.transpose(-1, -2)) * hd ** -0.5 + bias).softmax(dim=-1) @ v  # (B, Hkv, H/Hkv, hd)
            x = x + block.attn.wo(attn.reshape(B, c.n_embd))
            gate, up = F.linear(F.rms_norm(x, (c.n_embd,), block.norm2.weight, c.norm_eps), w_gate_up).chunk(2, -1)
            x = x + block.mlp.down(F.silu(gate) * up)
        cache.pos += 1
        return self.head(x)

    def embed(self, idx):
        """Token ids (B, T) -> input embeddings (B, T, D)."""
        return self.wte(idx)

    def forward(self, idx=None, embeds=None, kv_cache=None, pad=None):
        """Logits (B, T, vocab) for token ids idx (B, T) or input embeddings embeds (B, T, D).

        pad (B,): left-padding slots per row (no cache). With kv_cache the new tokens go to
        slots [kv_cache.pos, kv_cache.pos + T), attend to everything cached before them,
        and the cache's own pad is used.
        """
        if (idx is None) == (embeds is None):
            raise ValueError("LLM.forward: pass exactly one of idx or embeds")
        # bf16 embeds (a projector under autocast) are cast up: the residual stream keeps the weights' dtype
        x = self.embed(idx) if embeds is None else embeds.to(self.wte.weight.dtype)  # (B, T, D)
        B, T, _ = x.shape
        start = 0 if kv_cache is None else kv_cache.pos
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} slots exceeds max_seq_len {self.config.max_seq_len}")
        pad = kv_cache.pad if kv_cache is not None else pad
        slots = torch.arange(start, start + T, device=x.device)  # (T,)
        # RoPE positions start at 0 at each row's first real token; padding slots clamp to 0, unused.
        positions = slots.expand(B, T) if pad is None else (slots[None] - pad[:, None]).clamp(min=0)
        cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)  # (B, 1, T, hd/2)
        # Plain causal attention (the fast training path) unless there is padding or a cache.
        mask = None if pad is None else attention_mask(slots, start + T, pad)
        for block in self.blocks:
            x = block(x, cos.to(x.dtype), sin.to(x.dtype), mask, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += T
        return self.head(x)  # (B, T, vocab)

    def head(self, x):
        """The last hidden states -> logits: final norm, then the output layer."""
        return self.lm_head(self.norm(x))
