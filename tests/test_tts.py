"""The TTS half's pieces: the FSQ quantiser, flow matching, the speech-token sampler, the speaker encoder."""
import pytest
import torch

from nanospeechrl.encoder import CTC_CHARS
from nanospeechrl.llm import LLMConfig
from nanospeechrl.sampler import generate_naive
from nanospeechrl.tts.flow import FOLD, FlowConfig, TokenToMel, fold, unfold
from nanospeechrl.tts.speaker import SpeakerConfig, SpeakerEncoder, label_parts
from nanospeechrl.tts.token_lm import TokenLM, cut_at_caps, length_caps, sample_tokens, speech_tokens
from nanospeechrl.tts.tokens import FSQ, SpeechTokenizer, TokenizerConfig, codebook_usage


def test_fsq_codes_round_trip_and_cover_the_grid():
    fsq = FSQ(16, dims=3, levels=5)
    grid = torch.cartesian_prod(*[torch.arange(-2, 3)] * 3).float()  # every point of the 5^3 grid
    codes = fsq.codes(grid)
    assert sorted(codes.tolist()) == list(range(125))  # one code per point, all of them used
    assert fsq.values(codes).equal(grid)
    h = torch.randn(4, 7, 16)
    quantised, codes = fsq(h)
    assert quantised.shape == h.shape and codes.shape == (4, 7) and codes.max() < 125
    assert torch.allclose(fsq.embed(codes), quantised, atol=1e-6)  # what the next layer sees, from the codes alone
    with pytest.raises(ValueError, match="odd"):
        FSQ(16, 3, 4)


def test_fsq_gradient_passes_straight_through_the_rounding():
    """d(loss)/d(h) through the quantiser equals the gradient with the rounding removed."""
    torch.manual_seed(0)
    fsq = FSQ(8, dims=4, levels=3)
    h = torch.randn(5, 8, requires_grad=True)
    target = torch.randn(5, 8)
    ((fsq(h)[0] - target) ** 2).sum().backward()
    g_st = h.grad.clone()
    h.grad = None
    z = torch.tanh(fsq.down(h)) * fsq.half
    q = torch.round(z).detach() + z - z.detach()  # same forward value, identity backward: the hand-written twin
    ((fsq.up(q / fsq.half) - target) ** 2).sum().backward()
    assert g_st.abs().sum() > 0 and torch.allclose(g_st, h.grad, atol=1e-6)


def test_tokenizer_shapes_and_codebook_usage():
    cfg = TokenizerConfig(encoder=dict(d_model=32, n_layer=1, vocab_size=len(CTC_CHARS) + 1), n_upper=1, fsq_dims=2,
                          fsq_levels=3)
    tok = SpeechTokenizer(cfg).eval()
    feats, lens = torch.randn(2, 100, 80), torch.tensor([100, 37])
    logits, out_lens, codes = tok(feats, lens)
    assert logits.shape == (2, 25, len(CTC_CHARS) + 1) and out_lens.tolist() == [25, 10]  # 25 tokens per second
    assert tok.tokenize(feats, lens)[0].equal(codes)
    use = codebook_usage(torch.tensor([0, 0, 1, 1]), 4)
    assert use["codes_used"] == 0.5 and abs(use["perplexity"] - 2) < 1e-5


def test_stride_2_tokenizer_gives_12_5_tokens_a_second_and_ignores_padding():
    """--tok-stride 2: adjacent encoder frames merge before the bottleneck (12.5 tokens a second), CTC
    still reads 25 frames a second, and an utterance's codes do not depend on the padding beside it."""
    torch.manual_seed(0)
    cfg = TokenizerConfig(encoder=dict(d_model=32, n_layer=1, vocab_size=len(CTC_CHARS) + 1, dropout=0.0), n_upper=1,
                          fsq_dims=2, fsq_levels=3, stride=2)
    tok = SpeechTokenizer(cfg).eval()
    feats, lens = torch.randn(2, 100, 80), torch.tensor([100, 33])  # 33 frames: 9 encoder frames, 5 tokens
    logits, out_lens, codes = tok(feats, lens)
    assert codes.shape == (2, 13) and logits.shape[1] == 26 and out_lens.tolist() == [26, 10]
    short, short_lens = tok.tokenize(feats[1:, :33], lens[1:])
    assert short_lens.tolist() == [5] and short[0].equal(tok.tokenize(feats, lens)[0][1, :5])


