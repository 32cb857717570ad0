"""
RL data construction (train_asr.py --rl-data): which utterances GRPO trains on.

    all   the training set as it is
    hard  utterances the SFT model gets wrong, or whose samples disagree with its greedy output
    long  the multi-sentence training utterances (the built-in corpus has 2-8 sentences, up to
          30 s, in ~9% of its rows), where speech LLMs delete and loop; data without any gets
          3 utterances of one speaker joined back to back, audio and text
"""
import random
import re

import torch

from nanospeechrl import data
from nanospeechrl.asr.evaluate import transcribe_all
from nanospeechrl.asr.speechlm import prompt_ids
from nanospeechrl.devices import autocast
from nanospeechrl.rewards import normalize


def sentences(text):
    """How many sentences a text holds (ends of sentence followed by more words count, plus one)."""
    return 1 + len(re.findall(r"[.!?]\s+\S", text.strip()))


def joined_examples(examples, feats, k, max_frames, seed):
    """RL data 'long': k utterances back to back (audio and text), each used once, of one
    speaker where the speaker has enough (sorted by speaker, then chunked)."""
    rng = random.Random(seed)
    order = sorted(range(len(examples)), key=lambda i: (examples[i].speaker, rng.random()))
    out_ex, out_feats = [], []
    for j in range(0, len(order) - k + 1, k):
        group = order[j:j + k]
        feat = torch.cat([feats[i] for i in group])
        if len(feat) <= max_frames:
            out_ex.append(data.Example(audio="+".join(examples[i].audio for i in group),
                                       text=" ".join(examples[i].text for i in group)))
            out_feats.append(feat)
    return out_ex, out_feats


def hard_examples(model, tokenizer, examples, feats, prompts, pool_size, batch_size, max_new_tokens, temperature,
                  seed, device):
    """RL data 'hard': of pool_size training utterances, those the SFT model gets wrong
    (greedy) or whose output sampled at `temperature` disagrees with the greedy one.
    prompts: each example's prompt ids."""
    pool = random.Random(seed).sample(range(len(examples)), min(pool_size, len(examples)))
    pool_feats, pool_prompts = [feats[i] for i in pool], [prompts[i] for i in pool]
    greedy = transcribe_all(model, tokenizer, pool_feats, device, batch_size, max_new_tokens, pool_prompts)
    sampled = []
    gen = torch.Generator(device).manual_seed(seed)
    for start in range(0, len(pool), batch_size):
        b = data.collate(pool_feats[start:start + batch_size])
        with torch.no_grad(), autocast(device):
            out = model.generate(b["feats"].to(device), b["feat_lens"].to(device),
                                 pool_prompts[start:start + batch_size], tokenizer.eos_id, max_new_tokens,
                                 temperature=temperature, generator=gen)
        sampled += [tokenizer.decode(row[:n]) for row, n in zip(out.tokens.tolist(), out.lengths.tolist())]
    keep = [i for i, g, s in zip(pool, greedy, sampled)
            if normalize(g) != normalize(examples[i].text) or normalize(s) != normalize(g)]
    return [examples[i] for i in keep], [feats[i] for i in keep]


def rl_examples(model, tokenizer, run, cfg, gcfg, device, max_frames, stage):
    """Stage 2's (examples, feats, prompts): the RL hold-out (else the training set) of a
    corpora.RunData, as --rl-data says; model: the SFT speech LLM that 'hard' screens with."""
    pool = slice(len(run.train), None) if run.held_out else slice(None)  # --rl-holdout 0: the SFT training set
    examples, feats = (run.train + run.held_out)[pool], run.feats[pool]
    if cfg.rl_data == "long":
        multi = [i for i, ex in enumerate(examples) if sentences(ex.text) > 1]
        examples, feats = ([examples[i] for i in multi], [feats[i] for i in multi]) if multi else \
            joined_examples(examples, feats, 3, max_frames, cfg.seed)
    elif cfg.rl_data == "hard":
        examples, feats = hard_examples(model, tokenizer, examples, feats, run.prompts[pool], cfg.rl_pool,
                                        cfg.eval_batch, gcfg.max_new_tokens, gcfg.temperature, cfg.seed, device)
    print(f"{stage}: {len(examples)} RL utterances (--rl-data {cfg.rl_data})")
    if not examples:
        raise SystemExit(f"{stage}: no RL utterances with --rl-data {cfg.rl_data}; try --rl-data all")
    return examples, feats, [prompt_ids(tokenizer, ex, cfg.max_prompt_tokens)[0] for ex in examples]
