"""
Train a text-to-speech system from scratch (CosyVoice 2 in miniature), then evaluate it with
models that never trained it.

    python train_tts.py                                  # tiny preset, built-in corpus, CPU
    python train_tts.py --judge ''                       # judge with this run's CTC ASR (default: train_asr.py's
                                                         # speech LLM, out/asr/stage1, if there; --ctc-judge: both)
    python train_tts.py --preset small --device cuda     # one GPU
    python train_tts.py --data train.jsonl --eval test=test.jsonl   # manifests with a "speaker" field
    python sample.py synthesize --ckpt out/tts/lm --text "Hello there." --speaker en-us+f3 -o hello.wav

Stages, in the order they run (each checkpoints to <out>/<stage>; --resume continues):
  tokenizer   speech tokens: conformer-CTC with an FSQ bottleneck, 25 tokens/s (tts/tokens.py)
  speaker     speaker encoder on the training voices' labels (tts/speaker.py)
  flow        tokens + speaker embedding -> log-mel by conditional flow matching (tts/flow.py)
  reward      RL's reward models, frozen during RL: a CTC reward ASR on real log-mel, and
              Token2Text on the tokenizer's tokens of real audio (tts/token2text.py)
  lm          text -> speech tokens: llm.LLM + the KV-cached sampler, SFT (tts/token_lm.py),
              early stopping on dev loss, or (--lm-stop cer) on the reward ASR's CER of dev syntheses
  judge       the evaluation's own models, trained on real audio only, other seeds and sizes: a
              second speaker encoder, and a CTC judge ASR where train_asr.py's speech LLM, the
              judge when there, is not (or --ctc-judge)
  rl          RL of the LM by --rl: grpo (rewards on synthesised speech), diffro (gradients
              through Token2Text, tts/diffro.py), both, or both-nofilter -> <out>/rl-<method>
  control     the control for rl: LM SFT continued for the wall time rl took -> <out>/lm-control
then evaluate (tts/evaluate.py): the tokenizer's CER and code use, the speaker encoders' voice
ID, cosines and pitch check, the reward models' CER, and rows (a)-(d) on the test texts for
training and held-out voices, (d) for every LM (SFT, control, each RL method), and a page to
listen to them, <out>/samples/index.html. Metrics: <out>/metrics.jsonl; report card: <out>/report.md.
"""
import argparse
import copy
import os
import time
from dataclasses import asdict, dataclass, replace

import torch
from tqdm import tqdm

from nanospeechrl import data, distributed
from nanospeechrl.audio import AudioError
from nanospeechrl.checkpoint import done, load_checkpoint, read_config, restore_rng, save_checkpoint, saved_state
from nanospeechrl.cli import add_config_flags, build_configs, start_run
from nanospeechrl.devices import Phases, autocast
from nanospeechrl.grpo import (GRPOConfig, group_advantages, keep_groups, rollout_metrics, safe_step,
                               Watchdog, tied_groups)
from nanospeechrl.report import write_report
from nanospeechrl.rewards import parse_rewards, score
from nanospeechrl.tokenizer import Tokenizer
from nanospeechrl.tts.corpora import load_tts_data, rl_items
from nanospeechrl.tts.diffro import grpo_diffro_loss
from nanospeechrl.tts.evaluate import evaluate_run, finished_lms, judge_monitor
from nanospeechrl.tts.judge import check_unseen, ctc_model_transcriber, default_judge
from nanospeechrl.tts.rewards import TTS_REWARDS
from nanospeechrl.tts.speaker import SpeakerConfig, embed_all
from nanospeechrl.tts.synthesis import load_model, load_tts
from nanospeechrl.tts.token_lm import completion_logits, sample_tokens, speech_tokens
from nanospeechrl.tts.stages import train_ctc, train_flow, train_lm, train_speaker, train_token2text, train_tokenizer
from nanospeechrl.tts.tokens import tokenize_all

