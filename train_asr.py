"""
Train a speech recognizer (or spoken-QA / speech-translation model) from scratch, then evaluate it.

    python train_asr.py                                   # tiny preset, built-in corpus, CPU
    python train_asr.py --task mix                        # ASR + spoken QA + speech translation
    python train_asr.py --task mix --stages 2 --off-policy reference   # + mixed-policy GRPO
    python train_asr.py --preset small --device cuda      # one GPU
    python train_asr.py --data train.jsonl --eval dev=dev.jsonl
    python train_asr.py --data LibriSpeech/train-clean-100 --eval dev=LibriSpeech/dev-clean

Stage 0:  CTC pretraining of the conformer encoder (characters).
Stage 1:  SFT of the speech LLM, encoder from stage 0 (frozen by default, its outputs computed
          once, then masked afresh each step: --sft-augment): cross-entropy on the target text
          given [audio embeddings][task token].
Stage 2:  GRPO from the SFT model: G sampled transcripts per utterance, rule-based rewards,
          group advantages, clipped policy loss with a KL to the frozen SFT model.
          With --off-policy reference (mixed-policy GRPO) it writes <out>/stage2-mixed instead.
Stage 1b: the control for stage 2: SFT continued for the wall time stage 2 took.
With --rl-holdout N, N training utterances are kept out of stages 0-1: stage 2 learns on them
and stage 1b trains on them too (on everything GRPO saw).
    python train_asr.py --stages 1b     # after a run with stage 2: the equal-time SFT row
Tasks (--task): asr (transcribe), sqa (answer a question about the audio), ast (translate
English speech to Spanish text), mix (all three). Each built-in task has its own corpus.
Each stage checkpoints to <out>/stage<k> (atomic) and `--resume` continues where a run
stopped. Metrics go to <out>/metrics.jsonl, one JSON object per logged step. At the end,
every finished model (stage1, stage1b, stage2, stage2-mixed) is evaluated, with paired-bootstrap
intervals for the WER (asr) or BLEU (sqa, ast) differences. ASR outputs are the best of the greedy
transcript and --nbest samples by LLM and CTC scores (stage 0's CTC head stays in the model).
"""
import argparse
import copy
import json
import os
import random
import time
from dataclasses import asdict, dataclass, fields

import torch
from tqdm import tqdm

from nanospeechrl import data, rewards, trainer
from nanospeechrl.audio import AudioError, spec_augment
from nanospeechrl.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from nanospeechrl.corpus import normalize
from nanospeechrl.datasets import TASKS, load_data
from nanospeechrl.devices import Phases, pick_device
from nanospeechrl.encoder import CTC_CHARS, CTCHead, Encoder, EncoderConfig, ctc_labels, ctc_loss
from nanospeechrl.evaluate import evaluate_ctc, evaluate_models
from nanospeechrl.grpo import (GRPOConfig, completion_mask, group_advantages, grpo_update, logprobs,
                               rollout_stats, with_reference_rows)
from nanospeechrl.llm import LLM, LLMConfig
from nanospeechrl.rldata import hard_examples, joined_examples
from nanospeechrl.speechlm import ProjectorConfig, SpeechLM, prompt_ids
from nanospeechrl.tokenizer import Tokenizer
from nanospeechrl.trainer import autocast, batches_forever, encode_all, to_batch, train_stage


