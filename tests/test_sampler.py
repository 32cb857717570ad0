import pytest
import torch

from nanospeechrl.llm import LLM, KVCache, LLMConfig
from nanospeechrl.sampler import (filter_logits, generate, generate_naive, left_pad, sample_next,
                                  sequence_logprobs, sequence_logprobs_naive)

ATOL = 1e-5
V, D = 50, 64


def tiny_model(seed=0):
    """A small fp32 model with wider-than-default weights, so logits are far from uniform."""
    torch.manual_seed(seed)
    model = LLM(LLMConfig(vocab_size=V, n_layer=2, n_head=4, n_kv_head=2, n_embd=D, max_seq_len=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return model


def prompts(lengths=(5, 9, 1), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, D, generator=g) for n in lengths]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def naive_logits(model, prompt, tokens):
    """Uncached logits (L, V) before each of tokens (L,) for one prompt (T, D) alone."""
    x = torch.cat([prompt, model.embed(tokens[:-1])])[None]
    return model(embeds=x)[0, prompt.shape[0] - 1:]


def test_left_pad_list_and_padded_tensor_agree():
    ps = prompts()
    a, pad = left_pad(ps)
    assert a.shape == (3, 9, D) and pad.tolist() == [4, 0, 8]
    torch.testing.assert_close(a[0, 4:], ps[0], atol=0, rtol=0)
    assert (a[0, :4] == 0).all()
    right = torch.nn.utils.rnn.pad_sequence(ps, batch_first=True)  # (3, 9, D) right-padded
    b, pad_b = left_pad(right, torch.tensor([5, 9, 1]))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert pad_b.tolist() == [4, 0, 8]
    with pytest.raises(ValueError, match="prompt lengths"):
        left_pad(right, torch.tensor([5, 0, 1]))


def test_cached_step_logits_equal_naive_for_padded_batch():
    model = tiny_model()
    ps = prompts()
    embeds, pad = left_pad(ps)
    forced = torch.randint(0, V, (3, 6))
    cache = KVCache(model.config, 3, 9 + 6, pad)
    steps = [model(embeds=embeds, kv_cache=cache)[:, -1]]
    for t in range(5):
        steps.append(model(idx=forced[:, t:t + 1], kv_cache=cache)[:, -1])
    cached = torch.stack(steps, dim=1)  # (3, 6, V)
    for b, p in enumerate(ps):
        torch.testing.assert_close(cached[b], naive_logits(model, p, forced[b]), atol=ATOL, rtol=0)


def test_greedy_cached_equals_naive():
    model = tiny_model()
    a = generate(model, prompts(), max_new_tokens=20, temperature=0)
    b = generate_naive(model, prompts(), max_new_tokens=20, temperature=0)
    assert torch.equal(a.tokens, b.tokens) and a.lengths.tolist() == [20, 20, 20]
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=ATOL, rtol=0)
    for i, p in enumerate(prompts()):  # temperature 0: plain log_softmax at the argmax
        lp = naive_logits(model, p, a.tokens[i]).log_softmax(-1)
        assert torch.equal(lp.argmax(-1), a.tokens[i])
        torch.testing.assert_close(a.logprobs[i], lp.amax(-1), atol=ATOL, rtol=0)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8)])
