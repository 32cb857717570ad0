"""Benchmark the KV-cached sampler against its uncached twin, and grouped prefill against G prefills.

    python bench/sampler.py [--device cuda] [--threads 0]

Model: the tiny LLM (LLMConfig defaults). No EOS, so every run decodes the same number of
tokens. The last line printed is the cached/naive speed-up as a bare number.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402

from nanospeechrl.llm import LLM, LLMConfig  # noqa: E402
from nanospeechrl.sampler import generate, generate_naive  # noqa: E402


def timed(fn, device, repeats=1, warmup=True):
    """Best wall time of `repeats` calls, after one warm-up call (skip it for the long naive run)."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    # One CPU thread by default: a decode step is many tiny ops, and on a busy (shared) machine
    # every multi-threaded op waits for a descheduled worker, which can make it slower than naive.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--batch", type=int, default=8, help="rows decoded together (cached vs naive)")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt embeddings (cached vs naive)")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per row")
    parser.add_argument("--prompts", type=int, default=4, help="B prompts in the group rollout")
    parser.add_argument("--group", type=int, default=8, help="G samples per prompt")
    parser.add_argument("--group-prompt-len", type=int, default=100, help="prompt embeddings (group rollout)")
    parser.add_argument("--group-new-tokens", type=int, default=32, help="tokens per sample (group rollout)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LLMConfig()
    model = LLM(config).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device {device}, threads {torch.get_num_threads()}, LLM {n_params / 1e6:.2f}M params: {config}")

    with torch.inference_mode():
        # 1. KV-cached sampler vs full recompute per step.
        prompts = torch.randn(args.batch, args.prompt_len, config.n_embd, device=device)
        kw = dict(max_new_tokens=args.new_tokens, temperature=1.0, eos_id=None)
        g = torch.Generator(device).manual_seed(0)
        t_cached = timed(lambda: generate(model, prompts, generator=g, **kw), device, repeats=3)
        t_naive = timed(lambda: generate_naive(model, prompts, generator=g, **kw), device, warmup=False)
        n_tokens = args.batch * args.new_tokens
        print(f"batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens per row:")
        print(f"  cached  {t_cached:8.3f} s  {n_tokens / t_cached:10.1f} tokens/s")
        print(f"  naive   {t_naive:8.3f} s  {n_tokens / t_naive:10.1f} tokens/s")

        # 2. Group rollout: prefill each prompt once and copy its cache, vs prefill it G times.
        prompts = torch.randn(args.prompts, args.group_prompt_len, config.n_embd, device=device)
        repeated = prompts.repeat_interleave(args.group, dim=0)  # (B*G, T, D)
        print(f"group rollout, {args.prompts} prompts x {args.group} samples, prompt {args.group_prompt_len}:")
        for new in (1, args.group_new_tokens):  # 1 new token = prefill (+ one sample) only
            kw = dict(max_new_tokens=new, temperature=1.0, eos_id=None)
            t_group = timed(lambda: generate(model, prompts, num_samples=args.group, generator=g, **kw), device, 5)
            t_sep = timed(lambda: generate(model, repeated, num_samples=1, generator=g, **kw), device, 5)
            print(f"  {new:3d} new tokens: one prefill per prompt {t_group * 1e3:8.1f} ms, "
                  f"G prefills {t_sep * 1e3:8.1f} ms, speed-up {t_sep / t_group:.2f}x")

    print(f"cached/naive speed-up (tokens/s ratio at {args.new_tokens} new tokens, batch {args.batch}):")
    print(f"{t_naive / t_cached:.1f}")


if __name__ == "__main__":
    main()
