import math
import re
from dataclasses import asdict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nanospeechrl.checkpoint import save_checkpoint
from nanospeechrl.data import collate
from nanospeechrl.rewards import normalize
from nanospeechrl.encoder import CTC_CHARS, CTCHead, Encoder, EncoderConfig, ctc_labels
from nanospeechrl.llm import LLM, LLMConfig
from nanospeechrl.sampler import generate_naive
from nanospeechrl.asr.speechlm import Projector, ProjectorConfig, SpeechLM, load_speechlm
from nanospeechrl.tokenizer import Tokenizer

TEXTS = ["one two three", "hello world", "the cat sat on the mat"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(TEXTS * 4, vocab_size=300)


def configs(tokenizer):
    enc = EncoderConfig(d_model=32, n_layer=1, n_head=2, conv_kernel=3, conv_channels=8, dropout=0.0)
    llm = LLMConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_kv_head=1, n_embd=32, max_seq_len=256)
    return enc, llm


def tiny_model(tokenizer, seed=0, wide=False):
    """A random SpeechLM in eval mode. wide: LLM weights ~N(0, 0.2), so logits are far from
    uniform and greedy choices are not decided by float rounding."""
    torch.manual_seed(seed)
    enc, llm = configs(tokenizer)
    model = SpeechLM(enc, LLM(llm), ProjectorConfig(stack=2)).eval()
    if wide:
        with torch.no_grad():
            for p in model.llm.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.2)
    return model


def batch(lengths, seed=0):
    """Random log-mel-like features of the given lengths -> zero-padded (B, T, 80), (B,) and the list."""
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(n, 80, generator=g) for n in lengths]
    b = collate(feats)
    return b["feats"], b["feat_lens"], feats


# ----------------------------------------------------------------------------- projector