def test_flow_matching_learns_a_token_to_mel_mapping():
    """A toy: each of 3 tokens stands for a fixed 8-bin 'mel' frame. After training, 10 Euler steps
    from noise land on the right frame for every token (a learned mapping, not 'it ran')."""
    torch.manual_seed(0)
    patterns = torch.tensor([[1.0] * 4 + [-1.0] * 4, [-1.0] * 4 + [1.0] * 4, [0.5, -0.5] * 4])  # (3, 8)
    flow = TokenToMel(FlowConfig(n_codes=3, speaker_dim=4, reference_dim=0, n_mels=8, d_model=64, n_layer=1,
                                 cfg_drop=0.1, cfg_strength=0.0))
    opt = torch.optim.AdamW(flow.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    speaker = torch.zeros(16, 4)
    for _ in range(800):
        tokens = torch.randint(0, 3, (16, 6), generator=gen)
        mel = patterns[tokens].repeat_interleave(FOLD, dim=1)  # (16, 24, 8)
        loss = flow.loss(mel, torch.full((16,), 24), tokens, torch.full((16,), 6), speaker, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokens = torch.tensor([[0, 1, 2, 2, 1, 0]])
    out = flow.eval().sample(tokens, torch.tensor([6]), torch.zeros(1, 4), steps=10, generator=gen)
    target = patterns[tokens].repeat_interleave(FOLD, dim=1)
    assert out.shape == (1, 24, 8)
    assert ((out - target) ** 2).mean() < 0.05 * (target ** 2).mean()
    assert fold(target, 6).shape == (1, 6, 32) and unfold(fold(target, 6)).equal(target)
    # 12.5 tokens a second: each token read at 2 positions of 4 frames, 8 frames a token
    wide = TokenToMel(FlowConfig(n_codes=3, speaker_dim=4, reference_dim=0, n_mels=8, d_model=16, n_layer=1,
                                 repeat=2))
    mel = wide.sample(tokens[:, :3], torch.tensor([2]), torch.zeros(1, 4), steps=2)
    assert mel.shape == (1, 24, 8) and mel[0, 16:].eq(0).all() and mel[0, :16].ne(0).all()
    assert wide.loss(mel, torch.tensor([16]), tokens[:, :3], torch.tensor([2]), torch.zeros(1, 4)).isfinite()


def tiny_lm(n_codes=5, text_vocab=20, seed=0):
    torch.manual_seed(seed)
    return TokenLM(LLMConfig(vocab_size=n_codes + 1 + text_vocab, n_layer=1, n_head=2, n_kv_head=1, n_embd=16,
                             max_seq_len=64), n_codes).eval()


def test_token_lm_samples_only_speech_tokens_or_eos_and_matches_the_naive_sampler():
    lm = tiny_lm()
    prompts = [[6, 7, 8, 9], [6, 10, 9]]
    caps = length_caps(prompts, 3.0)
    assert caps == [8 + 6, 8 + 3]  # ceil(3 * text tokens) + 8; text tokens: the prompt less <tts> and <bos>
    rollout, capped = sample_tokens(lm, prompts, 3.0, num_samples=3, generator=torch.Generator().manual_seed(1))
    naive = generate_naive(lm, lm.embed_prompts(prompts), max_new_tokens=max(caps), eos_id=lm.eos_id, num_samples=3,
                           generator=torch.Generator().manual_seed(1))
    naive, naive_capped = cut_at_caps(naive, torch.tensor(caps).repeat_interleave(3), lm.eos_id)
    assert rollout.tokens.equal(naive.tokens) and rollout.lengths.equal(naive.lengths)
    assert torch.allclose(rollout.logprobs, naive.logprobs, atol=1e-5) and capped.equal(naive_capped)
    assert rollout.tokens.max() <= lm.eos_id  # the output layer covers speech tokens + EOS only
    for row, n, cap, cut in zip(speech_tokens(rollout, lm.eos_id), rollout.lengths.tolist(),
                                torch.tensor(caps).repeat_interleave(3).tolist(), capped.tolist()):
        assert n <= cap and (len(row) == n if cut else len(row) == n - 1)


def test_cut_at_caps_against_a_loop():
    from nanospeechrl.sampler import Rollout
    eos = 9
    tokens = torch.tensor([[1, 2, 9, 0, 0], [1, 2, 3, 4, 9], [1, 1, 1, 1, 1], [9, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 5, 5, 1])
    caps = torch.tensor([4, 3, 5, 2])
    out, capped = cut_at_caps(Rollout(tokens, lengths, tokens.float()), caps, eos)
    want = []
    for row, n, cap in zip(tokens.tolist(), lengths.tolist(), caps.tolist()):
        ends = row[n - 1] == eos and n <= cap
        want.append((n if ends else min(n, cap), not ends))
    assert [(n, c) for n, c in zip(out.lengths.tolist(), capped.tolist())] == want
    assert (out.tokens[1, 3:] == 0).all() and out.logprobs[1, 3:].abs().sum() == 0


def test_token_lm_sft_learns_a_text_to_token_mapping():
    lm = tiny_lm().train()
    prompts, targets = [[6, 7, 9], [6, 8, 9]], [[0, 1, 2, 5], [3, 3, 4, 1, 5]]  # 5 = EOS
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    for _ in range(150):
        loss = lm.sft_loss(prompts, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rollout, capped = sample_tokens(lm.eval(), prompts, 4.0, temperature=0.0)
    assert speech_tokens(rollout, lm.eos_id) == [t[:-1] for t in targets] and not capped.any()


def test_speaker_encoder_batch_equals_one_by_one():
    torch.manual_seed(0)
    enc = SpeakerEncoder(SpeakerConfig(channels=16, n_layer=3, dim=8, classes=(3, 2), mean_norm=True)).eval()
    feats = [torch.randn(n, 80) for n in (57, 120, 13)]
    batch = torch.zeros(3, 120, 80)
    for i, f in enumerate(feats):
        batch[i, :len(f)] = f
    together = enc(batch, torch.tensor([57, 120, 13]))
    alone = torch.cat([enc(f[None], torch.tensor([len(f)])) for f in feats])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=-1), torch.ones(3), atol=1e-5)
    loss = enc.loss(together, torch.tensor([[0, 1], [2, 0], [1, 1]]))
    assert loss > 0 and enc.predict(together).shape == (3, 2)
    assert label_parts("en-gb-scotland+f3") == ["en-gb-scotland", "f3"] and label_parts("1089") == ["1089"]