@dataclass
class TrainConfig:
    preset: str = "tiny"  # tiny (CPU, minutes) or small (one GPU)
    task: str = "asr"  # asr | sqa (spoken QA) | ast (speech translation) | mix (all three): the built-in corpora
    data: str = "builtin"  # "builtin", a JSONL manifest, or a LibriSpeech-style directory
    eval: str = ""  # extra eval sets: name=spec,name=spec (built-in: dev,test,test_accent,test_long)
    out: str = "out/asr"  # checkpoints, tokenizer and metrics.jsonl (out/<task> for the other tasks)
    seed: int = 0  # data generation, init and batching are deterministic in it
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps
    bf16: bool = True  # bf16 autocast on CPUs with AMX (1.3-1.4x faster steps, bench/bf16.py); else (CUDA too) fp32
    stages: str = "0,1,2"  # which stages to run: 0, 1, 2, and 1b (equal-time SFT control for 2)
    resume: bool = False  # continue from the checkpoints in --out
    skip_bad: bool = False  # skip (and count) bad manifest lines / audio instead of failing
    n_train: int = 12000  # built-in corpus: asr training utterances
    n_test: int = 200  # built-in corpora: test items per task (600 resolve WER differences of ~1.5 points)
    n_sqa: int = 3000  # built-in corpus: spoken-QA training items (passage, question, answer)
    n_ast: int = 4000  # built-in corpus: speech-translation training pairs
    max_prompt_tokens: int = 48  # task token + prompt (question) tokens; longer ones are cut, and counted
    vocab_size: int = 384  # BPE vocabulary (text tokens + specials)
    # model
    d_model: int = 144  # encoder width
    enc_layers: int = 4  # conformer blocks
    n_embd: int = 256  # LLM width
    llm_layers: int = 4  # LLM blocks
    dropout: float = 0.0  # encoder and LLM dropout (always off in stage 2)
    stack: int = 2  # encoder frames per LLM audio embedding
    freeze_encoder: bool = True  # stages 1-2 train projector + LLM on the stage-0 encoder's outputs
    # optimisation
    ctc_steps: int = 1800  # stage 0 steps
    sft_steps: int = 2400  # stage 1 steps
    lr: float = 2e-3  # peak learning rate (AdamW, warmup then cosine to lr / 10)
    batch_frames: int = 6000  # padded feature frames per batch (100 frames = 1 s)
    spec_augment: bool = False  # time and frequency masking in training (off: measured slower to learn in minutes)
    sft_augment: bool = True  # SFT on a frozen encoder: time and channel masks on its cached outputs (HIDDEN_MASKS)
    # stage 2 (GRPO; the algorithm's own settings are GRPOConfig's fields, also flags)
    rl_steps: int = 150  # GRPO steps
    rl_lr: float = 2e-5  # constant learning rate of stage 2
    rl_batch: int = 32  # completions per step: (utterances per step) * num_generations
    reward: str = ""  # name:weight,... from rewards.REWARDS; empty: each task's rewards.TASK_REWARDS
    rl_data: str = "hard"  # hard (the SFT model errs or its samples disagree) | all | long (3 utterances joined)
    rl_holdout: int = 0  # training utterances kept out of stages 0-1 for stage 2 and 1b (datasets.py)
    rl_pool: int = 1000  # --rl-data hard: RL utterances screened
    rl_ckpt_every: int = 25  # stage 2 steps between checkpoints
    # logging and evaluation
    log_every: int = 25  # steps between metrics lines
    ckpt_every: int = 300  # steps between checkpoints
    eval_batch: int = 32  # utterances per decoding batch
    eval_max_tokens: int = 160  # decoding budget per utterance
    nbest: int = 16  # ASR decoding: 0 greedy; N the best of greedy + N samples by LLM and CTC scores
    ctc_weight: float = 0.1  # weight of the CTC head's log-probability in that choice (the LLM's: 1 - it)
    evaluate: bool = True  # evaluate every finished model at the end


