"""
Pretrained decoders: a Llama- or Qwen2-family checkpoint directory in HuggingFace's layout
(config.json, model.safetensors or shards with model.safetensors.index.json, tokenizer.json)
into llm.LLM, and our weights out under HuggingFace's names (for side-by-side checks).

The two families are our LLM with other names: RMSNorm, RoPE over channel halves, GQA,
SwiGLU; Qwen2 adds biases to q, k and v. Anything else (RoPE scaling, sliding windows,
other activations, biases elsewhere) is refused by name rather than loaded wrong.
"""
import json
import os
from dataclasses import replace

import torch
from safetensors.torch import load_file

from nanospeechrl.llm import LLM, LLMConfig

ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
ROTARY_BUFFERS = ("rotary_emb.inv_freq",)  # saved by some older checkpoints; derived from the config here


def config_from_hf(hf, where="config.json"):
    """A HuggingFace config dict -> LLMConfig, or ValueError naming what is not supported."""
    arch = (hf.get("architectures") or [hf.get("model_type", "?")])[0]
    if arch not in ARCHITECTURES:
        raise ValueError(f"{where}: architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
    # RoPE: transformers 5 writes rope_parameters {rope_theta, rope_type}; older files rope_theta + rope_scaling
    rope = hf.get("rope_parameters") or {}
    act = hf.get("hidden_act", "silu")
    refuse = {"rope_scaling": [r for r in (rope, hf.get("rope_scaling") or {})
                               if r.get("rope_type", r.get("type", "default")) != "default"],
              "attention_bias": hf.get("attention_bias"), "mlp_bias": hf.get("mlp_bias"),
              "use_sliding_window": hf.get("use_sliding_window"), "hidden_act": act if act != "silu" else None}
    bad = [k for k, v in refuse.items() if v]
    if bad:
        raise ValueError(f"{where}: {arch} with {', '.join(f'{k}={refuse[k]!r}' for k in bad)} is not supported")
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim", n_embd // n_head) * n_head != n_embd:
        raise ValueError(f"{where}: head_dim {hf['head_dim']} x {n_head} heads != hidden_size {n_embd}: not supported")
    return LLMConfig(vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], n_head=n_head,
                     n_kv_head=hf.get("num_key_value_heads") or n_head, n_embd=n_embd,
                     max_seq_len=hf.get("max_position_embeddings", 2048),
                     tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                     rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
                     mlp_hidden=hf["intermediate_size"], norm_eps=hf.get("rms_norm_eps", 1e-6), qkv_bias=arch == "Qwen2ForCausalLM")


def hf_names(config):
    """{our parameter name: HuggingFace tensor name}."""
    names = {"wte.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not config.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        names[ours + "norm1.weight"] = theirs + "input_layernorm.weight"
        names[ours + "norm2.weight"] = theirs + "post_attention_layernorm.weight"
        for w, proj in (("wq", "q"), ("wk", "k"), ("wv", "v"), ("wo", "o")):
            names[f"{ours}attn.{w}.weight"] = f"{theirs}self_attn.{proj}_proj.weight"
            if config.qkv_bias and w != "wo":
                names[f"{ours}attn.{w}.bias"] = f"{theirs}self_attn.{proj}_proj.bias"
        for w in ("gate", "up", "down"):
            names[f"{ours}mlp.{w}.weight"] = f"{theirs}mlp.{w}_proj.weight"
    return names


def to_hf_state_dict(model):
    """Our LLM's weights under HuggingFace's names (LlamaForCausalLM / Qwen2ForCausalLM)."""
    params = dict(model.named_parameters())
    return {theirs: params[ours].detach() for ours, theirs in hf_names(model.config).items()}


def read_safetensors(directory):
    """Every tensor of a checkpoint directory: model.safetensors, or the shards its index lists."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors weights")
    tensors = {}
    for f in files:
        tensors.update(load_file(os.path.join(directory, f)))
    return tensors


def from_pretrained(directory, dtype=torch.float32):
    """A Llama / Qwen2 checkpoint directory -> llm.LLM with its weights (on the CPU, in dtype)."""
    config = pretrained_config(directory)
    tensors = read_safetensors(directory)
    model = LLM(config)
    names = hf_names(config)
    missing = [theirs for theirs in names.values() if theirs not in tensors]
    if missing:
        raise ValueError(f"{directory}: missing tensor {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                        if len(missing) > 1 else ""))
    unused = [k for k in tensors if k not in names.values() and not k.endswith(ROTARY_BUFFERS)
              and not (config.tie_embeddings and k == "lm_head.weight")]
    if unused:
        raise ValueError(f"{directory}: tensor {unused[0]} is not part of a Llama / Qwen2 decoder as loaded here "
                         f"({len(unused)} such tensors)")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for ours, theirs in names.items():
            if params[ours].shape != tensors[theirs].shape:
                raise ValueError(f"{directory}: tensor {theirs} has shape {tuple(tensors[theirs].shape)}, "
                                 f"config.json implies {tuple(params[ours].shape)}")
            params[ours].copy_(tensors[theirs])
    return model.to(dtype)


def pretrained_config(directory, vocab_size=0):
    """The LLMConfig of a checkpoint directory, its vocabulary grown to vocab_size if smaller
    (a tokenizer with our special tokens added)."""
    where = os.path.join(directory, "config.json")
    if not os.path.exists(where):
        raise FileNotFoundError(f"{directory}: no config.json (a HuggingFace checkpoint directory is expected)")
    config = config_from_hf(json.load(open(where)), where)
    return replace(config, vocab_size=max(config.vocab_size, vocab_size))


def load_pretrained_into(llm, directory, offset=0):
    """llm (built from pretrained_config, its vocabulary grown) <- the checkpoint's weights. The
    checkpoint's embedding rows go to ids offset.. (TokenLM puts its speech tokens first); the
    rows it lacks (added tokens, speech tokens) start at the mean of its rows."""
    pretrained = dict(from_pretrained(directory).named_parameters())
    with torch.no_grad():
        for name, p in llm.named_parameters():
            src = pretrained[name]
            if name in ("wte.weight", "lm_head.weight") and src.shape[0] < p.shape[0]:
                p.copy_(src.mean(dim=0).expand_as(p))
                p[offset:offset + src.shape[0]] = src
            else:
                p.copy_(src)
    return llm
