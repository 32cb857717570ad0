"""
Train a speech recognizer (or spoken-QA / speech-translation model) from scratch, then evaluate it.

    python train_asr.py                                   # tiny preset, built-in corpus, CPU
    python train_asr.py --task mix                        # ASR + spoken QA + speech translation
    python train_asr.py --task mix --stages 2 --off-policy reference   # + mixed-policy GRPO
    python train_asr.py --stages 1b                       # after stage 2: the equal-time SFT control
    python train_asr.py --preset small --device cuda      # one GPU
    python train_asr.py --data train.jsonl --eval dev=dev.jsonl
    python train_asr.py --data LibriSpeech/train-clean-100 --eval dev=LibriSpeech/dev-clean

Stages, in the order they run (each checkpoints to <out>/stage<k>; --resume continues):
  0   ctc_pretrain  the conformer encoder + a linear CTC head on characters
  1   sft           the speech LLM (encoder -> projector -> LLM), encoder frozen: cross-entropy
                    on the target text given [audio embeddings][task token][prompt]
  2   grpo          G sampled outputs per utterance, rule-based rewards, group advantages,
                    clipped policy loss + KL to the frozen SFT model (--off-policy reference:
                    mixed-policy GRPO, into <out>/stage2-mixed)
  1b  sft_control   the control for stage 2: SFT continued for the wall time stage 2 took
  (--stages eval: no stage, only the evaluation of every finished model in --out)
then evaluate: every finished model on every eval split, with paired-bootstrap intervals
against the first (the control when it ran). Metrics: <out>/metrics.jsonl, one JSON object a
line; `python -m nanospeechrl.plot <out>` draws them.
"""
import argparse
import copy
import os
import re
import time
from dataclasses import asdict, dataclass, replace

import torch
from tqdm import tqdm

from nanospeechrl import data, distributed
from nanospeechrl.asr.corpora import TASK_CORPORA, load_run_data
from nanospeechrl.asr.evaluate import evaluate_ctc, evaluate_models, seed_summary
from nanospeechrl.asr.rl_data import rl_examples
from nanospeechrl.asr.speechlm import ProjectorConfig, SpeechLM
from nanospeechrl.audio import AudioError, spec_augment
from nanospeechrl.checkpoint import done, load_checkpoint, restore_rng, save_checkpoint, saved_state
from nanospeechrl.cli import add_config_flags, build_configs, start_run
from nanospeechrl.devices import Phases, autocast
from nanospeechrl.encoder import (CTC_CHARS, FRAMES_PER_SECOND, CTCHead, Encoder, EncoderConfig, ctc_labels, ctc_loss,
                                  encode_all)
from nanospeechrl.grpo import (GRPOConfig, completion_mask, group_advantages, grpo_update, keep_groups,
                               rollout_metrics, Watchdog, tied_groups, with_reference_rows)
from nanospeechrl.llm import LLM, LLMConfig
from nanospeechrl.report import write_report
from nanospeechrl.pretrained import load_pretrained_into, pretrained_config
from nanospeechrl.rewards import TASK_REWARDS, normalize, parse_rewards, score_tasks
from nanospeechrl.trainer import mean_loss, train_stage