PRESETS = {
    "tiny": {},
    "small": dict(d_model=256, enc_layers=12, n_embd=512, llm_layers=8, vocab_size=1024, dropout=0.1,
                  ctc_steps=20000, sft_steps=20000, lr=1e-3, batch_frames=40000, n_train=40000, eval_batch=64,
                  spec_augment=True, rl_steps=1000, rl_batch=128, num_generations=8),
}
UNDERSTANDING = dict(rl_data="all", loss_type="dapo", beta=0.02)  # GRPO as in arXiv 2509.16990 (SEEDS.md B)
TASK_DEFAULTS = {  # overrides per --task, applied before the preset's and the command line's
    "sqa": dict(out="out/sqa", **UNDERSTANDING), "ast": dict(out="out/ast", **UNDERSTANDING),
    "mix": dict(out="out/mix", n_train=4000, n_sqa=2000, n_ast=3000, ctc_steps=1300, sft_steps=3200,
                **UNDERSTANDING),
}
RL_DATA = ("all", "hard", "long")
# SpecAugment on the frozen encoder's cached outputs (144 channels, 25 frames/s) in SFT: without it the
# decoder memorises the 12,000 fixed training sequences (train loss ~0.03, train WER 1.8%, test 15%)
HIDDEN_MASKS = dict(n_freq_masks=2, freq_width=30, n_time_masks=4, time_frac=0.05)


def parse_args(argv=None):
    """Command line > preset > defaults, for TrainConfig and GRPOConfig fields alike."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(TrainConfig) + fields(GRPOConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=type(f.default), default=None)
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    preset, task = args.get("preset", "tiny"), args.get("task", "asr")
    if preset not in PRESETS:
        parser.error(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if task not in TASKS:
        parser.error(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    args = {**TASK_DEFAULTS.get(task, {}), **PRESETS[preset], **args}
    split = [{f.name: args[f.name] for f in fields(c) if f.name in args} for c in (TrainConfig, GRPOConfig)]
    try:
        cfg, gcfg = TrainConfig(**split[0]), GRPOConfig(**split[1])
    except ValueError as e:
        parser.error(str(e))
    stages = cfg.stages.split(",")
    if set(stages) - {"0", "1", "1b", "2"}:
        parser.error(f"--stages {cfg.stages!r}: choose from 0, 1, 1b, 2 (comma-separated)")
    if "2" in stages:  # fail at start-up, not after minutes of stages 0-1
        if cfg.rl_batch % gcfg.num_generations:
            parser.error(f"--rl-batch {cfg.rl_batch} is not a multiple of --num-generations {gcfg.num_generations}: "
                         f"each utterance needs a whole group; try --rl-batch "
                         f"{max(1, cfg.rl_batch // gcfg.num_generations) * gcfg.num_generations}")
        if cfg.rl_data not in RL_DATA:
            parser.error(f"--rl-data {cfg.rl_data!r}: choose from {', '.join(RL_DATA)}")
        try:
            task_rewards(cfg)
        except ValueError as e:
            parser.error(str(e))
    if not cfg.freeze_encoder and cfg.nbest and cfg.ctc_weight:
        print("warning: --no-freeze-encoder trains the encoder in stages 1-2 but not the CTC head from stage 0 "
              "that --nbest rescoring scores with; --ctc-weight 0 rescores by the LLM alone")
    if ("2" in stages or "1b" in stages) and "1" not in stages and not done(cfg.out, "stage1"):
        parser.error(f"stages 2 and 1b start from the SFT checkpoint {os.path.join(cfg.out, 'stage1')}, which "
                     f"is missing or unfinished: run stage 1 first (--stages 0,1,2) or point --out at a finished run")
    if "1b" in stages and "2" not in stages and not done(cfg.out, rl_stage(gcfg)):
        parser.error("stage 1b runs SFT for the wall time stage 2 took, so it needs a finished stage 2: "
                     "use --stages 2,1b (or --resume --stages 2,1b if stage 2 was stopped)")
    return cfg, gcfg


def task_rewards(cfg):
    """{task: {reward name: weight}}: --reward for every task, or each task's default."""
    return {task: rewards.parse_rewards(cfg.reward or rewards.TASK_REWARDS[task]) for task in rewards.TASK_REWARDS}


def rl_stage(gcfg):
    """Stage 2's checkpoint name: mixed-policy GRPO gets its own, next to the on-policy one."""
    return "stage2" if gcfg.off_policy == "none" else "stage2-mixed"


