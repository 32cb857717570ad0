"""Pretrained Llama / Qwen2 decoders (pretrained.py) against transformers, on random tiny
configs saved with save_pretrained here (nothing downloads): logits, KV-cached greedy output,
and the errors for what is not supported."""
import json
import os

import pytest
import torch

from nanospeechrl.pretrained import from_pretrained
from nanospeechrl.sampler import generate

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=5000.0)


def save_hf(tmp_path, family, tie):
    torch.manual_seed(0)
    config_cls, model_cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                             "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[family]
    hf = model_cls(config_cls(**TINY, tie_word_embeddings=tie, bos_token_id=None, eos_token_id=None,
                              pad_token_id=0)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():  # away from the init: norms not 1, biases not 0
            p.normal_(1.0 if "norm" in name else 0.0, 0.3 if p.dim() == 1 else 0.1)
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("family,tie", [("llama", False), ("llama", True), ("qwen2", False)])
def test_logits_and_greedy_decoding_equal_transformers(tmp_path, family, tie):
    hf = save_hf(tmp_path, family, tie)
    ours = from_pretrained(tmp_path).eval()
    assert ours.config.qkv_bias == (family == "qwen2") and ours.config.tie_embeddings == tie
    assert (ours.lm_head.weight is ours.wte.weight) == tie
    idx = torch.randint(1, 97, (3, 11))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-4, rtol=0)
        mine = generate(ours, ours.embed(idx), max_new_tokens=12, temperature=0).tokens
        theirs = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=12,
                             min_new_tokens=12)[:, 11:]
    assert torch.equal(mine, theirs)


def test_unsupported_architecture_and_missing_tensor_are_named(tmp_path):
    save_hf(tmp_path, "llama", False)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="architecture 'GPT2LMHeadModel' is not supported"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_scaling": {"rope_type": "llama3"}}))
    with pytest.raises(ValueError, match="rope_scaling"):
        from_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file
    (tmp_path / "config.json").write_text(json.dumps(config))
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="missing tensor model.layers.1.mlp.up_proj.weight"):
        from_pretrained(tmp_path)
    os.remove(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_pretrained(tmp_path)


def test_train_asr_llm_init_starts_from_the_checkpoint_with_its_tokenizer(tmp_path):
    """--llm-init DIR: the speech LLM is the checkpoint's decoder (its width and weights), the
    run's tokenizer is the checkpoint's with our task tokens added after its vocabulary."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    from asr_helpers import TEXTS, TINY, make_corpus, train_asr
    from nanospeechrl.asr.speechlm import load_speechlm

    hf_dir = tmp_path / "llama"
    save_hf(hf_dir, "llama", False)
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=90, special_tokens=["<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(hf_dir / "tokenizer.json"))
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
    make_corpus(tmp_path)
    out = tmp_path / "out"
    r = train_asr("--data", tmp_path / "train.jsonl", "--eval", f"dev={tmp_path / 'dev.jsonl'}", *TINY, "--out", out,
                  "--stages", "0,1", "--llm-init", hf_dir, "--lr", "1e-4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    model, tokenizer = load_speechlm(out / "stage1")
    n_base = tok.get_vocab_size()
    assert tokenizer.token_to_id("<s>") == 0 and tokenizer.task_id("asr") >= n_base
    assert tokenizer.encode("seven eight") == tok.encode("seven eight").ids  # its own merges
    n_vocab = n_base + 8  # the tokenizer outgrows the checkpoint's 97 embedding rows: grown, new rows at the mean
    assert model.llm.config.n_embd == 64 and model.llm.config.vocab_size == tokenizer.vocab_size == n_vocab
    start = from_pretrained(hf_dir)
    for name, p in start.named_parameters():  # 4 SFT steps at lr 1e-4 move the weights only a little
        trained = dict(model.llm.named_parameters())[name]
        if name in ("wte.weight", "lm_head.weight"):
            assert torch.allclose(trained[97:], p.mean(0).expand(n_vocab - 97, -1), atol=5e-3), name
            trained = trained[:97]
        assert torch.allclose(trained, p, atol=5e-3), name