@dataclass
class TrainConfig:
    preset: str = "tiny"  # tiny (CPU, minutes) or small (one GPU)
    task: str = "asr"  # asr | sqa (spoken QA) | ast (speech translation) | mix (all three): the built-in corpora
    data: str = "builtin"  # "builtin", a JSONL manifest, or a LibriSpeech-style directory
    eval: str = ""  # extra eval sets: name=spec,name=spec (built-in: dev,test,test_accent,test_long)
    out: str = "out/asr"  # checkpoints, tokenizer and metrics.jsonl (out/<task> for the other tasks)
    seed: int = 0  # data generation, init and batching are deterministic in it
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps
    bf16: bool = True  # bf16 autocast on CPUs with native bf16 units (AMX, AVX512-BF16; devices.py); elsewhere fp32
    stages: str = "0,1,2"  # which stages to run: 0, 1, 2, and 1b (equal-time SFT control for 2); eval: none, evaluate
    resume: bool = False  # continue from the checkpoints in --out
    skip_bad: bool = False  # skip (and count) bad manifest lines / audio instead of failing
    n_train: int = 12000  # built-in corpus: asr training utterances
    n_test: int = 200  # built-in asr corpus: dev and test utterances
    n_test_understanding: int = 1000  # built-in sqa and ast corpora: dev and test items each (1,000 resolve ~1 BLEU)
    splits: str = ""  # built-in eval splits, comma-separated (mix: task/split); default all (mix: test, test_accent)
    long_frac: float = 0.1  # built-in asr corpus: multi-sentence rows (up to 30 s) added per single-sentence row
    n_sqa: int = 3000  # built-in corpus: spoken-QA training items (passage, question, answer)
    n_ast: int = 4000  # built-in corpus: speech-translation training pairs
    max_prompt_tokens: int = 48  # task token + prompt (question) tokens; longer ones are cut, and counted
    vocab_size: int = 384  # BPE vocabulary (text tokens + specials)
    d_model: int = 144  # encoder width
    enc_layers: int = 4  # conformer blocks
    conv_channels: int = 32  # channels of the encoder's subsampling convs (its costliest part on a CPU)
    n_embd: int = 256  # LLM width
    llm_init: str = ""  # a Llama / Qwen2 checkpoint directory: the LLM starts from it, with its tokenizer
    llm_layers: int = 4  # LLM blocks
    dropout: float = 0.0  # encoder and LLM dropout (always off in stage 2)
    stack: int = 2  # encoder frames per LLM audio embedding
    freeze_encoder: bool = True  # stages 1-2 train projector + LLM on the stage-0 encoder's outputs
    ctc_steps: int = 3000  # stage 0 steps
    sft_steps: int = 4000  # stage 1 steps (at most: early stopping may end it sooner)
    dev_every: int = 400  # stage 1: steps between dev-loss evaluations (the built-in dev splits, 200 items a task)
    patience: int = 3  # stage 1 stops after this many evaluations without a lower dev loss, best weights kept (0: off)
    lr: float = 2e-3  # peak learning rate (AdamW, warmup then cosine to lr / 10)
    batch_frames: int = 6000  # padded feature frames per batch (100 frames = 1 s)
    spec_augment: bool = False  # SpecAugment time and frequency masks on the log-mel in training
    sft_augment: bool = True  # SFT on a frozen encoder: time and channel masks on its cached outputs (HIDDEN_MASKS)
    rl_steps: int = 150  # GRPO steps (the algorithm's own settings are GRPOConfig's flags, below)
    rl_lr: float = 2e-5  # constant learning rate of stage 2
    rl_batch: int = 32  # completions per step: (utterances per step) * num_generations
    reward: str = ""  # name:weight,... (rewards.REWARDS) for all tasks, or per task: sqa=chrf:1;ast=bleu; "": TASK_REWARDS
    rl_data: str = "hard"  # hard (the SFT model errs or its samples disagree) | all | long (multi-sentence utterances; without any, 3 joined)
    rl_holdout: int = 0  # training utterances kept out of stages 0-1 for stage 2 and 1b (asr/corpora.py)
    rl_pool: int = 1000  # --rl-data hard: RL utterances screened
    rl_ckpt_every: int = 25  # stage 2 steps between checkpoints
    seeds: int = 1  # stages 2 and 1b run this many times from one SFT model, replicate k with seed+k (<stage>-seed<k>)
    rl_tag: str = ""  # stages 2 and 1b into stage2-<tag>, stage1b-<tag>: several RL settings beside one SFT model
    log_every: int = 25  # steps between metrics lines
    ckpt_every: int = 300  # steps between checkpoints
    eval_batch: int = 32  # utterances per decoding batch
    eval_max_tokens: int = 160  # decoding budget per utterance
    window: float = 10.0  # seconds: eval splits with longer utterances are scored again in windows cut at pauses
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
    # mix: single-sentence ASR rows (long ones took over SFT's token-level loss: docs/RESULTS.md, spoken QA
    # and translation)
    "mix": dict(out="out/mix", n_train=4000, n_sqa=2000, n_ast=3000, ctc_steps=1300, sft_steps=3200, long_frac=0.0,
                **UNDERSTANDING),
}
RL_DATA = ("all", "hard", "long")
# SpecAugment on the frozen encoder's cached outputs (144 channels, 25 frames/s) in SFT: without it
# the decoder memorises the fixed training sequences it sees every epoch (docs/RESULTS.md)
HIDDEN_MASKS = dict(n_freq_masks=2, freq_width=30, n_time_masks=4, time_frac=0.05)