STAGES = ("tokenizer", "speaker", "flow", "reward", "lm", "judge", "rl", "control")
RL_METHODS = ("grpo", "diffro", "both", "both-nofilter")


@dataclass
class TTSConfig:
    preset: str = "tiny"  # tiny (CPU, minutes) or small (one GPU)
    data: str = "builtin"  # "builtin", or a JSONL manifest whose rows have a "speaker"
    eval: str = ""  # eval sets for other data: name=spec,...; voices in train are scored apart from the rest
    out: str = "out/tts"  # checkpoints, tokenizer, metrics.jsonl and samples/
    seed: int = 0  # data generation, init and batching are deterministic in it
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps
    bf16: bool = True  # bf16 autocast on CPUs with native bf16 units (AMX, AVX512-BF16; devices.py); elsewhere fp32
    stages: str = ",".join(STAGES)  # stages to run, comma-separated: tokenizer,speaker,flow,lm,judge,reward,rl,control
    resume: bool = False  # continue from the checkpoints in --out
    skip_bad: bool = False  # skip (and count) bad manifest lines / audio instead of failing
    n_train: int = 12000  # built-in corpus: training utterances
    n_test: int = 200  # built-in corpus: test texts (spoken by held-out voices, and again by training voices)
    vocab_size: int = 384  # text BPE vocabulary (text tokens + specials)
    d_model: int = 144  # width of the tokenizer, the judge, the reward ASR and Token2Text
    tok_layers: int = 2  # tokenizer blocks before the bottleneck
    tok_upper: int = 2  # tokenizer blocks after it
    conv_channels: int = 32  # channels of the subsampling convs of the tokenizer, judge and reward ASR
    fsq_dims: int = 6  # bottleneck dimensions (0: no bottleneck, for the comparison run)
    fsq_levels: int = 3  # values per bottleneck dimension: fsq_levels ** fsq_dims speech tokens
    tok_stride: int = 1  # encoder frames per speech token: 25 / tok_stride tokens a second
    tok_steps: int = 2000  # tokenizer CTC steps
    spk_steps: int = 2000  # speaker-encoder steps
    spk_crop: int = 300  # speaker training sees random crops of at most this many frames
    flow_d: int = 192  # flow estimator width
    flow_layers: int = 4  # flow estimator conformer blocks
    flow_steps: int = 1200  # flow-matching steps
    flow_voice: str = "other"  # the flow's speaker embedding in training: other (another clip of the voice) | own
    flow_ref: int = 128  # the flow's reference encoder over a clip of the voice: its size (0: none)
    euler_steps: int = 10  # Euler steps when sampling the flow in evaluation
    cfg_strength: float = 2.0  # classifier-free guidance strength w (in evaluation and in the RL reward)
    n_embd: int = 256  # LM width
    llm_init: str = ""  # a Llama / Qwen2 checkpoint directory: the LM starts from it (its shape), with its tokenizer
    lm_layers: int = 4  # LM blocks
    lm_steps: int = 1200  # LM SFT steps (at most: early stopping may end it sooner)
    dev_every: int = 200  # LM SFT: steps between dev-loss evaluations (the dev utterances' tokens)
    patience: int = 3  # LM SFT stops after this many evaluations without a better dev measure, best kept (0: off)
    lm_stop: str = "loss"  # LM SFT's dev measure: loss (teacher-forced, dev tokens) | cer (the reward ASR's CER of
    #                        128 dev texts synthesised in training voices, rl_euler flow steps: what RL will optimise)
    lm_dropout: float = 0.1  # LM dropout in SFT (its training sequences are few; always off in RL)
    lm_batch_tokens: int = 4000  # padded tokens per LM batch
    lm_pairs: int = 0  # LM SFT (and its control) on the first N training utterances only (0: all): limited paired data
    judge: str = "auto"  # the judge reported first: a train_asr.py speech LLM; auto: <out>/../asr/stage1 if it exists
    judge_steps: int = 1000  # judge CTC steps (when it is trained here)
    ctc_judge: bool = False  # beside a speech-LLM judge, also train and report a CTC judge (without one: always)
    reward_steps: int = 600  # reward-ASR CTC steps
    t2t_steps: int = 600  # Token2Text CTC steps
    rl: str = "both"  # rl's method: grpo | diffro | both (+ DiffRO on positive advantages) | both-nofilter
    rl_steps: int = 40  # RL steps
    rl_lr: float = 5e-5  # constant learning rate of RL
    rl_batch: int = 32  # samples per RL step: texts per step * num_generations (DiffRO alone: one sample per text)
    rl_texts: int = 2000  # RL texts, drawn from the grammar and in no corpus split
    rl_euler: int = 4  # Euler steps of the flow inside GRPO's reward phase
    reward: str = "cer:1,duration:1"  # GRPO's rewards, name:weight of tts/rewards.py (cer, duration, similarity)
    diffro_beta: float = 0.1  # DiffRO's KL weight (GRPO's is --beta)
    rl_eval_every: int = 0  # during rl, score the judge's CER on 64 dev texts every this many steps (0: never)
    seeds: int = 1  # rl and control run this many times from one SFT LM, replicate k with seed + k (<stage>-seed<k>)
    rl_tag: str = ""  # rl and control into rl-<method>-<tag> and lm-control-<tag>, beside other settings' runs
    lr: float = 2e-3  # peak learning rate (AdamW, warmup then cosine to lr / 10)
    batch_frames: int = 6000  # padded log-mel frames per batch (100 frames = 1 s)
    log_every: int = 25  # steps between metrics lines
    ckpt_every: int = 300  # steps between checkpoints
    rl_ckpt_every: int = 25  # RL steps between checkpoints
    eval_batch: int = 32  # utterances per evaluation batch
    eval_temperature: float = 1.0  # LM sampling temperature in evaluation
    eval_top_k: int = 25  # LM top-k in evaluation (CosyVoice's; RL rollouts sample from every token)
    eval_top_p: float = 0.8  # LM top-p in evaluation (CosyVoice's)
    evaluate: bool = True  # evaluate at the end