@pytest.mark.parametrize("stack", [1, 2, 3])
def test_projector_lengths_and_padding(stack):
    torch.manual_seed(0)
    proj = Projector(16, 24, stack)
    lengths = torch.tensor([7, 4, 9])
    x = torch.randn(3, 9, 16)
    x = x.masked_fill(torch.arange(9)[None, :, None] >= lengths[:, None, None], 0.0)  # encoders zero padding
    out, out_lens = proj(x, lengths)
    assert out.shape == (3, -(-9 // stack), 24)
    assert out_lens.tolist() == [-(-n // stack) for n in lengths.tolist()]  # ceil(T / stack)
    for b, n in enumerate(lengths.tolist()):
        alone, alone_len = proj(x[b:b + 1, :n], lengths[b:b + 1])
        assert alone_len.item() == out_lens[b].item()
        torch.testing.assert_close(out[b, :out_lens[b]], alone[0], atol=ATOL, rtol=0)


def test_projector_stacks_consecutive_frames():
    proj = Projector(2, 3, stack=2)
    x = torch.arange(10.0).view(1, 5, 2)  # frames [0,1] [2,3] [4,5] [6,7] [8,9]
    first = proj.net[0]
    out, _ = proj(x, torch.tensor([5]))
    # the first linear sees [frame 2t, frame 2t+1] concatenated; the odd tail is stacked with zeros
    stacked = torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 0]])
    expected = proj.net[2](F.gelu(first(stacked)))
    torch.testing.assert_close(out[0], expected)


# ----------------------------------------------------------------------------- SFT loss

def manual_row_loss(model, feat, prompt_ids, target_ids):
    """Summed CE over one utterance's target tokens, computed without sft_loss: (sum, count)."""
    audio, n = model.encode(feat[None], torch.tensor([len(feat)]))
    prompt = torch.cat([audio[0, :n[0]], model.llm.embed(torch.tensor(prompt_ids))])
    x = torch.cat([prompt, model.llm.embed(torch.tensor(target_ids[:-1]))])  # (P + L - 1, D)
    logits = model.llm(embeds=x[None])[0]  # (P + L - 1, V)
    P = len(prompt)
    predicting = logits[P - 1:]  # slot P-1 (the last prompt slot) predicts target 0, and so on
    assert len(predicting) == len(target_ids)
    return F.cross_entropy(predicting, torch.tensor(target_ids), reduction="sum"), len(target_ids)


def test_sft_loss_is_token_weighted_ce_on_targets_only(tokenizer):
    model = tiny_model(tokenizer)
    x, lens, feats = batch([37, 80, 52])  # different audio lengths -> different prompt lengths
    asr, sqa = tokenizer.task_id("asr"), tokenizer.task_id("sqa")
    prompts = [[asr], [sqa] + tokenizer.encode("what was said"), [asr]]
    targets = [tokenizer.encode(t) + [tokenizer.eos_id] for t in TEXTS]  # different target lengths
    assert len({len(t) for t in targets}) == 3

    loss = model.sft_loss(x, lens, prompts, targets)
    sums, counts = zip(*(manual_row_loss(model, f, p, t) for f, p, t in zip(feats, prompts, targets)))
    # mean over all target tokens of the batch = single-row losses weighted by token count
    torch.testing.assert_close(loss, sum(sums) / sum(counts), atol=ATOL, rtol=0)
    single = [model.sft_loss(x[b:b + 1, :lens[b]], lens[b:b + 1], prompts[b:b + 1], targets[b:b + 1])
              for b in range(3)]
    weighted = sum(s * c for s, c in zip(single, counts)) / sum(counts)
    torch.testing.assert_close(loss, weighted, atol=ATOL, rtol=0)


def test_sft_loss_gradient_reaches_encoder_not_through_padding(tokenizer):
    model = tiny_model(tokenizer)
    x, lens, _ = batch([30, 60])
    x = x.clone().requires_grad_()
    targets = [tokenizer.encode(t) + [tokenizer.eos_id] for t in TEXTS[:2]]
    model.sft_loss(x, lens, [[tokenizer.task_id("asr")]] * 2, targets).backward()
    assert x.grad[0, :30].abs().sum() > 0 and x.grad[1].abs().sum() > 0  # audio is trained through
    assert x.grad[0, 30:].abs().sum() == 0  # padded frames do not influence the loss
    assert model.encoder.subsample.conv1.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- decoding

def test_batched_greedy_generate_equals_each_utterance_alone(tokenizer):
    model = tiny_model(tokenizer, wide=True)
    x, lens, feats = batch([23, 81, 50, 64])
    prompt = [tokenizer.task_id("asr")]
    out = model.generate(x, lens, [prompt] * 4, tokenizer.eos_id, max_new_tokens=12, temperature=0.0)
    assert out.lengths.max() > 1  # something was generated, not just an immediate <eos>
    for b, f in enumerate(feats):
        alone = model.generate(f[None], torch.tensor([len(f)]), [prompt], tokenizer.eos_id,
                               max_new_tokens=12, temperature=0.0)
        assert out.tokens[b].tolist() == alone.tokens[0].tolist()
        assert out.lengths[b] == alone.lengths[0]
        torch.testing.assert_close(out.logprobs[b], alone.logprobs[0], atol=1e-4, rtol=0)
    texts = model.transcribe(x, lens, tokenizer, max_new_tokens=12)
    assert texts == [tokenizer.decode(row[:n].tolist()) for row, n in zip(out.tokens, out.lengths)]


def test_overfit_three_utterances(tokenizer):
    """The whole model learns: fixed random 'audio' -> distinct texts, exactly, in 80 steps."""
    model = tiny_model(tokenizer).train()
    x, lens, _ = batch([40, 56, 72], seed=1)
    targets = [tokenizer.encode(t) + [tokenizer.eos_id] for t in TEXTS]
    prompts = [[tokenizer.task_id("asr")]] * 3
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(80):
        loss = model.sft_loss(x, lens, prompts, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    assert model.transcribe(x, lens, tokenizer, max_new_tokens=16) == TEXTS
    assert model.transcribe(x[1:2, :56], lens[1:2], tokenizer, max_new_tokens=16) == [TEXTS[1]]


def nbest_naive(model, tokenizer, x, lens, nbest, ctc_weight, max_new_tokens, seed):
    """decode(nbest=...) the slow way: the uncached sampler, one teacher-forced LLM pass and one
    CTC pass per candidate, a Python max."""
    prompt = [tokenizer.task_id("asr")]
    hidden, hlens = model.encoder(x, lens)
    audio, alens = model.projector(hidden, hlens)
    ctc = model.ctc_head(hidden)
    greedy = generate_naive(model.llm, model.prompts(audio, alens, [prompt] * len(x)), max_new_tokens=max_new_tokens,
                            temperature=0.0, eos_id=tokenizer.eos_id)
    samples = generate_naive(model.llm, model.prompts(audio, alens, [prompt] * len(x)), max_new_tokens=max_new_tokens,
                             temperature=1.0, eos_id=tokenizer.eos_id, num_samples=nbest,
                             generator=torch.Generator().manual_seed(seed))
    out = []
    for b in range(len(x)):
        best, best_score = None, -math.inf
        rows = [(greedy, b)] + [(samples, b * nbest + g) for g in range(nbest)]
        for k, (roll, r) in enumerate(rows):
            ids = roll.tokens[r, :roll.lengths[r]]
            if k > 0 and ids[-1] != tokenizer.eos_id:  # an unfinished sample is no candidate
                continue
            llm = model.logprobs_from_audio(audio[b:b + 1], alens[b:b + 1], [prompt], ids[None],
                                            roll.lengths[r:r + 1]).sum()
            text = tokenizer.decode(ids.tolist())
            labels = ctc_labels(normalize(text))
            ctc_lp = -F.ctc_loss(ctc[b, :hlens[b]].log_softmax(-1), torch.tensor(labels, dtype=torch.long),
                                 hlens[b:b + 1], torch.tensor([len(labels)]), reduction="sum")
            score = (1 - ctc_weight) * llm + ctc_weight * ctc_lp
            if best is None or score > best_score:  # the first of equals, as argmax
                best, best_score = text, score
        out.append(best)
    return out


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3, 1.0])
def test_nbest_decode_equals_naive_rescoring(tokenizer, ctc_weight):
    torch.manual_seed(0)
    enc, llm = configs(tokenizer)
    enc.vocab_size = len(CTC_CHARS) + 1
    model = SpeechLM(enc, LLM(llm), ProjectorConfig(stack=2)).eval()
    with torch.no_grad():  # wide weights: far from ties, and the LLM's choice is not the CTC head's
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    eos_bias = torch.zeros(tokenizer.vocab_size)
    eos_bias[tokenizer.eos_id] = 4.0  # most samples finish within 6 tokens (unfinished ones are dropped)
    head = model.llm.head  # the output layer of forward and of the sampler's decode step
    model.llm.head = lambda x: head(x) + eos_bias
    x, lens, _ = batch([23, 81, 50, 64], seed=2)
    prompts = [[tokenizer.task_id("asr")]] * 4

    def decode(weight):
        return model.decode(x, lens, prompts, tokenizer, max_new_tokens=6, nbest=5, ctc_weight=weight,
                            generator=torch.Generator().manual_seed(5))

    got = decode(ctc_weight)
    assert got == nbest_naive(model, tokenizer, x, lens, 5, ctc_weight, 6, seed=5)
    assert got != model.decode(x, lens, prompts, tokenizer, max_new_tokens=6)  # a sample beat greedy somewhere
    if ctc_weight > 0:
        assert got != decode(0.0)  # and the CTC term changed a choice
    with pytest.raises(ValueError, match="temperature"):
        model.decode(x, lens, prompts, tokenizer, nbest=2, temperature=0.7)


