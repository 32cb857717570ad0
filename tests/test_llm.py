import pytest
import torch
import torch.nn.functional as F

from nanospeechrl.llm import LLM, KVCache, LLMConfig, sdpa

ATOL = 1e-5


def tiny_model(seed=0, **overrides):
    """A small fp32 model with wider-than-default weights, so logits are far from uniform."""
    torch.manual_seed(seed)
    kw = dict(vocab_size=50, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, max_seq_len=64)
    model = LLM(LLMConfig(**{**kw, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return model


def test_default_config_is_the_tiny_cpu_model():
    c = LLMConfig()
    assert (c.n_layer, c.n_head, c.n_kv_head, c.n_embd, c.max_seq_len) == (4, 4, 2, 256, 512)


def test_forward_shapes_and_input_check():
    model = tiny_model()
    idx = torch.randint(0, 50, (3, 10))
    assert model(idx).shape == (3, 10, 50)
    assert model.embed(idx).shape == (3, 10, 64)
    with pytest.raises(ValueError, match="exactly one of idx or embeds"):
        model()
    with pytest.raises(ValueError, match="exactly one of idx or embeds"):
        model(idx, embeds=model.embed(idx))
    with pytest.raises(ValueError, match="exceeds max_seq_len 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_tied_embeddings_share_storage():
    tied, untied = tiny_model(tie_embeddings=True), tiny_model(tie_embeddings=False)
    assert tied.lm_head.weight.data_ptr() == tied.wte.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.wte.weight.data_ptr()
    n_tied = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) - n_tied == 50 * 64


def test_embeds_input_equals_ids_input():
    model = tiny_model()
    idx = torch.randint(0, 50, (2, 12))
    torch.testing.assert_close(model(embeds=model.embed(idx)), model(idx), atol=0, rtol=0)


def test_causal_future_tokens_do_not_change_past_logits():
    model = tiny_model()
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (idx[:, 7] + 1) % 50
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=ATOL, rtol=0)
    assert (a[:, 7:] - b[:, 7:]).abs().amax() > 1e-2


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_grouped_query_attention(n_kv_head):
    model = tiny_model(n_kv_head=n_kv_head)
    assert model.blocks[0].attn.wk.weight.shape == (n_kv_head * 16, 64)
    idx = torch.randint(0, 50, (2, 9))
    cache = KVCache(model.config, 2, 9)
    assert cache.k.shape == (2, 2, n_kv_head, 9, 16)
    torch.testing.assert_close(model(idx, kv_cache=cache), model(idx), atol=ATOL, rtol=0)


def test_bad_head_counts_raise():
    with pytest.raises(ValueError, match="n_head by n_kv_head"):
        LLM(LLMConfig(n_head=4, n_kv_head=3))


def test_kv_cache_prefill_then_decode_equals_full_forward():
    model = tiny_model()
    idx = torch.randint(0, 50, (3, 14))
    full = model(idx)
    cache = KVCache(model.config, 3, 14)
    out = [model(idx[:, :6], kv_cache=cache)]  # prefill 6, then one token at a time
    for t in range(6, 14):
        out.append(model(idx[:, t:t + 1], kv_cache=cache))
    assert cache.pos == 14
    torch.testing.assert_close(torch.cat(out, dim=1), full, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="KVCache is full"):
        model(idx[:, :1], kv_cache=cache)


@pytest.mark.parametrize("overrides", [{}, {"n_kv_head": 1, "qkv_bias": True}, {"n_kv_head": 4}])
def test_decode_step_equals_forward_with_the_cache(overrides):
    """The sampler's lean decode step (fused weights, one query, padding bias) is forward's twin:
    padded rows, GQA, q/k/v biases, and a cache repeated for group rollouts."""
    model = tiny_model(**overrides)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms and biases away from their init
                p.normal_(1.0 if "norm" in name else 0.0, 0.3)
    idx = torch.randint(0, 50, (2, 5))
    pad = torch.tensor([0, 2])
    fast, slow = (KVCache(model.config, 2, 12, pad=pad) for _ in range(2))
    model(idx, kv_cache=fast), model(idx, kv_cache=slow)
    fast, slow = fast.repeat_interleave(2), slow.repeat_interleave(2)
    for token in torch.randint(0, 50, (6, 4)):
        torch.testing.assert_close(model.decode_step(token, fast), model(token[:, None], kv_cache=slow)[:, -1],
                                   atol=ATOL, rtol=0)
    assert fast.pos == slow.pos == 11
    torch.testing.assert_close(fast.k[:, :, :, :11], slow.k[:, :, :, :11], atol=ATOL, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls, attention in the cache's fp32
        step, ref = model.decode_step(token, fast), model(token[:, None], kv_cache=slow)[:, -1]
    assert (step.float() - ref.float()).abs().max() < 0.02 * ref.abs().max()
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model.decode_step(token, fast)


def test_left_padded_row_equals_the_prompt_alone():
    model = tiny_model()
    short, long = torch.randint(0, 50, (1, 5)), torch.randint(0, 50, (1, 9))
    batch = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1), long])  # (2, 9)
    out = model(batch, pad=torch.tensor([4, 0]))
    assert torch.isfinite(out).all()  # padding queries see themselves, so no NaN rows
    torch.testing.assert_close(out[0, 4:], model(short)[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[1], model(long)[0], atol=ATOL, rtol=0)


def test_cache_repeat_interleave_copies_rows():
    model = tiny_model()
    idx = torch.randint(0, 50, (2, 5))
    cache = KVCache(model.config, 2, 8, pad=torch.tensor([0, 2]))
    model(idx, kv_cache=cache)
    big = cache.repeat_interleave(3)
    assert big.k.shape[1] == 6 and big.pos == 5 and big.pad.tolist() == [0, 0, 0, 2, 2, 2]
    torch.testing.assert_close(big.k[:, 3], cache.k[:, 1], atol=0, rtol=0)
    big.k[:, 0] += 1  # a copy, not a view: the source cache is untouched
    assert not torch.equal(big.k[:, 0], cache.k[:, 0])


def test_gradients_reach_input_embeddings():
    model = tiny_model().train()
    embeds = model.embed(torch.randint(0, 50, (2, 6))).detach().requires_grad_()
    model(embeds=embeds).logsumexp(-1).sum().backward()
    assert embeds.grad.abs().sum() > 0 and model.blocks[0].attn.wq.weight.grad.abs().sum() > 0


def test_sdpa_runs_in_fp32_under_cpu_autocast():
    """The CPU's bf16 attention backward is slow, so sdpa computes attention in fp32 there:
    equal to fp32 attention of the same (bf16) inputs, and differentiable."""
    q, k, v = (torch.randn(2, 4, 7, 16).bfloat16().requires_grad_() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sdpa(q, k, v, is_causal=True)
    assert y.dtype == torch.float32
    naive = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    torch.testing.assert_close(y, naive, atol=1e-6, rtol=0)
    y.sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16
    x = torch.randn(2, 4, 7, 16)  # outside autocast: plain SDPA
    torch.testing.assert_close(sdpa(x, x, x), F.scaled_dot_product_attention(x, x, x), atol=0, rtol=0)


def test_bf16_autocast_forward_is_close_to_fp32():
    model = tiny_model()
    idx = torch.randint(0, 50, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model(idx)
        embeds = model(embeds=model.embed(idx).bfloat16())  # bf16 input embeddings: stream cast up
    ref = model(idx)
    assert (fast.float() - ref).abs().max() < 0.05 * ref.abs().max()
    assert (embeds.float() - ref).abs().max() < 0.05 * ref.abs().max()
