import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from nanospeechrl.encoder import (
    CTCHead, Encoder, EncoderConfig, Subsample, ctc_greedy_decode, ctc_logprob, ctc_loss, subsampled_lengths,
)

TINY = dict(d_model=32, n_layer=2, n_head=2, conv_kernel=7, vocab_size=6)


def test_subsampled_lengths_match_conv_arithmetic():
    torch.manual_seed(0)
    sub = Subsample(EncoderConfig(**TINY)).eval()
    for L in range(1, 51):
        out, out_len = sub(torch.randn(1, L, 80), torch.tensor([L]))
        assert out.shape == (1, (L + 3) // 4, 32)  # ceil(L / 4)
        assert out_len.item() == out.shape[1] == subsampled_lengths(torch.tensor(L)).item()


def test_output_shapes():
    torch.manual_seed(0)
    cfg = EncoderConfig(vocab_size=10)
    enc, head = Encoder(cfg).eval(), CTCHead(cfg)
    hidden, out_lengths = enc(torch.randn(3, 101, 80), torch.tensor([101, 50, 7]))
    assert hidden.shape == (3, 26, 144)
    assert out_lengths.tolist() == [26, 13, 2]
    assert head(hidden).shape == (3, 26, 10)
    assert (hidden[1, 13:] == 0).all() and (hidden[2, 2:] == 0).all()  # padded frames come out zeroed


def test_padded_batch_equals_each_utterance_alone():
    torch.manual_seed(0)
    cfg = EncoderConfig(vocab_size=10)  # default size: 4 layers, kernel 15 spans padding boundaries
    enc, head = Encoder(cfg).eval(), CTCHead(cfg).eval()
    lengths = torch.tensor([300, 1, 7, 123, 64, 2])
    feats = torch.randn(len(lengths), 300, 80)
    for i, n in enumerate(lengths.tolist()):
        feats[i, n:] = 1e3  # loud garbage in the padding: it must not reach any valid frame
    with torch.no_grad():
        hidden, out_lengths = enc(feats, lengths)
        logits = head(hidden)
        for i, n in enumerate(lengths.tolist()):
            h1, l1 = enc(feats[i:i + 1, :n], lengths[i:i + 1])
            m = l1.item()
            assert out_lengths[i].item() == m == h1.shape[1]
            torch.testing.assert_close(hidden[i, :m], h1[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(logits[i, :m], head(h1)[0], atol=1e-5, rtol=0)


def test_eval_is_deterministic_and_train_uses_dropout():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(**TINY, dropout=0.3))
    feats, lengths = torch.randn(2, 40, 80), torch.tensor([40, 33])
    enc.eval()
    assert torch.equal(enc(feats, lengths)[0], enc(feats, lengths)[0])
    enc.train()
    assert not torch.allclose(enc(feats, lengths)[0], enc(feats, lengths)[0])


def test_bad_inputs_raise():
    enc = Encoder(EncoderConfig(**TINY, max_frames=100))
    with pytest.raises(ValueError, match=r"input has 101 frames \(1.01 s\) but the encoder supports "
                                         r"at most 100 frames \(1.00 s\)"):
        enc(torch.randn(1, 101, 80), torch.tensor([101]))
    enc(torch.randn(1, 100, 80), torch.tensor([100]))  # exactly max_frames is fine
    enc.eval()
    x = torch.randn(2, 128, 80)  # zero-padded to a shape multiple past max_frames: the lengths are what count
    x[0, 100:], x[1, 60:] = 0, 0
    hidden, lens = enc(x, torch.tensor([100, 60]))
    assert torch.allclose(hidden[0, :lens[0]], enc(x[:1, :100], torch.tensor([100]))[0][0], atol=1e-5)
    with pytest.raises(ValueError, match="input has 101 frames"):
        enc(x, torch.tensor([101, 60]))
    with pytest.raises(ValueError, match=r"values in \[1, 10\]"):
        enc(torch.randn(2, 10, 80), torch.tensor([10, 0]))  # an empty utterance
    with pytest.raises(ValueError, match="expected 80 mel bins"):
        enc(torch.randn(1, 10, 40), torch.tensor([10]))
    with pytest.raises(ValueError, match="vocab_size >= 2"):
        CTCHead(EncoderConfig())
    with pytest.raises(ValueError, match="conv_kernel must be odd"):
        Encoder(EncoderConfig(conv_kernel=4))


def test_ctc_greedy_decode_collapses_repeats_and_blanks():
    paths = [[0, 3, 3, 0, 3, 5, 5, 0, 0, 2, 2],  # blank between the 3s keeps both
             [4, 4, 4, 0, 1, 9, 9]]  # last two frames are padding (length 5)
    logits = torch.nn.functional.one_hot(torch.tensor([p + [0] * (11 - len(p)) for p in paths]), 10).float()
    assert ctc_greedy_decode(logits, torch.tensor([11, 5])) == [[3, 3, 5, 2], [4, 1]]
    assert ctc_greedy_decode(logits, torch.tensor([0, 1])) == [[], [4]]


def test_ctc_logprob_is_the_sum_over_all_alignments():
    """Naive twin: enumerate every frame path, keep those that collapse to the labels, logsumexp."""
    torch.manual_seed(0)
    logits, lengths = torch.randn(2, 5, 3), torch.tensor([5, 3])
    labels = [[[1, 2], [], [1, 1]], [[2], [1, 2, 1, 2], [2, 2]]]  # [1, 2, 1, 2] cannot fit in 3 frames
    got = ctc_logprob(logits, lengths, labels)
    log_probs = logits.log_softmax(-1)
    for b, row in enumerate(labels):
        paths = {}
        for path in itertools.product(range(3), repeat=int(lengths[b])):
            collapsed = tuple(ctc_greedy_decode(F.one_hot(torch.tensor([path]), 3).float(), torch.tensor([len(path)]))[0])
            score = sum(log_probs[b, t, k] for t, k in enumerate(path))
            paths[collapsed] = torch.logaddexp(paths.get(collapsed, torch.tensor(-math.inf)), score)
        want = torch.stack([paths.get(tuple(seq), torch.tensor(-math.inf)) for seq in row])
        torch.testing.assert_close(got[b], want, atol=1e-5, rtol=0)
    assert got[1, 1] == -math.inf


def test_tiny_encoder_learns_label_sequences():
    # each label 1..5 has a feature prototype; an "utterance" is each label's prototype held for
    # a few frames with noise in between, and the model must emit the label sequence
    torch.manual_seed(0)
    protos = torch.randn(6, 80)
    label_seqs = [[1, 2, 3, 3, 4], [5, 2, 1]]
    feats, lengths = torch.zeros(2, 64, 80), []
    for i, seq in enumerate(label_seqs):
        frames = [protos[0]] * 4  # leading silence
        for lab in seq:
            frames += [protos[lab]] * 8 + [protos[0]] * 4
        lengths.append(len(frames))
        feats[i, :len(frames)] = torch.stack(frames) + 0.1 * torch.randn(len(frames), 80)
    lengths = torch.tensor(lengths)
    targets = torch.tensor([[1, 2, 3, 3, 4], [5, 2, 1, 0, 0]])
    target_lengths = torch.tensor([5, 3])

    cfg = EncoderConfig(**TINY, dropout=0.0)
    enc, head = Encoder(cfg), CTCHead(cfg)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(100):
        hidden, out_lengths = enc(feats, lengths)
        loss = ctc_loss(head(hidden), out_lengths, targets, target_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    enc.eval()
    with torch.no_grad():
        hidden, out_lengths = enc(feats, lengths)
        decoded = ctc_greedy_decode(head(hidden), out_lengths)
    assert losses[-1] < losses[0] / 5
    assert decoded == label_seqs