# ----------------------------------------------------------------------------- checkpoints

def test_load_speechlm_round_trip(tokenizer, tmp_path):
    model = tiny_model(tokenizer, seed=3, wide=True)
    enc, llm = configs(tokenizer)
    config = {"train": {"seed": 3}, "encoder": asdict(enc), "llm": asdict(llm), "projector": {"stack": 2}}
    save_checkpoint(tmp_path / "stage1", model, config, tokenizer)

    loaded, tok = load_speechlm(tmp_path / "stage1")
    assert not loaded.training
    assert tok.encode("hello world") == tokenizer.encode("hello world")
    assert tok.vocab_size == tokenizer.vocab_size
    x, lens, _ = batch([33, 47])
    targets = [tokenizer.encode(t) + [tokenizer.eos_id] for t in TEXTS[:2]]
    prompts = [[tokenizer.task_id("asr")]] * 2
    with torch.no_grad():
        assert model.sft_loss(x, lens, prompts, targets).item() == loaded.sft_loss(x, lens, prompts, targets).item()
    a = model.generate(x, lens, prompts, tokenizer.eos_id, max_new_tokens=8, temperature=0.0)
    b = loaded.generate(x, lens, prompts, tok.eos_id, max_new_tokens=8, temperature=0.0)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)


def test_load_speechlm_rejects_stage0_checkpoint(tokenizer, tmp_path):
    enc, _ = configs(tokenizer)
    enc.vocab_size = 30
    ctc = nn.ModuleDict({"encoder": Encoder(enc), "head": CTCHead(enc)})
    path = tmp_path / "stage0"
    save_checkpoint(path, ctc, {"train": {}, "encoder": asdict(enc)}, tokenizer)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_speechlm(path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        load_speechlm(tmp_path / "nowhere")