PRESETS = {
    "tiny": {},
    "small": dict(d_model=256, tok_layers=4, tok_upper=4, flow_d=384, flow_layers=8, n_embd=512, lm_layers=8,
                  n_train=40000, tok_steps=10000, spk_steps=3000, flow_steps=20000, lm_steps=20000,
                  judge_steps=10000, reward_steps=10000, t2t_steps=5000, lr=1e-3, batch_frames=30000,
                  lm_batch_tokens=20000, eval_batch=64, rl_steps=1000, rl_batch=128),
}
TTS_GRPO = dict(beta=0.1, num_generations=8)  # the seed paper's TTS GRPO (SEEDS.md A); temperature 1
NEEDS = {"flow": ["tokenizer", "speaker"], "lm": ["tokenizer"], "reward": ["tokenizer"],  # stage -> its inputs
         "rl": ["tokenizer", "speaker", "flow", "lm", "reward_asr", "token2text"], "control": ["lm", "rl"]}


def parse_args(argv=None):
    """Command line > preset > TTS_GRPO > dataclass defaults, for TTSConfig and GRPOConfig."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, TTSConfig, GRPOConfig)
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    preset = args.get("preset", "tiny")
    if preset not in PRESETS:
        parser.error(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    try:
        cfg, gcfg = build_configs({**TTS_GRPO, **PRESETS[preset], **args}, TTSConfig, GRPOConfig)
        parse_rewards(cfg.reward, TTS_REWARDS)
    except ValueError as e:
        parser.error(str(e))
    stages = cfg.stages.split(",")
    if set(stages) - set(STAGES):
        parser.error(f"--stages {cfg.stages!r}: choose from {', '.join(STAGES)} (comma-separated)")
    if cfg.rl not in RL_METHODS:
        parser.error(f"--rl {cfg.rl!r}: choose from {', '.join(RL_METHODS)}")
    if cfg.lm_stop not in ("loss", "cer"):
        parser.error(f"--lm-stop {cfg.lm_stop!r}: choose from loss, cer")
    if cfg.tok_stride < 1:
        parser.error(f"--tok-stride {cfg.tok_stride}: 1 (25 tokens a second) or more (25 / stride)")
    if cfg.flow_voice not in ("other", "own"):
        parser.error(f"--flow-voice {cfg.flow_voice!r}: choose from other, own")
    if "rl" in stages and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        parser.error("TTS RL runs in one process: under torchrun run the supervised stages, then --stages rl alone")
    if "rl" in stages and (cfg.rl_batch % gcfg.num_generations or gcfg.off_policy != "none"):
        parser.error(f"--rl-batch {cfg.rl_batch} must be a multiple of --num-generations {gcfg.num_generations} "
                     f"(each text needs a whole group), and TTS RL has no --off-policy reference rows")
    runs = [rl_name(cfg, k) for k in range(cfg.seeds)]
    made = set(stages) | ({"speaker_eval"} if "judge" in stages else set()) | \
        ({"reward_asr", "token2text"} if "reward" in stages else set()) | (set(runs) if "rl" in stages else set())
    needs = {**NEEDS, "lm": NEEDS["lm"] + (["speaker", "flow", "reward_asr"] if cfg.lm_stop == "cer" else [])}
    for stage, inputs in needs.items():
        inputs = [x for n in inputs for x in (runs if n == "rl" else [n])]
        missing = [n for n in inputs if n not in made and not done(cfg.out, n)]
        if stage in stages and missing:
            parser.error(f"{stage} needs the finished {missing[0]} checkpoint in {cfg.out}: run the stage that makes "
                         f"it, or point --out at a run that has it")
    if cfg.judge == "auto":
        cfg = replace(cfg, judge=default_judge(cfg.out))
        print(f"judge: the speech LLM {cfg.judge} (train_asr.py)" + (", and this run's CTC judge" * cfg.ctc_judge)
              if cfg.judge else
              f"judge: this run's CTC judge (no train_asr.py speech LLM in "
              f"{os.path.join(os.path.dirname(os.path.normpath(cfg.out)), 'asr', 'stage1')}: run it first for the "
              f"stronger judge)")
    elif cfg.judge and not os.path.exists(os.path.join(cfg.judge, "config.json")):
        parser.error(f"--judge {cfg.judge}: no checkpoint there (expected e.g. out/asr/stage1 from train_asr.py)")
    return cfg, gcfg


def rl_name(cfg, k=0):
    """RL's checkpoint: rl-<method>, then -<tag> (--rl-tag) and -seed<k> (replicate k of --seeds)."""
    return f"rl-{cfg.rl}" + (f"-{cfg.rl_tag}" if cfg.rl_tag else "") + (f"-seed{k}" if k else "")


