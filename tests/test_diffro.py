"""DiffRO (tts/diffro.py), Token2Text, the TTS rewards, and the TTS LM's teacher-forced log-probs."""
import math

import pytest
import torch

from nanospeechrl import rewards
from nanospeechrl.grpo import GRPOConfig, keep_groups, policy_loss
from nanospeechrl.llm import LLMConfig
from nanospeechrl.sampler import sequence_logprobs
from nanospeechrl.tts.diffro import conditional_gumbel, diffro_loss, full_kl, grpo_diffro_loss, gumbel, relax
from nanospeechrl.tts.rewards import TTS_REWARDS, duration
from nanospeechrl.tts.token2text import Token2Text, Token2TextConfig
from nanospeechrl.tts.token_lm import TokenLM, completion_logits, sample_tokens, token_logprobs


def test_relax_forward_is_a_one_hot_sample_of_softmax():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([relax(logits, generator=g) for _ in range(20000)])
    assert ((draws == 0) | (draws == 1)).all() and draws.sum(-1).eq(1).all()
    assert torch.allclose(draws.mean(0), logits.softmax(-1), atol=0.01)  # Gumbel-max: exact softmax samples
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    one_hot = relax(logits.expand(5, 4), generator=g1)
    assert one_hot.argmax(-1).equal((logits + gumbel((5, 4), g2)).argmax(-1))  # argmax(logits + g), the same g


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_relax_gradient_is_the_soft_samples(tau):
    torch.manual_seed(0)
    logits = torch.randn(3, 6, requires_grad=True)
    weights = torch.randn(3, 6)
    (relax(logits, tau, torch.Generator().manual_seed(1)) * weights).sum().backward()
    straight_through = logits.grad.clone()
    logits.grad = None
    soft = ((logits + gumbel((3, 6), torch.Generator().manual_seed(1))) / tau).softmax(-1)
    (soft * weights).sum().backward()
    assert straight_through.abs().sum() > 0 and torch.allclose(straight_through, logits.grad, atol=1e-6)


def test_full_kl_matches_a_hand_computation():
    p, q = torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([[0.2, 0.5, 0.3]])
    hand = sum(a * math.log(a / b) for a, b in zip(p[0].tolist(), q[0].tolist()))
    kl = full_kl(p.log()[None], q.log()[None], torch.ones(1, 1))
    assert abs(kl.item() - hand) < 1e-6
    assert full_kl(p.log()[None], q.log()[None], torch.zeros(1, 1)).item() == 0  # masked positions count nothing


def tiny_token2text(n_codes=6, seed=0):
    torch.manual_seed(seed)
    model = Token2Text(Token2TextConfig(n_codes=n_codes, d_model=16, n_layer=1, vocab_size=5))
    return model.eval().requires_grad_(False)


def test_token2text_repeat_reads_each_token_twice():
    """repeat 2 (the tokenizer's stride 2): the logits have a frame per 1/25 s, equal to those of the
    tokens repeated by hand into a repeat-1 model with the same weights."""
    torch.manual_seed(0)
    two = Token2Text(Token2TextConfig(n_codes=6, d_model=16, n_layer=1, vocab_size=5, repeat=2)).eval()
    one = Token2Text(Token2TextConfig(n_codes=6, d_model=16, n_layer=1, vocab_size=5)).eval()
    one.load_state_dict(two.state_dict())
    tokens, lengths = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    logits, out_lens = two(tokens, lengths)
    ref, ref_lens = one(tokens.repeat_interleave(2, 1), 2 * lengths)
    assert out_lens.tolist() == [6, 4] and torch.allclose(logits[0], ref[0], atol=1e-5)
    assert torch.allclose(logits[1, :4], ref[1, :4], atol=1e-5)


def test_token2text_soft_input_equals_token_input_on_one_hots():
    model = tiny_token2text()
    tokens, lengths = torch.tensor([[1, 4, 2, 0], [3, 3, 5, 5]]), torch.tensor([3, 4])
    logits, _ = model(tokens, lengths)
    one_hot = torch.nn.functional.one_hot(tokens, 6).float()
    labels, label_lens = torch.tensor([1, 2, 3, 4]), torch.tensor([2, 2])
    lp = model.logprob_of_text(one_hot, lengths, labels, label_lens)
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)
    want = -torch.nn.functional.ctc_loss(log_probs, labels, lengths, label_lens, reduction="none", zero_infinity=True)
    assert torch.allclose(lp, want, atol=1e-5)