def parse_args(argv=None):
    """Command line > preset > task defaults > dataclass defaults, for TrainConfig and GRPOConfig."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, TrainConfig, GRPOConfig)
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    preset, task = args.get("preset", "tiny"), args.get("task", "asr")
    if preset not in PRESETS:
        parser.error(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if task not in TASK_CORPORA:
        parser.error(f"unknown task {task!r}; choose from {', '.join(TASK_CORPORA)}")
    try:
        cfg, gcfg = build_configs({**TASK_DEFAULTS.get(task, {}), **PRESETS[preset], **args}, TrainConfig, GRPOConfig)
    except ValueError as e:
        parser.error(str(e))
    stages = cfg.stages.split(",")
    if set(stages) - {"0", "1", "1b", "2", "eval"}:
        parser.error(f"--stages {cfg.stages!r}: choose from 0, 1, 1b, 2 (comma-separated), or eval")
    if "2" in stages:  # fail at start-up, not after minutes of stages 0-1
        world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's
        if (cfg.rl_batch // gcfg.num_generations) % world:
            parser.error(f"--rl-batch {cfg.rl_batch} is {cfg.rl_batch // gcfg.num_generations} utterances a step, which "
                         f"{world} ranks cannot share evenly: use an --rl-batch that is a multiple of "
                         f"{world * gcfg.num_generations} (ranks x --num-generations)")
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
    if "1b" in stages and "2" not in stages and \
            not all(done(cfg.out, rl_stage(cfg, gcfg, k)) for k in range(cfg.seeds)):
        parser.error("stage 1b runs SFT for the wall time stage 2 took, so it needs a finished stage 2: "
                     "use --stages 2,1b (or --resume --stages 2,1b if stage 2 was stopped)")
    return cfg, gcfg


def task_rewards(cfg):
    """{task: {reward name: weight}}: --reward for every task ("bleu:1"), or per task
    ("sqa=chrf:1;ast=bleu:1", the others keeping their default), or each task's default."""
    if "=" not in cfg.reward:
        return {task: parse_rewards(cfg.reward or TASK_REWARDS[task]) for task in TASK_REWARDS}
    specs = dict(TASK_REWARDS)
    for item in filter(None, (x.strip() for x in cfg.reward.split(";"))):
        task, _, spec = item.partition("=")
        if task not in TASK_REWARDS:
            raise ValueError(f"--reward {cfg.reward!r}: unknown task {task!r}; choose from {', '.join(TASK_REWARDS)}")
        specs[task] = spec
    return {task: parse_rewards(spec) for task, spec in specs.items()}


def rl_stage(cfg, gcfg, k=0):
    """Stage 2's checkpoint name: mixed-policy GRPO gets its own, next to the on-policy one; so
    does each --rl-tag, and replicate k >= 1 of --seeds."""
    return ("stage2" if gcfg.off_policy == "none" else "stage2-mixed") + tag_suffix(cfg) + seed_suffix(k)


def tag_suffix(cfg):
    return f"-{cfg.rl_tag}" if cfg.rl_tag else ""


def seed_suffix(k):
    return f"-seed{k}" if k else ""


# ----------------------------------------------------------------------------- stage 0

