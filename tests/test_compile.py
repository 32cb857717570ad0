"""devices.compile_or_eager: the compiled path computes what eager does (losses and gradients of a
tiny LLM and a tiny conformer encoder), and any compiler failure falls back to eager with one
printed line instead of a crash.

The naive-twin test runs inductor (a C++ compiler, ~1-2 minutes on 2 cores): it is skipped
unless NANOSPEECHRL_COMPILE_TESTS=1. The fallback tests use failing stand-ins and cheap
backends, and always run."""
import os

import pytest
import torch
import torch.nn.functional as F

from nanospeechrl.devices import compile_or_eager
from nanospeechrl.encoder import Encoder, EncoderConfig
from nanospeechrl.llm import LLM, LLMConfig

SLOW = pytest.mark.skipif(os.environ.get("NANOSPEECHRL_COMPILE_TESTS") != "1",
                          reason="compiles with inductor (minutes): set NANOSPEECHRL_COMPILE_TESTS=1")


def tiny_llm():
    torch.manual_seed(0)
    return LLM(LLMConfig(vocab_size=48, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, max_seq_len=32))


def tiny_encoder():
    torch.manual_seed(0)
    return Encoder(EncoderConfig(d_model=32, n_layer=1, n_head=4, conv_channels=8, conv_kernel=5, dropout=0.0))


def llm_loss(forward, ids):
    logits = forward(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def encoder_loss(forward, feats, lengths):
    hidden, out_lens = forward(feats, lengths)
    keep = torch.arange(hidden.shape[1])[None] < out_lens[:, None]
    return (hidden.square().mean(-1) * keep).sum() / keep.sum()


def loss_and_grads(model, loss_fn, *inputs, compiled, **options):
    model.zero_grad(set_to_none=True)
    forward = compile_or_eager(model, compiled, **options)
    loss = loss_fn(forward, *inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, forward


def assert_twins(model, loss_fn, *inputs, **options):
    """Compiled and eager: the same loss and the same gradient for every parameter."""
    loss, grads, forward = loss_and_grads(model, loss_fn, *inputs, compiled=True, **options)
    assert forward.is_compiled  # it did not fall back: the comparison is compiled vs eager
    ref_loss, ref_grads, _ = loss_and_grads(model, loss_fn, *inputs, compiled=False)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) == len(list(model.parameters()))
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@SLOW
def test_inductor_llm_and_encoder_match_eager_losses_and_gradients():
    torch._dynamo.reset()
    ids = torch.randint(0, 48, (3, 17), generator=torch.Generator().manual_seed(1))
    assert_twins(tiny_llm(), llm_loss, ids)
    feats = torch.randn(3, 64, 80, generator=torch.Generator().manual_seed(2))
    assert_twins(tiny_encoder(), encoder_loss, feats, torch.tensor([64, 41, 23]))


def test_aot_backend_llm_and_encoder_match_eager():
    """The compiled path's plumbing (dynamo + AOTAutograd, forward and backward graphs) without
    inductor's C++: fast, so it always runs."""
    torch._dynamo.reset()
    ids = torch.randint(0, 48, (3, 17), generator=torch.Generator().manual_seed(1))
    assert_twins(tiny_llm(), llm_loss, ids, backend="aot_eager")
    feats = torch.randn(3, 64, 80, generator=torch.Generator().manual_seed(2))
    assert_twins(tiny_encoder(), encoder_loss, feats, torch.tensor([64, 41, 23]), backend="aot_eager")


def fails(*args, **kwargs):
    raise RuntimeError("no C++ compiler found\nsecond line of the report")


def test_compiled_call_failing_falls_back_to_eager_with_one_line(monkeypatch, capsys):
    model = tiny_llm()
    ids = torch.randint(0, 48, (2, 9))
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fails)  # lazy: fails at the first call
    forward = compile_or_eager(model, True, name="tiny llm")
    assert forward.is_compiled and capsys.readouterr().out == ""  # nothing has failed yet
    torch.testing.assert_close(forward(ids), model(ids), rtol=0, atol=0)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "tiny llm" in out[0] and "no C++ compiler" in out[0] and "eagerly" in out[0]
    assert not forward.is_compiled
    torch.testing.assert_close(forward(ids), model(ids), rtol=0, atol=0)  # eager for good, silently
    assert capsys.readouterr().out == ""


def test_torch_compile_raising_at_once_returns_eager_with_one_line(monkeypatch, capsys):
    model = tiny_llm()
    monkeypatch.setattr(torch, "compile", fails)
    assert compile_or_eager(model, True) is model
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "no C++ compiler" in out[0]


def test_disabled_is_fn_itself(monkeypatch):
    monkeypatch.setattr(torch, "compile", fails)
    model = tiny_llm()
    assert compile_or_eager(model, False) is model


def test_bad_input_is_raised_not_blamed_on_the_compiler(monkeypatch, capsys):
    """A call that fails eagerly too is the input's fault: raised, and compilation stays on."""
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fails)
    forward = compile_or_eager(tiny_encoder(), True)
    with pytest.raises(ValueError, match="mel bins"):
        forward(torch.randn(1, 20, 40), torch.tensor([20]))  # 40 bins, the encoder takes 80
    assert forward.is_compiled and capsys.readouterr().out == ""


def test_real_backend_failure_at_first_call_falls_back(capsys):
    """A backend that fails as inductor would (torch.compile is lazy: at the first call)."""
    torch._dynamo.reset()

    def broken_backend(graph, example_inputs):
        raise RuntimeError("backend cannot lower this graph")

    model = tiny_llm()
    ids = torch.randint(0, 48, (2, 9))
    forward = compile_or_eager(model, True, backend=broken_backend)
    loss, ref = llm_loss(forward, ids), llm_loss(model, ids)
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "backend cannot lower" in out[0] and not forward.is_compiled


def test_backward_compile_failure_is_caught_in_the_forward_call(capsys):
    """AOTAutograd lowers the backward lazily, at backward(): compile_or_eager makes it lower in
    the forward call, so a backward the compiler cannot build falls back too, before training
    calls backward() on it."""
    from torch._dynamo.backends.common import aot_autograd
    torch._dynamo.reset()

    def broken_backward(graph, example_inputs):
        raise RuntimeError("cannot compile the backward")

    model = tiny_encoder()
    feats, lengths = torch.randn(2, 32, 80), torch.tensor([32, 20])
    backend = aot_autograd(fw_compiler=lambda graph, _: graph, bw_compiler=broken_backward)
    forward = compile_or_eager(model, True, backend=backend)
    loss = encoder_loss(forward, feats, lengths)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "cannot compile the backward" in out[0] and not forward.is_compiled
    loss.backward()  # the eager graph's backward
    assert all(p.grad is not None for p in model.parameters())


def test_module_keeps_its_state_dict():
    model = tiny_encoder()
    keys = list(model.state_dict())
    forward = compile_or_eager(model, True, backend="eager")
    assert forward.eager is model and list(model.state_dict()) == keys  # no "_orig_mod." prefixes to save