def test_diffro_raises_the_text_likelihood_of_the_tokens():
    """A toy: the 'policy' is a free table of logits (4 positions x 6 tokens), Token2Text a frozen
    random model, the text fixed. Minimising the DiffRO loss raises E[log P(text | sampled tokens)]."""
    t2t = tiny_token2text()
    labels, label_lens = torch.tensor([1, 3]), torch.tensor([2])
    logits = torch.zeros(1, 4, 6, requires_grad=True)
    mask = torch.ones(1, 4)

    def text_logprob(one_hot, m):
        return t2t.logprob_of_text(one_hot, m.sum(1).long(), labels, label_lens)

    def expected_reward():
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return sum(text_logprob(relax(logits, generator=g), mask).item() for _ in range(200)) / 200

    before = expected_reward()
    opt = torch.optim.Adam([logits], lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        loss, metrics = diffro_loss(logits, torch.zeros(1, 4, 6), mask, text_logprob, beta=0.0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = expected_reward()
    assert after > before + 1.0, (before, after)
    # the same training with a strong KL keeps the policy near the reference (uniform logits here)
    kl_free = full_kl(logits, torch.zeros(1, 4, 6), mask).sum().item()
    held = torch.zeros(1, 4, 6, requires_grad=True)
    opt, g = torch.optim.Adam([held], lr=0.1), torch.Generator().manual_seed(0)
    for _ in range(100):
        loss, metrics = diffro_loss(held, torch.zeros(1, 4, 6), mask, text_logprob, beta=5.0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    kl_held = full_kl(held, torch.zeros(1, 4, 6), mask).sum().item()
    assert kl_held < 0.25 * kl_free and kl_free > 1.0, (kl_held, kl_free)


def test_conditional_gumbel_is_a_fresh_draw_given_its_argmax():
    """relax(logits, tokens=k): the forward value is one_hot(k) exactly, and the soft sample it
    differentiates has the distribution of a fresh Gumbel-softmax sample whose argmax is k."""
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    n, k = 40000, 1
    z = conditional_gumbel(logits.expand(n, 4), torch.full((n,), k), torch.Generator().manual_seed(0))
    assert z.argmax(-1).eq(k).all()
    fresh = logits + gumbel((8 * n, 4), torch.Generator().manual_seed(1))
    fresh = fresh[fresh.argmax(-1) == k]  # rejection: the fresh draws that chose k
    assert len(fresh) > 2000
    assert torch.allclose(z.softmax(-1).mean(0), fresh.softmax(-1).mean(0), atol=0.01)
    assert torch.allclose(z.mean(0), fresh.mean(0), atol=0.05)
    tokens = torch.tensor([[3, 0], [2, 2]])
    x = torch.randn(2, 2, 4, requires_grad=True)
    one_hot = relax(x, tokens=tokens, generator=torch.Generator().manual_seed(2))
    assert one_hot.equal(torch.nn.functional.one_hot(tokens, 4).float())
    (one_hot * torch.randn(2, 2, 4)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_diffro_relaxes_speech_tokens_only_but_kl_covers_eos():
    torch.manual_seed(0)
    logits, ref = torch.randn(2, 3, 7, requires_grad=True), torch.randn(2, 3, 7)
    seen = []

    def text_logprob(one_hot, m):
        seen.append(one_hot.shape)
        return (one_hot * torch.arange(6.0)).sum((1, 2))

    mask = torch.tensor([[1.0, 1, 0], [1, 1, 1]])
    loss, m = diffro_loss(logits, ref, mask, text_logprob, beta=0.5, generator=torch.Generator(), n_relaxed=6)
    assert seen == [(2, 3, 6)]
    kl = full_kl(logits, ref, mask).sum(1)
    assert abs(m["diffro/kl"] - (kl / mask.sum(1)).mean().item()) < 1e-6


def test_tts_rewards_by_hand():
    assert duration([""] * 4, [""] * 4, lengths=[10, 20, 30, 40], group=2) == [-1 / 3, -1 / 3, -1 / 7, -1 / 7]
    assert duration([""] * 3, [""] * 3, lengths=[10, 10, 25], group=3) == [0.0, 0.0, -1.5]
    assert TTS_REWARDS["cer"](["helo world"], ["Hello, world!"]) == [1 - 1 / 11]
    total, parts = rewards.score({"cer": 1.0, "duration": 2.0}, ["ab", "ab"], ["ab", "abcd"], known=TTS_REWARDS,
                                 lengths=[10, 30], group=2)
    assert parts["cer"] == [1.0, 0.5] and parts["duration"] == [-0.5, -0.5] and total == [0.0, -0.5]
    with pytest.raises(ValueError, match="unknown reward 'wer'.*cer, duration, similarity"):
        rewards.parse_rewards("wer:1", TTS_REWARDS)


def test_completion_logits_match_the_sampler_and_sequence_logprobs():
    """The TTS update's teacher-forced log-probs equal sampler.sequence_logprobs and the log-probs the
    rollout itself recorded (so GRPO's ratio starts at exactly 1)."""
    torch.manual_seed(0)
    lm = TokenLM(LLMConfig(vocab_size=5 + 1 + 20, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, max_seq_len=64),
                 5).eval()
    prompts = [[6, 7, 8, 9], [6, 10, 9]]
    rollout, capped = sample_tokens(lm, prompts, 3.0, num_samples=2, generator=torch.Generator().manual_seed(2))
    logits = completion_logits(lm, prompts, rollout.tokens, rollout.lengths)
    mine = token_logprobs(logits, rollout.tokens, rollout.lengths)
    theirs = sequence_logprobs(lm, lm.embed_prompts(prompts), None, rollout.tokens, rollout.lengths)
    assert torch.allclose(mine, theirs, atol=1e-5) and torch.allclose(mine, rollout.logprobs, atol=1e-5)


def test_grpo_diffro_loss_is_grpo_plus_diffro_on_the_positive_advantage_rows():
    """The combined update's loss: GRPO's policy loss over every kept row plus DiffRO's loss over
    the rows diffro_rows selects (the filter: positive advantage), DiffRO relaxing the rollout's
    own tokens; each part equal to the function it is built from."""
    torch.manual_seed(0)
    lm = TokenLM(LLMConfig(vocab_size=6 + 1 + 20, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, max_seq_len=64),
                 6).eval()
    t2t = tiny_token2text()
    prompts = [[7, 8, 9, 10], [7, 11, 10]]
    rollout, _ = sample_tokens(lm, prompts, 3.0, num_samples=2, generator=torch.Generator().manual_seed(1))
    mask = (torch.arange(rollout.tokens.shape[1])[None] < rollout.lengths[:, None]).float()
    advantages = torch.tensor([[1.0, -1.0], [-0.5, 0.5]])
    batch = keep_groups(rollout.tokens, rollout.lengths, mask, advantages, torch.zeros(4, dtype=torch.bool),
                        torch.ones(2, dtype=torch.bool), 2)
    ref_logits = completion_logits(lm, prompts, batch.tokens, batch.lengths).detach() + 0.1 * torch.randn(4, 1, 7)
    labels = [[1, 2], [3], [4, 1], [2, 2, 3]]
    cfg, positive = GRPOConfig(num_generations=2, beta=0.1), batch.advantages > 0
    assert positive.tolist() == [True, False, False, True]

    def combined(use_grpo, rows, seed=5):
        return grpo_diffro_loss(lm, t2t, prompts, batch, ref_logits, [], labels, use_grpo, rows, 0.1, cfg,
                                torch.Generator().manual_seed(seed))

    logits = completion_logits(lm, prompts, batch.tokens, batch.lengths)
    logp = token_logprobs(logits, batch.tokens, batch.lengths)
    grpo_only, _ = policy_loss(logp, logp.detach(), token_logprobs(ref_logits, batch.tokens, batch.lengths),
                               batch.advantages, batch.mask, cfg)
    speech = batch.mask * (batch.tokens != lm.eos_id)
    targets = torch.tensor([c for i in (0, 3) for c in labels[i]])
    target_lens = torch.tensor([len(labels[i]) for i in (0, 3)])
    diffro_only, _ = diffro_loss(
        logits[positive], ref_logits[positive], speech[positive],
        lambda one_hot, m: t2t.logprob_of_text(one_hot, m.sum(1).long(), targets, target_lens), 0.1,
        torch.Generator().manual_seed(5), lm.n_codes, batch.tokens[positive])
    loss, metrics = combined(True, torch.zeros(4, dtype=torch.bool))
    assert torch.allclose(loss, grpo_only, atol=1e-6) and "diffro/rows" not in metrics
    loss, metrics = combined(False, positive)
    assert torch.allclose(loss, diffro_only, atol=1e-5) and metrics["diffro/rows"] == 0.5
    loss, metrics = combined(True, positive)
    assert torch.allclose(loss, grpo_only + diffro_only, atol=1e-5) and metrics["kl"] >= 0
    everything, _ = combined(False, torch.ones(4, dtype=torch.bool))  # both-nofilter: every row
    assert not torch.allclose(everything, diffro_only)