def ctc_pretrain(ctc, run, cfg, device, ckpt_config, tokenizer, log, gen):
    """Stage 0: CTC on characters, on the utterances whose spoken words are known (no_speech
    clips included: nothing said, an empty label)."""
    spoken = [i for i, ex in enumerate(run.train) if ex.spoken or ex.no_speech]
    if not spoken:
        raise SystemExit("stage 0 (CTC) needs utterances with known words: asr rows, or a 'transcript' field")
    feats, labels = [run.feats[i] for i in spoken], [ctc_labels(normalize(run.train[i].spoken)) for i in spoken]

    def ctc_step(idx):  # batch indices -> CTC loss
        b = data.to_batch(feats, idx, device, cfg.spec_augment, gen, [labels[i] for i in idx])
        hidden, out_lens = ctc["encoder"](b["feats"], b["feat_lens"])
        return ctc_loss(ctc["head"](hidden), out_lens, b["tokens"], b["token_lens"])

    train_stage("stage0", ctc, ctc_step, [len(f) for f in feats], cfg, device, ckpt_config, tokenizer, log, gen,
                steps=cfg.ctc_steps)
    if distributed.is_main():
        evaluate_ctc(ctc["encoder"], ctc["head"], *next(iter(run.evals.values())), cfg.eval_batch, device, log)


# ----------------------------------------------------------------------------- stage 1 (and 1b)

def sft(name, init, n, run, ctc, model_fn, cfg, device, ckpt_config, tokenizer, log, gen, **schedule):
    """SFT of a fresh speech LLM (model_fn()) initialised from `init` ("stage0": the CTC encoder
    and head; else a speech-LLM checkpoint) on the first n utterances of run (train, then the
    hold-out). schedule: train_stage's steps, or seconds + lr_fn + init_opt (stage 1b)."""
    model = model_fn()
    resumed = done(cfg.out, name) if cfg.resume else None  # None: start fresh
    if resumed is not None:
        load_checkpoint(os.path.join(cfg.out, name), model)  # (train_stage reloads it with the optimizer)
    elif init == "stage0":
        load_checkpoint(os.path.join(cfg.out, "stage0"), ctc)
        model.encoder.load_state_dict(ctc["encoder"].state_dict())
        model.ctc_head.load_state_dict(ctc["head"].state_dict())  # for decoding (SpeechLM.decode)
        if cfg.llm_init:  # a pretrained decoder instead of a random one
            load_pretrained_into(model.llm, cfg.llm_init)
    else:
        load_checkpoint(os.path.join(cfg.out, init), model)
    model.encoder.requires_grad_(not cfg.freeze_encoder)
    model.ctc_head.requires_grad_(False)
    feats, prompts, targets = run.feats[:n], run.prompts, run.targets
    dev_ex, dev_feats, dev_prompts, dev_targets = run.dev
    hidden = dev_hidden = None  # a frozen encoder's outputs, computed once (not needed if the stage is done)
    if cfg.freeze_encoder and not resumed:
        hidden = encode_all(model.encoder, feats, cfg.eval_batch, device)
    if cfg.freeze_encoder and dev_feats and "steps" in schedule and not resumed:
        dev_hidden = encode_all(model.encoder, dev_feats, cfg.eval_batch, device)

    def dev_step(idx):  # batch indices -> cross-entropy on dev targets, no augmentation
        b = data.to_batch(dev_hidden, idx, device) if dev_hidden else data.to_batch(dev_feats, idx, device)
        audio = model.projector(b["feats"], b["feat_lens"]) if dev_hidden else model.encode(b["feats"], b["feat_lens"])
        return model.sft_loss_from_audio(*audio, [dev_prompts[i] for i in idx], [dev_targets[i] for i in idx])

    def sft_step(idx):  # batch indices -> cross-entropy on the target tokens
        if hidden is not None:  # frozen encoder: its cached output through the (trained) projector
            b = data.to_batch(hidden, idx, device)
            h = spec_augment(b["feats"], **HIDDEN_MASKS, generator=gen) if cfg.sft_augment else b["feats"]
            audio = model.projector(h, b["feat_lens"])
        else:
            b = data.to_batch(feats, idx, device, cfg.spec_augment, gen)
            audio = model.encode(b["feats"], b["feat_lens"])
        return model.sft_loss_from_audio(*audio, [prompts[i] for i in idx], [targets[i] for i in idx])

    dev_loss = (lambda: mean_loss(dev_step, [len(f) for f in dev_feats], cfg.batch_frames,
                                  lambda idx: sum(len(dev_targets[i]) for i in idx))) if dev_feats else None
    train_stage(name, model, sft_step, [len(f) for f in feats], cfg, device, ckpt_config, tokenizer, log, gen,
                units=lambda idx: sum(len(targets[i]) for i in idx), dev_loss=dev_loss, **schedule)  # a token mean