def test_sampled_cached_equals_naive_and_logprobs_are_full_vocab(temperature, top_k, top_p):
    model = tiny_model()
    kw = dict(max_new_tokens=16, temperature=temperature, top_k=top_k, top_p=top_p, num_samples=2)
    a = generate(model, prompts(), generator=gen(3), **kw)
    b = generate_naive(model, prompts(), generator=gen(3), **kw)
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=ATOL, rtol=0)
    for i in range(6):  # row i continues prompt i // 2
        logits = naive_logits(model, prompts()[i // 2], a.tokens[i]) / temperature
        want = logits.log_softmax(-1).gather(-1, a.tokens[i][:, None])[:, 0]  # untruncated distribution
        torch.testing.assert_close(a.logprobs[i], want, atol=ATOL, rtol=0)
        allowed = filter_logits(logits, top_k, top_p) > float("-inf")  # (L, V)
        assert allowed.gather(-1, a.tokens[i][:, None]).all()
        if top_k:
            assert (allowed.sum(-1) == top_k).all()


def test_sequence_logprobs_equal_rollout_logprobs():
    model = tiny_model()
    ps = prompts()
    r = generate(model, ps, max_new_tokens=12, temperature=0.8, num_samples=3, generator=gen(0))
    lp = sequence_logprobs(model, ps, None, r.tokens, r.lengths, temperature=0.8)
    torch.testing.assert_close(lp, r.logprobs, atol=ATOL, rtol=0)
    right = torch.nn.utils.rnn.pad_sequence(ps, batch_first=True)
    lp2 = sequence_logprobs(model, right, torch.tensor([5, 9, 1]), r.tokens, r.lengths, temperature=0.8)
    torch.testing.assert_close(lp2, r.logprobs, atol=ATOL, rtol=0)
    greedy = generate(model, ps, max_new_tokens=12, temperature=0)
    lp0 = sequence_logprobs(model, ps, None, greedy.tokens, greedy.lengths, temperature=0)
    torch.testing.assert_close(lp0, greedy.logprobs, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="do not split into groups"):
        sequence_logprobs(model, ps, None, r.tokens[:4], r.lengths[:4])


@pytest.mark.parametrize("new_tokens", [1, 7])
def test_shared_prompt_logprobs_and_gradients_equal_the_naive_twin(new_tokens):
    """One prompt pass shared by G completions (PrefixCache) == every row run whole: the values,
    and the gradients of the weights and of the prompt embeddings (the projector's path)."""
    model = tiny_model()
    r = generate(model, prompts(), max_new_tokens=new_tokens, num_samples=3, generator=gen(0))
    grads = []
    for fn in (sequence_logprobs, sequence_logprobs_naive):
        model.zero_grad()
        ps = [p.clone().requires_grad_() for p in prompts()]
        lp = fn(model, ps, None, r.tokens, r.lengths, temperature=0.8)
        (lp * torch.linspace(-1, 1, lp.numel()).view_as(lp)).sum().backward()
        grads.append((lp.detach(), [p.grad for p in ps], [p.grad.clone() for p in model.parameters()]))
    (lp, g_in, g_w), (lp_naive, g_in_naive, g_w_naive) = grads
    torch.testing.assert_close(lp, lp_naive, atol=ATOL, rtol=0)
    assert any(g.abs().sum() > 0 for g in g_w)
    for a, b in zip(g_in + g_w, g_in_naive + g_w_naive):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_grouped_prefill_equals_separate_prompts():
    model = tiny_model()
    ps, G = prompts(), 4
    grouped = generate(model, ps, max_new_tokens=12, num_samples=G, generator=gen(5))
    repeated = [p for p in ps for _ in range(G)]  # each prompt prefilled G times
    separate = generate(model, repeated, max_new_tokens=12, num_samples=1, generator=gen(5))
    assert grouped.tokens.shape == (12, 12)
    assert torch.equal(grouped.tokens, separate.tokens)
    torch.testing.assert_close(grouped.logprobs, separate.logprobs, atol=ATOL, rtol=0)
    assert not torch.equal(grouped.tokens[0], grouped.tokens[1])  # the G samples differ


def test_per_row_eos_stop():
    model = tiny_model()
    free = generate(model, prompts(), max_new_tokens=16, generator=gen(2))
    eos = int(free.tokens[0, 3])
    stopped = generate(model, prompts(), max_new_tokens=16, eos_id=eos, generator=gen(2))
    naive = generate_naive(model, prompts(), max_new_tokens=16, eos_id=eos, generator=gen(2))
    for i in range(3):
        hits = (free.tokens[i] == eos).nonzero()
        n = int(hits[0]) + 1 if len(hits) else 16  # up to and including the first EOS
        assert int(stopped.lengths[i]) == n
        assert torch.equal(stopped.tokens[i, :n], free.tokens[i, :n])
        assert (stopped.tokens[i, n:] == 0).all() and (stopped.logprobs[i, n:] == 0).all()
    assert int(stopped.lengths[0]) <= 4 and stopped.tokens.shape == (3, 16)
    assert torch.equal(stopped.tokens, naive.tokens) and torch.equal(stopped.lengths, naive.lengths)


def test_all_rows_stop_early_still_pads_to_max_new_tokens():
    model = tiny_model()
    first = generate(model, prompts((4,)), max_new_tokens=10, temperature=0)
    r = generate(model, prompts((4,)), max_new_tokens=10, temperature=0, eos_id=int(first.tokens[0, 0]))
    assert r.lengths.tolist() == [1] and r.tokens.shape == (1, 10) and (r.tokens[0, 1:] == 0).all()


def test_filter_logits_keeps_top_k_and_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda **kw: (filter_logits(logits, **kw) > float("-inf"))[0].tolist()
    assert kept(top_k=2) == [True, True, False, False]
    assert kept(top_p=0.7) == [True, True, False, False]
    assert kept(top_p=0.9) == [True, True, True, False]
    assert kept(top_p=0.0) == [True, False, False, False]
    assert kept(top_k=3, top_p=0.99) == [True, True, True, False]
    draws, _ = sample_next(logits.expand(2000, 4), top_k=2, generator=gen(0))
    assert set(draws.tolist()) == {0, 1}
    assert abs((draws == 0).float().mean().item() - 0.5 / 0.8) < 0.05  # renormalised over the kept set


def test_seeded_generator_is_reproducible():
    model = tiny_model()
    a = generate(model, prompts(), max_new_tokens=10, generator=gen(7))
    b = generate(model, prompts(), max_new_tokens=10, generator=gen(7))
    c = generate(model, prompts(), max_new_tokens=10, generator=gen(8))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)


def test_variable_length_batch_equals_each_prompt_alone():
    model = tiny_model()
    batch = generate(model, prompts(), max_new_tokens=15, temperature=0)
    for i, p in enumerate(prompts()):
        alone = generate(model, [p], max_new_tokens=15, temperature=0)
        assert torch.equal(batch.tokens[i], alone.tokens[0])
        torch.testing.assert_close(batch.logprobs[i], alone.logprobs[0], atol=ATOL, rtol=0)