def control_name(cfg, k=0):
    """The control of rl_name(cfg, k): lm-control, with the same tag and replicate."""
    return "lm-control" + rl_name(cfg, k)[len(f"rl-{cfg.rl}"):]


# ----------------------------------------------------------------------------- RL

def tts_rl(name, items, tts, reward_asr, token2text, cfg, gcfg, device, log, monitor=None, setup_seconds=0.0):
    """Stage rl. A step: rollout (G token sequences per text) -> token2mel (flow, few Euler steps)
    -> reward (reward ASR on the mel: cer, duration) -> advantages -> reference -> update:
    GRPO's loss, DiffRO's, or both (DiffRO on positive-advantage samples, or on all)."""
    method, path, use_grpo = cfg.rl, os.path.join(cfg.out, name), cfg.rl != "diffro"
    lm = tts.lm.requires_grad_(True)
    reference = copy.deepcopy(lm).requires_grad_(False)  # the SFT model, frozen
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.rl_lr, betas=(0.9, 0.99), weight_decay=0.0)
    scorers = torch.nn.ModuleDict({"asr": reward_asr, "speaker": tts.speaker})
    phases = Phases(device, {"policy": lm, "flow": tts.flow, "reward": scorers, "reference": reference,
                             "token2text": token2text}, opt)
    gen, cpu_gen = torch.Generator(device).manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    watchdog = Watchdog(name, path, gcfg)
    step, cursor, elapsed, bad = 0, [0, 0], setup_seconds, 0  # elapsed: the control gets as much time
    if cfg.resume and os.path.exists(os.path.join(path, "state.json")):
        state = load_checkpoint(path, lm, opt)["state"]
        step, cursor, elapsed = state["step"], state["cursor"], state["elapsed"]
        restore_rng(state)
        gen.set_state(torch.tensor(state["rollout_rng"], dtype=torch.uint8))
        cpu_gen.set_state(torch.tensor(state["flow_rng"], dtype=torch.uint8))
        print(f"{name}: resuming at step {step}")
    lm.eval()  # dropout off: pi_old, pi_theta and pi_ref must each be one fixed function
    reference.eval()
    G = gcfg.num_generations if use_grpo else 1  # DiffRO alone learns from one sample per text
    weights = parse_rewards(cfg.reward, TTS_REWARDS)
    prompts = [lm.prompt(tts.tokenizer, it["text"]) for it in items]
    labels = [it["labels"] for it in items]
    voices = tts.voice([it["cond"] for it in items]).cpu()  # each text's training voice, as the flow takes it
    if "similarity" in weights:  # the reward's target: the speaker embedding of that voice's clip
        targets = embed_all(tts.speaker, [it["cond"] for it in items], cfg.eval_batch, device)
    transcribe = ctc_model_transcriber(reward_asr, cfg.eval_batch, device)
    batches = data.batches_forever([len(p) for p in prompts], cursor, cfg.seed, batch_size=cfg.rl_batch // G)
    ckpt_config = {**read_config(os.path.join(cfg.out, "lm")), "rl": {"method": method, **asdict(gcfg)}}
    if monitor and step == 0:  # the curve's first point: the SFT model, before any update
        log({"stage": name, "step": -1, "judge_cer": monitor(tts)})
    t0 = time.time() - elapsed
    for step in tqdm(range(step, cfg.rl_steps), desc=name, initial=step, total=cfg.rl_steps):
        idx = next(batches)
        step_prompts, texts = [prompts[i] for i in idx], [items[i]["text"] for i in idx for _ in range(G)]
        phases.stats.clear()
        with phases("rollout", "policy"), torch.no_grad(), autocast(device):
            rollout, capped = sample_tokens(lm, step_prompts, tts.max_ratio, G, gcfg.temperature, gcfg.top_k,
                                            gcfg.top_p, gen)
        speech = speech_tokens(rollout, lm.eos_id)
        rewards, parts = torch.zeros(len(idx), G), {}
        if use_grpo:  # DiffRO alone needs no audio
            with phases("token2mel", "flow"), torch.no_grad(), autocast(device):
                mels = tts.mels(speech, voices[idx].repeat_interleave(G, 0).to(device), cfg.rl_euler, cpu_gen)
            with phases("reward", "reward"), torch.no_grad():
                sims = None
                if "similarity" in weights:
                    sims = embed_all(tts.speaker, mels, cfg.eval_batch, device) * targets[idx].repeat_interleave(G, 0)
                    sims = sims.sum(-1).tolist()
                scores, parts = score(weights, transcribe(mels), texts, TTS_REWARDS, lengths=[len(t) for t in speech],
                                      group=G, similarity=sims)
                rewards = torch.tensor(scores).view(len(idx), G)
        advantages = group_advantages(rewards, gcfg.scale_rewards) if use_grpo else rewards  # (DiffRO: unused)
        tied = tied_groups(rewards)
        keep = ~tied if use_grpo and gcfg.filter_zero_std else torch.ones_like(tied)
        L = rollout.tokens.shape[1]
        mask = (torch.arange(L, device=rollout.tokens.device)[None] < rollout.lengths[:, None]).float()
        if gcfg.mask_truncated_completions:
            mask = mask * (~capped)[:, None].float()
        off = torch.zeros_like(capped)
        row = {"stage": name, "step": step,
               **rollout_metrics(rewards, parts, tied, off, rollout, rollout.lengths, capped)}
        if not use_grpo:  # DiffRO alone scores no audio: its reward is diffro/reward, logged by the update
            for key in ("reward", "reward_std", "frac_reward_zero_std"):
                del row[key]
        batch = keep_groups(rollout.tokens, rollout.lengths, mask, advantages, off, keep, G)
        if batch is not None:
            kept = [step_prompts[i] for i in batch.prompts.tolist()]
            with phases("reference", "reference"), torch.no_grad(), autocast(device):
                ref_logits = completion_logits(reference, kept, batch.tokens, batch.lengths).float()
            diffro_rows = {"grpo": torch.zeros_like(batch.off_policy), "both": batch.advantages > 0}.get(
                method, torch.ones_like(batch.off_policy))  # diffro, both-nofilter: every sample
            row_labels = [labels[idx[i]] for i in batch.prompts.tolist() for _ in range(G)]
            old = []  # pi_old's log-probs, from the first iteration

            def loss_fn(it):
                return grpo_diffro_loss(lm, token2text, kept, batch, ref_logits, old, row_labels, use_grpo, diffro_rows,
                                        cfg.diffro_beta, gcfg, cpu_gen)

            with phases("update", "policy", "token2text", optimizer=True), autocast(device):
                metrics = safe_step(loss_fn, lm.parameters(), opt, gcfg.num_iterations)
            bad = 0 if metrics else bad + 1
            row.update(metrics or {"nonfinite_loss": bad})
        if monitor and (step + 1) % cfg.rl_eval_every == 0:
            t_watch = time.time()
            row["judge_cer"] = monitor(tts)
            t0 += time.time() - t_watch  # watching is not training: the control's time budget leaves it out
        row.update(phases.stats, time=time.time() - t0)
        log(row)
        watchdog.check(row, step)
        if (step + 1) % cfg.rl_ckpt_every == 0 or step == cfg.rl_steps - 1:
            state = {"step": step + 1, "cursor": cursor, "done": step == cfg.rl_steps - 1, "elapsed": time.time() - t0,
                     "rollout_rng": gen.get_state().tolist(), "flow_rng": cpu_gen.get_state().tolist()}
            save_checkpoint(path, lm, ckpt_config, tts.tokenizer, opt, state)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    started = time.time()  # for the report card
    cfg, gcfg = parse_args(argv)
    device, log = start_run(cfg, gcfg)
    stages, path = cfg.stages.split(","), lambda stage: os.path.join(cfg.out, stage)  # noqa: E731
    with distributed.main_first():  # torchrun: rank 0 builds the corpus and trains the text tokenizer
        run = load_tts_data(cfg)
        if os.path.exists(path("tokenizer.json")) and (cfg.resume or "tokenizer" not in stages or
                                                       not distributed.is_main()):
            tokenizer = Tokenizer.load(path("tokenizer.json"))
        else:
            tokenizer = Tokenizer.from_pretrained(cfg.llm_init) if cfg.llm_init else \
                Tokenizer.train([ex.text for ex in run.train], vocab_size=cfg.vocab_size)
            tokenizer.save(path("tokenizer.json"))
    if cfg.judge:  # a judge that trained on a dev or test text would flatter the TTS: refused before any training
        check_unseen(cfg.judge, [ex.text for ex in run.dev[0]] +
                     [it["text"] for items in run.voice_sets.values() for it in items])
    gen = torch.Generator().manual_seed(cfg.seed)
    common = dict(cfg=cfg, device=device, tokenizer=tokenizer, log=log, gen=gen)
    if "tokenizer" in stages:
        train_tokenizer(run, **common)
    if "speaker" in stages:
        train_speaker("speaker", SpeakerConfig(classes=tuple(len(c) for c in run.voice_classes)), cfg.seed, run,
                      **common)
    if {"flow", "lm", "reward", "control"} & set(stages):
        speech_tok = load_model(path("tokenizer")).to(device)
        tokens, n_codes = tokenize_all(speech_tok, run.feats, cfg.eval_batch, device), speech_tok.config.n_codes
        stride = speech_tok.config.stride  # the trained tokenizer's, whatever this command's --tok-stride says
    if "flow" in stages:
        voices = embed_all(load_model(path("speaker")).to(device), run.feats, cfg.eval_batch, device)
        train_flow(run, tokens, voices, n_codes=n_codes, stride=stride, **common)
    if "reward" in stages:  # RL's reward models, a reward ASR on log-mel and Token2Text on tokens (before lm: its
        # --lm-stop cer scores with the reward ASR)
        train_ctc("reward_asr", cfg.seed + 2, cfg.reward_steps, run, **common)
        train_token2text(run, tokens, n_codes=n_codes, stride=stride, **common)
    if "lm" in stages:
        dev_tokens = tokenize_all(speech_tok, run.dev[1], cfg.eval_batch, device)
        train_lm("lm", run, tokens, n_codes=n_codes, dev_tokens=dev_tokens, **common)
    if "judge" in stages:  # the evaluation's own models: nothing else trains on, selects or rewards with them
        if cfg.ctc_judge or not cfg.judge:  # beside the speech LLM it read synthesised speech alike (RESULTS)
            train_ctc("judge", cfg.seed + 1, cfg.judge_steps, run, **common)
        scfg = SpeakerConfig(channels=192, n_layer=3, kernel=3, mean_norm=True,  # another architecture and seed
                             classes=tuple(len(c) for c in run.voice_classes))
        train_speaker("speaker_eval", scfg, cfg.seed + 1, run, **common)
    for k in range(cfg.seeds):  # replicate k: RL texts, rollouts and the control's batches from seed + k
        kcfg, name = replace(cfg, seed=cfg.seed + k), rl_name(cfg, k)
        if "rl" in stages and not (cfg.resume and done(cfg.out, name)):
            t_setup = time.time()
            items = rl_items(run, cfg.rl_texts, kcfg.seed)
            tts = load_tts(path("lm")).to(device)
            reward_asr, token2text = (load_model(path(n)).to(device).requires_grad_(False)
                                      for n in ("reward_asr", "token2text"))
            monitor = judge_monitor(run, items, cfg, device) if cfg.rl_eval_every else None
            tts_rl(name, items, tts, reward_asr, token2text, kcfg, gcfg, device, log, monitor, time.time() - t_setup)
        if "control" in stages:  # SFT continued from lm for the wall time rl took, at the final lr
            seconds = saved_state(cfg.out, name)["elapsed"]
            print(f"{control_name(cfg, k)}: LM SFT from lm for {seconds:.0f} s, the wall time {name} took")
            train_lm(control_name(cfg, k), run, tokens, n_codes=n_codes, seconds=seconds,
                     lr_fn=lambda step: 0.1 * cfg.lr, init_opt=path("lm"), **{**common, "cfg": kcfg})
    if cfg.evaluate and distributed.is_main():
        evaluate_run(run, cfg, device, log, *finished_lms(cfg.out))
    if distributed.is_main():
        print(f"report card: {write_report(cfg.out, 'train_tts.py', started)}")
    distributed.teardown()


if __name__ == "__main__":
    try:
        main()
    except (data.DataError, AudioError) as e:  # bad input: name the file and line, no traceback
        raise SystemExit(f"error: {e}")