# ----------------------------------------------------------------------------- stage 2

def grpo(name, model, tokenizer, examples, feats, prompts, cfg, gcfg, device, ckpt_config, log, setup_seconds=0.0):
    """Stage 2 into <out>/<name>. Each step runs five phases, each holding on the device only what it
    needs: encode (the frozen encoder) -> rollout (G completions per utterance) -> reward ->
    reference (log-probs under the frozen SFT model) -> update (the projector and LLM)."""
    path = os.path.join(cfg.out, name)
    weights = task_rewards(cfg)
    model.encoder.requires_grad_(False)  # frozen, and run once per step for policy and reference alike
    reference = copy.deepcopy(model).requires_grad_(False)  # the SFT model's projector and LLM, frozen
    del reference.encoder, reference.ctc_head
    policy = torch.nn.ModuleDict({"projector": model.projector, "llm": model.llm})
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.rl_lr, betas=(0.9, 0.99), weight_decay=0.0)
    phases = Phases(device, {"encoder": model.encoder, "policy": policy, "reference": reference}, opt)
    gen = torch.Generator(device).manual_seed(cfg.seed + 7919 * distributed.rank())  # torchrun: each rank its own
    watchdog = Watchdog(name, path, gcfg)
    step, cursor, elapsed, bad = 0, [0, 0], setup_seconds, 0  # elapsed: stage 1b gets as much time
    if cfg.resume and os.path.exists(os.path.join(path, "state.json")):
        state = load_checkpoint(path, model, opt)["state"]
        step, cursor, elapsed = state["step"], state["cursor"], state["elapsed"]
        restore_rng(state)
        gen.set_state(torch.tensor(state["rollout_rng"], dtype=torch.uint8))
        print(f"{name}: resuming at step {step}")
    model.eval()  # dropout off: pi_old, pi_theta and pi_ref must each be one fixed function
    reference.eval()
    G = gcfg.num_generations
    n_sampled = G - (gcfg.off_policy != "none")  # mixed-policy: the reference answer is the G-th member
    targets = [(tokenizer.encode(ex.text) + [tokenizer.eos_id])[:gcfg.max_new_tokens] for ex in examples]
    batches = data.batches_forever([len(f) for f in feats], cursor, cfg.seed, batch_size=cfg.rl_batch // G)
    sampling = dict(temperature=gcfg.temperature, top_k=gcfg.top_k, top_p=gcfg.top_p, generator=gen)
    t0 = time.time() - elapsed
    for step in tqdm(range(step, cfg.rl_steps), desc=name, initial=step, total=cfg.rl_steps,
                     disable=not distributed.is_main()):
        idx = distributed.shard(next(batches))  # torchrun: this rank's utterances of the step
        step_prompts = [prompts[i] for i in idx]
        phases.stats.clear()
        with phases("encode", "encoder"), torch.no_grad(), autocast(device):
            b = data.to_batch(feats, idx, device)
            hidden, hidden_lens = model.encoder(b["feats"], b["feat_lens"])
        with phases("rollout", "policy"), torch.no_grad(), autocast(device):
            rollout = model.generate_from_audio(*model.projector(hidden, hidden_lens), step_prompts, tokenizer.eos_id,
                                                gcfg.max_new_tokens, num_samples=n_sampled, **sampling)
            tokens, lengths, off_policy = with_reference_rows(rollout, [targets[i] for i in idx], G)
        with phases("reward"):
            texts = [tokenizer.decode(t[:n]) for t, n in zip(tokens.tolist(), lengths.tolist())]
            group = [examples[i] for i in idx for _ in range(G)]  # each completion's utterance
            scores, parts = score_tasks(weights, texts, [ex.text for ex in group], [ex.task for ex in group])
            rewards = torch.tensor(scores).view(len(idx), G)
            advantages = group_advantages(rewards, gcfg.scale_rewards)
            tied = tied_groups(rewards)  # all rewards equal: advantages 0, no signal
            keep = ~tied if gcfg.filter_zero_std else torch.ones_like(tied)
            mask, truncated = completion_mask(tokens, lengths, tokenizer.eos_id, gcfg)
        row = {"stage": name, "step": step,
               **rollout_metrics(rewards, parts, tied, off_policy, rollout, lengths, truncated)}
        batch = keep_groups(tokens, lengths, mask, advantages, off_policy, keep, G)
        if distributed.any_true(batch is not None):  # else no group (on any rank) has anything to teach
            ref_logprobs = inputs = None
            if batch is not None:
                inputs = (hidden[batch.prompts], hidden_lens[batch.prompts],
                          [step_prompts[i] for i in batch.prompts.tolist()], batch.tokens, batch.lengths)
            if gcfg.beta and batch is not None:
                with phases("reference", "reference"), torch.no_grad():
                    ref_logprobs = reference.completion_logprobs(*inputs, gcfg.temperature)
            with phases("update", "policy", optimizer=True):
                metrics = grpo_update(lambda: model.completion_logprobs(*inputs, gcfg.temperature),
                                      policy.parameters(), opt, batch, ref_logprobs, gcfg)
            bad = 0 if metrics else bad + 1
            row.update(metrics or {"nonfinite_loss": bad})
        row.update(phases.stats, time=time.time() - t0)
        log(row)
        watchdog.check(row, step)
        if (step + 1) % cfg.rl_ckpt_every == 0 or step == cfg.rl_steps - 1:
            state = {"step": step + 1, "cursor": cursor, "done": step == cfg.rl_steps - 1,
                     "elapsed": time.time() - t0, "rollout_rng": gen.get_state().tolist()}
            save_checkpoint(path, model, ckpt_config, tokenizer, opt, state)
    distributed.barrier()


# ----------------------------------------------------------------------------- stage 1b, evaluation

def sft_control(run, ctc, model_fn, gcfg, k, cfg, **common):
    """Stage 1b, the control for stage 2 (replicate k): SFT goes on from stage 1 (its AdamW state,
    the final lr) for a time budget, the wall time stage 2 took, on everything stage 2 saw."""
    seconds = saved_state(cfg.out, rl_stage(cfg, gcfg, k))["elapsed"]
    name = "stage1b" + tag_suffix(cfg) + seed_suffix(k)
    print(f"{name}: SFT from stage1 for {seconds:.0f} s, the wall time {rl_stage(cfg, gcfg, k)} took, on "
          f"{len(run.feats)} utterances (training set + RL hold-out)")
    sft(name, "stage1", len(run.feats), run, ctc, model_fn, cfg=cfg, **common, seconds=seconds,
        lr_fn=lambda step: 0.1 * cfg.lr, init_opt=os.path.join(cfg.out, "stage1"))


def evaluate(evals, cfg, device, log):
    """Every finished model on every eval split; the equal-time SFT controls (if run) first, the
    first of them the baseline each other model's paired-bootstrap interval is taken against.
    stage1 is "sft", stage1b "sft+", stage2 "grpo", each with its tag (-mixed, --rl-tag);
    replicates of --seeds are "<method>@k", and where a method has several, seed_summary
    compares their means."""
    names = {"stage1b": "sft+", "stage1": "sft", "stage2": "grpo"}
    found = []  # (order, k, method, checkpoint)
    for d in os.listdir(cfg.out):
        m = re.fullmatch(r"(stage1b|stage1|stage2)((?:-(?!seed\d+$)[\w.+-]+?)?)(?:-seed(\d+))?", d)
        if m and done(cfg.out, d) and not (m[1] == "stage1" and (m[2] or m[3])):
            found.append((list(names).index(m[1]), int(m[3] or 0), names[m[1]] + m[2], os.path.join(cfg.out, d)))
    methods = {}  # method -> [(model name, checkpoint)], replicate 0 first
    for _, k, method, path in sorted(found):
        methods.setdefault(method, []).append((method + (f"@{k}" if k else ""), path))
    models = [model for group in methods.values() for model in group]
    if models:
        hyps = evaluate_models(models, evals, device, cfg.eval_batch, cfg.eval_max_tokens, log, cfg.max_prompt_tokens,
                               cfg.nbest, cfg.ctc_weight, int(cfg.window * FRAMES_PER_SECOND))
        if any(len(group) > 1 for group in methods.values()):
            seed_summary({m: [name for name, _ in group] for m, group in methods.items()}, evals, hyps, log)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    started = time.time()  # for the report card
    cfg, gcfg = parse_args(argv)
    device, log = start_run(cfg, gcfg)
    stages = cfg.stages.split(",")
    enc_cfg = EncoderConfig(d_model=cfg.d_model, n_layer=cfg.enc_layers, dropout=cfg.dropout,
                            conv_channels=cfg.conv_channels, vocab_size=len(CTC_CHARS) + 1)
    with distributed.main_first():  # rank 0 builds the corpus and feature cache and trains the tokenizer
        tokenizer, run = load_run_data(cfg, enc_cfg.max_frames)
    llm_cfg = pretrained_config(cfg.llm_init, tokenizer.vocab_size) if cfg.llm_init else \
        LLMConfig(vocab_size=tokenizer.vocab_size, n_layer=cfg.llm_layers, n_embd=cfg.n_embd, dropout=cfg.dropout,
                  max_seq_len=640)
    ckpt_config = {"train": asdict(cfg), "grpo": asdict(gcfg), "encoder": asdict(enc_cfg), "llm": asdict(llm_cfg),
                   "projector": {"stack": cfg.stack}}

    def new_speechlm():
        return SpeechLM(enc_cfg, LLM(llm_cfg), ProjectorConfig(cfg.stack)).to(device)

    gen = torch.Generator().manual_seed(cfg.seed)  # augmentation masks
    ctc = torch.nn.ModuleDict({"encoder": Encoder(enc_cfg), "head": CTCHead(enc_cfg)}).to(device)
    common = dict(cfg=cfg, device=device, tokenizer=tokenizer, log=log, gen=gen)
    if "0" in stages:
        ctc_pretrain(ctc, run, ckpt_config={"train": asdict(cfg), "encoder": asdict(enc_cfg)}, **common)
    if "1" in stages:
        sft("stage1", "stage0", len(run.train), run, ctc, new_speechlm, ckpt_config=ckpt_config, **common,
            steps=cfg.sft_steps)
    for k in range(cfg.seeds):  # replicate k of stages 2 and 1b: rollouts, RL data and batch order from seed + k
        kcfg = replace(cfg, seed=cfg.seed + k)
        name = rl_stage(cfg, gcfg, k)
        if "2" in stages and cfg.resume and saved_state(cfg.out, name).get("step", 0) >= cfg.rl_steps:
            print(f"{name}: already done, skipping")
        elif "2" in stages:
            model = new_speechlm()
            load_checkpoint(os.path.join(cfg.out, "stage1"), model)
            t_setup = time.time()  # RL data construction counts as stage-2 time
            examples, feats, prompts = rl_examples(model, tokenizer, run, kcfg, gcfg, device, enc_cfg.max_frames, name)
            grpo(name, model, tokenizer, examples, feats, prompts, kcfg, gcfg, device, ckpt_config, log,
                 time.time() - t_setup)
        if "1b" in stages:
            gen_k = gen if k == 0 else torch.Generator().manual_seed(kcfg.seed)
            sft_control(run, ctc, new_speechlm, gcfg, k, ckpt_config=ckpt_config, **{**common, "cfg": kcfg, "gen": gen_k})
    if cfg.evaluate and distributed.is_main():
        evaluate(run.evals, cfg, device, log)
    if distributed.is_main():
        print(f"report card: {write_report(cfg.out, 'train_asr.py', started)}")
    distributed.teardown()


if __name__ == "__main__":
    try:
        main()
    except (data.DataError, AudioError) as e:  # bad input: name the file and line, no traceback
        raise SystemExit(f"error: {e}")
