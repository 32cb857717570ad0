"""Our KV-cached sampler against HuggingFace transformers' generate, same model and weights.

    pip install transformers   # bench-only dependency
    python bench/peer.py [--threads 1] [--batch 8] [--new-tokens 256]

The model: LLMConfig's defaults (width 256, 4 layers, 4 query / 2 key-value heads, SwiGLU 704,
vocabulary 1,024, tied embeddings), built by us and copied into a LlamaForCausalLM
(pretrained.to_hf_state_dict). Both sample at temperature 1 with no top-k / top-p and no EOS,
so each decodes exactly --new-tokens tokens per row. First a check that the two are one
model: greedy outputs must be identical. Then --repeats pairs, each timing ours and then
theirs; the last line is the median over pairs of ours / transformers' tokens/s.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402

from nanospeechrl.llm import LLM, LLMConfig  # noqa: E402
from nanospeechrl.pretrained import to_hf_state_dict  # noqa: E402
from nanospeechrl.sampler import generate  # noqa: E402


def hf_llama(model):
    """A transformers LlamaForCausalLM holding our model's weights."""
    from transformers import LlamaConfig, LlamaForCausalLM
    c = model.config
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=model.blocks[0].mlp.up.out_features,
        num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head,
        max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta,
        tie_word_embeddings=c.tie_embeddings, attention_bias=False, bos_token_id=None, eos_token_id=None,
        pad_token_id=0))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    return hf.eval()


def paired_times(ours, theirs, repeats):
    """The two timed in turn (ours, theirs, ours, ...), so that a machine whose speed wanders
    slows both alike -> [(our seconds, their seconds)], one pair per repeat."""
    ours(), theirs()  # warm-up
    pairs = []
    for _ in range(repeats):
        t = []
        for fn in (ours, theirs):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        pairs.append(t)
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for both")
    parser.add_argument("--batch", type=int, default=8, help="rows decoded together")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt tokens per row")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per row")
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs (ours, then theirs)")
    args = parser.parse_args()
    try:
        import transformers
    except ImportError:
        print("bench/peer.py needs transformers, a bench-only dependency: pip install transformers")
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LLM(LLMConfig()).eval()
    hf = hf_llama(model)
    prompt = torch.randint(1, model.config.vocab_size, (args.batch, args.prompt_len))
    print(f"threads {torch.get_num_threads()}, transformers {transformers.__version__}, torch {torch.__version__}, "
          f"batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens: {model.config}")

    def ours(temperature, new=args.new_tokens):
        g = torch.Generator().manual_seed(0)
        return generate(model, model.embed(prompt), max_new_tokens=new, temperature=temperature, generator=g).tokens

    def theirs(sample, new=args.new_tokens):
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=sample, temperature=1.0,
                           top_k=0, top_p=1.0, max_new_tokens=new, min_new_tokens=new)[:, args.prompt_len:]

    with torch.inference_mode():
        same = torch.equal(ours(0, 32), theirs(False, 32))
        print(f"greedy outputs identical over 32 tokens: {same}")
        if not same:
            raise SystemExit("the two models differ: the comparison would be meaningless")
        n = args.batch * args.new_tokens
        pairs = paired_times(lambda: ours(1.0), lambda: theirs(True), args.repeats)
    for i, (t_ours, t_hf) in enumerate(pairs):
        print(f"  pair {i}: ours {t_ours:7.3f} s ({n / t_ours:7.1f} tokens/s), transformers {t_hf:7.3f} s "
              f"({n / t_hf:7.1f} tokens/s), ratio {t_hf / t_ours:.2f}")
    print(f"ours / transformers tokens/s (batch {args.batch}, {args.threads} thread(s)), median of {len(pairs)} pairs:")
    print(f"{statistics.median(t_hf / t_ours for t_ours, t_hf in pairs):.2f}")


if __name__ == "__main__":
    main()