def saved_state(out, stage):
    """<out>/<stage>/state.json as a dict ({} when there is no checkpoint)."""
    path = os.path.join(out, stage, "state.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def done(out, stage):
    """The finished-flag of a stage's checkpoint, or None when there is none."""
    return saved_state(out, stage).get("done")


# ----------------------------------------------------------------------------- training

def grpo_stage(model, tokenizer, examples, feats, cfg, gcfg, device, ckpt_config, log, setup_seconds=0.0):
    """Stage 2. Each step runs five phases, each holding on the device only what it needs:
    encode (the frozen encoder, once per step) -> rollout (G completions per utterance) ->
    reward -> reference (log-probs under the frozen SFT model) -> update (num_iterations
    clipped policy-gradient steps on the projector and LLM)."""
    path = os.path.join(cfg.out, rl_stage(gcfg))
    weights = task_rewards(cfg)
    model.encoder.requires_grad_(False)  # frozen, and run once per step for policy and reference alike
    reference = copy.deepcopy(model).requires_grad_(False)  # the SFT model's projector and LLM, frozen
    del reference.encoder, reference.ctc_head
    policy = torch.nn.ModuleDict({"projector": model.projector, "llm": model.llm})
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.rl_lr, betas=(0.9, 0.99), weight_decay=0.0)
    phases = Phases(device, {"encoder": model.encoder, "policy": policy, "reference": reference}, opt)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    step, cursor, elapsed, bad = 0, [0, 0], setup_seconds, 0  # elapsed: stage 1b gets as much time
    if cfg.resume and os.path.exists(os.path.join(path, "state.json")):
        state = load_checkpoint(path, model, opt)["state"]
        step, cursor, elapsed = state["step"], state["cursor"], state["elapsed"]
        restore_rng(state)
        gen.set_state(torch.tensor(state["rollout_rng"], dtype=torch.uint8))
        print(f"{rl_stage(gcfg)}: resuming at step {step}")  # (main skips a stage 2 that is already done)
    model.eval()  # dropout off: pi_old, pi_theta and pi_ref must each be one fixed function
    reference.eval()
    G = gcfg.num_generations
    n_sampled = G - (gcfg.off_policy != "none")
    prompts = [prompt_ids(tokenizer, ex, cfg.max_prompt_tokens)[0] for ex in examples]
    targets = [(tokenizer.encode(ex.text) + [tokenizer.eos_id])[:gcfg.max_new_tokens] for ex in examples]
    batches = batches_forever([len(f) for f in feats], cfg, cursor, batch_size=cfg.rl_batch // G)
    sampling = dict(temperature=gcfg.temperature, top_k=gcfg.top_k, top_p=gcfg.top_p, generator=gen)
    t0 = time.time() - elapsed
    for step in tqdm(range(step, cfg.rl_steps), desc=rl_stage(gcfg), initial=step, total=cfg.rl_steps):
        idx = next(batches)
        P = [prompts[i] for i in idx]
        phases.stats.clear()
        with phases("encode", "encoder"), torch.no_grad(), autocast(device):
            b = to_batch(feats, idx, device)
            hidden, lens = model.encoder(b["feats"], b["feat_lens"])
        with phases("rollout", "policy"), torch.no_grad(), autocast(device):
            roll = model.generate_from_audio(*model.projector(hidden, lens), P, tokenizer.eos_id,
                                             gcfg.max_new_tokens, num_samples=n_sampled, **sampling)
            tokens, lengths, off = with_reference_rows(roll, [targets[i] for i in idx], G)
        with phases("reward"):
            hyps = [tokenizer.decode(t[:n]) for t, n in zip(tokens.tolist(), lengths.tolist())]
            exs = [examples[i] for i in idx for _ in range(G)]
            total, parts = rewards.score_tasks(weights, hyps, [ex.text for ex in exs], [ex.task for ex in exs])
            R = torch.tensor(total).view(len(idx), G)
            adv = group_advantages(R, gcfg.scale_rewards).flatten().to(device)
            mask, truncated = completion_mask(tokens, lengths, tokenizer.eos_id, gcfg)
            tied = (R.max(dim=1).values - R.min(dim=1).values) <= 1e-6  # all rewards equal: no signal
            keep = ~tied if gcfg.filter_zero_std else torch.ones_like(tied)
        row = {"stage": rl_stage(gcfg), "step": step, **rollout_stats(R, parts, tied, off, roll, lengths, truncated)}
        rows = keep.repeat_interleave(G).to(device)  # the completions of the groups kept
        if mask[rows].sum() > 0:  # else nothing in this batch to learn from
            L = int(lengths[rows].max())  # no forward over padding past the longest completion
            sel = keep.to(device)
            batch = (hidden[sel], lens[sel], [p for p, k in zip(P, keep) if k], tokens[rows, :L], lengths[rows])
            ref_logp = None
            if gcfg.beta:
                with phases("reference", "reference"), torch.no_grad(), autocast(device):
                    ref_logp = logprobs(reference, batch, gcfg, device)
            with phases("update", "policy", optimizer=True):
                m = grpo_update(model, policy, opt, batch, ref_logp, adv[rows], mask[rows, :L], off[rows], gcfg,
                                device)
            bad = 0 if m else bad + 1
            row.update(m or {"nonfinite_loss": bad})
        row.update(phases.stats, time=time.time() - t0)
        log(row)
        if bad >= 3:
            raise SystemExit(f"{rl_stage(gcfg)}: {bad} non-finite losses or gradients in a row (step {step}); their updates "
                             f"were skipped. Last good checkpoint: {path}. Try a lower --rl-lr or --beta.")
        if (step + 1) % cfg.rl_ckpt_every == 0 or step == cfg.rl_steps - 1:
            state = {"step": step + 1, "cursor": cursor, "done": step == cfg.rl_steps - 1,
                     "elapsed": time.time() - t0, "rollout_rng": gen.get_state().tolist()}
            save_checkpoint(path, model, ckpt_config, tokenizer, opt, state)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    cfg, gcfg = parse_args(argv)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = pick_device(cfg.device)
    trainer.BF16 = cfg.bf16
    os.makedirs(cfg.out, exist_ok=True)
    metrics = open(os.path.join(cfg.out, "metrics.jsonl"), "a")

    def log(row):
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()

    precision = "bf16 autocast" if trainer.uses_bf16(device) else "fp32"
    print(f"device {device} ({precision}), config {json.dumps(asdict(cfg))}, grpo {json.dumps(asdict(gcfg))}")
    train, rl_train, evals, skipped = load_data(cfg)
    enc_cfg = EncoderConfig(d_model=cfg.d_model, n_layer=cfg.enc_layers, dropout=cfg.dropout,
                            vocab_size=len(CTC_CHARS) + 1)
    cache = os.path.join(os.path.dirname(cfg.out.rstrip("/")) or ".", "feature-cache")
    feats, train, bad = data.features(train, cache, cfg.skip_bad, enc_cfg.max_frames)
    skipped.update(bad)
    rl_feats, rl_train, bad = data.features(rl_train, cache, cfg.skip_bad, enc_cfg.max_frames)
    skipped.update(bad)
    for name, examples in evals.items():
        eval_feats, kept, eval_skipped = data.features(examples, cache, cfg.skip_bad, enc_cfg.max_frames)
        if eval_skipped:
            print(f"skipped in eval set {name}: {dict(eval_skipped)}")
        evals[name] = (kept, eval_feats)
    if skipped:
        print(f"skipped training examples: {dict(skipped)}")
    print(f"train: {len(train)} utterances, {sum(len(f) for f in feats) / 360000:.2f} h; RL hold-out: "
          f"{len(rl_train)}; " + ", ".join(f"{k}: {len(v[0])}" for k, v in evals.items()))

    stages = cfg.stages.split(",")
    tok_path = os.path.join(cfg.out, "tokenizer.json")
    if os.path.exists(tok_path) and (cfg.resume or not {"0", "1"} & set(stages)):
        tokenizer = Tokenizer.load(tok_path)
    else:
        tokenizer = Tokenizer.train([ex.text for ex in train] + [ex.prompt for ex in train if ex.prompt],
                                    vocab_size=cfg.vocab_size)
        tokenizer.save(tok_path)
    gen = torch.Generator().manual_seed(cfg.seed)

    # Stage 0: CTC pretraining of the encoder, on the utterances whose spoken words we know
    ctc = torch.nn.ModuleDict({"encoder": Encoder(enc_cfg), "head": CTCHead(enc_cfg)}).to(device)
    spoken = [i for i, ex in enumerate(train) if ex.spoken]
    ctc_feats, labels = [feats[i] for i in spoken], [ctc_labels(normalize(train[i].spoken)) for i in spoken]

    def ctc_step(idx):
        b = to_batch(ctc_feats, idx, device, cfg.spec_augment, gen, [labels[i] for i in idx])
        hidden, out_lens = ctc["encoder"](b["feats"], b["feat_lens"])
        return ctc_loss(ctc["head"](hidden), out_lens, b["tokens"], b["token_lens"])

    ckpt_config = {"train": asdict(cfg), "encoder": asdict(enc_cfg)}
    if "0" in stages:
        if not spoken:
            raise SystemExit("stage 0 (CTC) needs utterances with known words: asr rows, or a 'transcript' field")
        train_stage("stage0", ctc, ctc_step, ctc_feats, cfg.ctc_steps, cfg, device, ckpt_config, tokenizer, log,
                    gen)
        evaluate_ctc(ctc["encoder"], ctc["head"], *next(iter(evals.values())), cfg.eval_batch, device, log)

    # Stage 1: SFT of the speech LLM (and stage 1b, the same loss continued at the final lr)
    llm_cfg = LLMConfig(vocab_size=tokenizer.vocab_size, n_layer=cfg.llm_layers, n_embd=cfg.n_embd,
                        dropout=cfg.dropout, max_seq_len=640)
    ckpt_config = {"train": asdict(cfg), "grpo": asdict(gcfg), "encoder": asdict(enc_cfg), "llm": asdict(llm_cfg),
                   "projector": {"stack": cfg.stack}}
    all_feats = feats + rl_feats  # stage 1 trains on the first len(train), stage 1b on all
    targets = [tokenizer.encode(ex.text) + [tokenizer.eos_id] for ex in train + rl_train]
    prompts = [prompt_ids(tokenizer, ex, cfg.max_prompt_tokens)[0] for ex in train + rl_train]
    for name, examples in [("train", train)] + [(k, v[0]) for k, v in evals.items()]:
        n_cut = sum(prompt_ids(tokenizer, ex, cfg.max_prompt_tokens)[1] for ex in examples)
        if n_cut:
            print(f"warning: {n_cut} prompts in {name} are longer than --max-prompt-tokens "
                  f"{cfg.max_prompt_tokens} and were truncated")

    def sft(name, init, steps, n, **kw):
        """SFT on the first n of train + rl_train (stage 1: train; stage 1b: both, as GRPO saw both)."""
        model = SpeechLM(enc_cfg, LLM(llm_cfg), ProjectorConfig(cfg.stack)).to(device)
        resumed = done(cfg.out, name) if cfg.resume else None  # None: start fresh
        if resumed is not None:
            load_checkpoint(os.path.join(cfg.out, name), model)  # (train_stage reloads it with the optimizer)
        elif init == "stage0":
            load_checkpoint(os.path.join(cfg.out, "stage0"), ctc)
            model.encoder.load_state_dict(ctc["encoder"].state_dict())
            model.ctc_head.load_state_dict(ctc["head"].state_dict())  # for decoding (SpeechLM.decode)
        else:
            load_checkpoint(os.path.join(cfg.out, init), model)
        model.encoder.requires_grad_(not cfg.freeze_encoder)
        model.ctc_head.requires_grad_(False)
        hidden = None  # a frozen encoder's outputs, computed once (not needed if the stage is done)
        if cfg.freeze_encoder and not resumed:
            hidden = encode_all(model.encoder, all_feats[:n], cfg.eval_batch, device)

        def sft_step(idx):
            if hidden is not None:  # frozen encoder: its cached output through the (trained) projector
                b = to_batch(hidden, idx, device)
                h = spec_augment(b["feats"], **HIDDEN_MASKS, generator=gen) if cfg.sft_augment else b["feats"]
                audio = model.projector(h, b["feat_lens"])
            else:
                b = to_batch(all_feats, idx, device, cfg.spec_augment, gen)
                audio = model.encode(b["feats"], b["feat_lens"])
            return model.sft_loss_from_audio(*audio, [prompts[i] for i in idx], [targets[i] for i in idx])

        train_stage(name, model, sft_step, all_feats[:n], steps, cfg, device, ckpt_config, tokenizer, log, gen,
                    **kw)

    if "1" in stages:
        sft("stage1", "stage0", cfg.sft_steps, len(train))

    # Stage 2: GRPO from the SFT model
    if "2" in stages and cfg.resume and saved_state(cfg.out, rl_stage(gcfg)).get("step", 0) >= cfg.rl_steps:
        print(f"{rl_stage(gcfg)}: already done, skipping")
    elif "2" in stages:
        model = SpeechLM(enc_cfg, LLM(llm_cfg), ProjectorConfig(cfg.stack)).to(device)
        load_checkpoint(os.path.join(cfg.out, "stage1"), model)
        t_setup = time.time()  # RL data construction counts as stage-2 time
        pool = slice(len(train), None) if rl_train else slice(None)  # --rl-holdout 0: the SFT training set
        examples, ex_feats = (train + rl_train)[pool], all_feats[pool]
        if cfg.rl_data == "long":
            examples, ex_feats = joined_examples(examples, ex_feats, 3, enc_cfg.max_frames, cfg.seed)
        elif cfg.rl_data == "hard":
            examples, ex_feats = hard_examples(model, tokenizer, examples, ex_feats, prompts[pool], cfg.rl_pool,
                                               cfg.eval_batch, gcfg.max_new_tokens, gcfg.temperature, cfg.seed, device)
        print(f"{rl_stage(gcfg)}: {len(examples)} RL utterances (--rl-data {cfg.rl_data})")
        if not examples:
            raise SystemExit(f"{rl_stage(gcfg)}: no RL utterances with --rl-data {cfg.rl_data}; try --rl-data all")
        grpo_stage(model, tokenizer, examples, ex_feats, cfg, gcfg, device, ckpt_config, log, time.time() - t_setup)

    # Stage 1b: the equal-time control for stage 2
    if "1b" in stages:
        seconds = saved_state(cfg.out, rl_stage(gcfg))["elapsed"]
        print(f"stage1b: SFT from stage1 for {seconds:.0f} s, the wall time stage 2 took, on {len(all_feats)} "
              f"utterances (training set + RL hold-out)")
        sft("stage1b", "stage1", 10 ** 9, len(all_feats), lr_fn=lambda step: 0.1 * cfg.lr, seconds=seconds,
            init_opt=os.path.join(cfg.out, "stage1"))  # stage 1's AdamW state: SFT simply goes on

    # Every finished model, the equal-time SFT control (if run) as the baseline to beat
    models = [(name, os.path.join(cfg.out, stage)) for name, stage in
              (("sft+", "stage1b"), ("sft", "stage1"), ("grpo", "stage2"), ("grpo-mixed", "stage2-mixed"))
              if done(cfg.out, stage)]
    if models and cfg.evaluate:
        evaluate_models(models, evals, device, cfg.eval_batch, cfg.eval_max_tokens, log, cfg.max_prompt_tokens,
                        cfg.nbest, cfg.ctc_weight)


if __name__ == "__main__":
    try:
        main()
    except (data.DataError, AudioError) as e:  # bad input: name the file and line, no traceback
        raise SystemExit(f"error: {e}")
