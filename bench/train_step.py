"""Benchmark one training step of every stage: eager fp32, torch.compile'd fp32, bf16 autocast.

    python bench/train_step.py [--steps 10] [--only ctc,sft,...] [--threads 2] [--quick]
    python bench/train_step.py --only ctc,tokenizer --modes eager --conv-channels 64   # vs the default 32

One step = forward + backward + gradient clipping + AdamW step, on synthetic random inputs
of the default shapes of train_asr.py (TrainConfig) and train_tts.py (TTSConfig), no corpus:

  ctc        stage 0: conformer encoder (d_model 144, 4 blocks) + CTC head, ~6000 padded frames
  sft        stage 1: projector + speech LLM (256 wide, 4 blocks) on a frozen encoder's cached
             outputs (SpecAugment-ed as in training), the same batches
  grpo       stage 2: one grpo.grpo_update on 32 completions (4 utterances x G = 8) of ~40 tokens
  tokenizer  TTS speech tokenizer (SpeechTokenizer: 2 + 2 conformer blocks, FSQ, CTC), 6000 frames
  flow       TTS flow matching (TokenToMel: 192 wide, 4 blocks, reference encoder), 6000 frames
  lm         TTS text-to-token LM (TokenLM: 256 wide, 4 blocks, dropout 0.1), 4000 tokens a batch

A batch is the median-length batch of the scripts' length bucketing (lengths drawn like the
built-in corpus's, padded to data.SHAPE_MULTIPLE). Modes: eager fp32; compiled fp32 (the
stage's networks through devices.compile_or_eager; the optimizer stays eager); bf16 autocast
(only where devices.CPU_BF16); --modes can add compiled-bf16; --conv-channels C adds ctc and
tokenizer with C channels in their subsampling convs (eager fp32) as one more mode. Every mode
has its own copy of the same initial model. The modes run interleaved, one step each per repeat
in a rotating order, so a machine whose speed wanders slows all alike; reported: the median step
time, and the median over repeats of each mode's time over eager's in the same repeat.

Compilation: the first compiled step's time (cold: a fresh inductor cache unless --warm-cache),
and (where compiling is >= 1.1x faster, or with --recompile all) the first compiled steps on
batches of two other padded lengths: recompiles if the graphs are specialised to the length,
as training would pay once per distinct padded length (printed per stage) up to
torch._dynamo's recompile limit (then it runs eagerly). Last: each stage's ratios to eager fp32.
"""
import argparse
import atexit
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nanospeechrl import data, devices, report  # noqa: E402
from nanospeechrl.asr.speechlm import ProjectorConfig, SpeechLM  # noqa: E402
from nanospeechrl.audio import spec_augment  # noqa: E402
from nanospeechrl.encoder import CTC_CHARS, CTCHead, Encoder, EncoderConfig, ctc_loss  # noqa: E402
from nanospeechrl.grpo import Completions, GRPOConfig, grpo_update  # noqa: E402
from nanospeechrl.llm import LLM, LLMConfig  # noqa: E402
from nanospeechrl.tts.flow import FlowConfig, TokenToMel  # noqa: E402
from nanospeechrl.tts.token_lm import TokenLM  # noqa: E402
from nanospeechrl.tts.tokens import SpeechTokenizer, TokenizerConfig  # noqa: E402
from train_asr import HIDDEN_MASKS, TrainConfig  # noqa: E402
from train_tts import TTSConfig  # noqa: E402

STAGES = ("ctc", "sft", "grpo", "tokenizer", "flow", "lm")
STEPS = {"ctc": ("ctc_steps", TrainConfig), "sft": ("sft_steps", TrainConfig), "grpo": ("rl_steps", TrainConfig),
         "tokenizer": ("tok_steps", TTSConfig), "flow": ("flow_steps", TTSConfig), "lm": ("lm_steps", TTSConfig)}
MODES = {"eager": (False, False), "compiled": (True, False), "bf16": (False, True), "compiled-bf16": (True, True)}
N_CHARS = len(CTC_CHARS) + 1


def corpus_lengths(n, seed=0):
    """Utterance lengths in frames like the built-in corpus's (47-949, mean ~230; bench/train_step.py)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g)
    return (47 - 180 * torch.log1p(-u)).clamp(max=949).long().tolist()


def pick_batches(lengths, max_frames, multiple=data.SHAPE_MULTIPLE):
    """The scripts' bucketing of `lengths` under max_frames padded frames -> (the batch of median
    padded length, [two of other padded lengths (recompiles?)], distinct padded lengths in an epoch)."""
    padded = lambda b: -(-max(lengths[i] for i in b) // multiple) * multiple  # noqa: E731
    batches = sorted(data.bucket_batches(lengths, max_frames, multiple=multiple, seed=0), key=padded)
    main = batches[len(batches) // 2]
    longer = next(b for b in batches[len(batches) * 3 // 4:] if padded(b) != padded(main))
    shorter = next(b for b in reversed(batches[:len(batches) // 4]) if padded(b) != padded(main))
    return main, [longer, shorter], len({padded(b) for b in batches})


WRAPPERS = []  # every compile_or_eager result, to tell whether a mode fell back to eager


def compile_or_eager(fn, enabled, name):
    out = devices.compile_or_eager(fn, enabled, name=name)
    if enabled:
        WRAPPERS.append(out)
    return out


# ----------------------------------------------------------------------------- the stages
# Each builder returns (description, make, (batch, [2 batches of other lengths]), distinct padded
# lengths in an epoch, shape(batch) -> words): make(compiled) -> step(batch) -> loss (a float)
# of a fresh copy of the stage's model, the same initial weights for every mode.

def supervised_step(model, loss_fn, lr, betas=(0.9, 0.98)):
    """train_stage's step: autocast forward, backward, clip at norm 1, AdamW."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=0.01)

    def step(batch):
        opt.zero_grad(set_to_none=True)
        with devices.autocast(torch.device("cpu")):
            loss = loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()
    return step


def stage_ctc(cfg, scale):
    lengths = corpus_lengths(3000)
    feats = [torch.randn(n, 80) for n in lengths]
    labels = [torch.randint(1, N_CHARS, (max(1, n // 8),)).tolist() for n in lengths]
    enc_cfg = EncoderConfig(d_model=cfg.d_model, n_layer=cfg.enc_layers, dropout=cfg.dropout,
                            conv_channels=cfg.conv_channels, vocab_size=N_CHARS)
    torch.manual_seed(0)
    base = torch.nn.ModuleDict({"encoder": Encoder(enc_cfg), "head": CTCHead(enc_cfg)})

    def make(compiled):
        model = copy.deepcopy(base).train()
        encoder = compile_or_eager(model["encoder"], compiled, name="ctc encoder")

        def loss_fn(idx):
            b = data.to_batch(feats, idx, "cpu", token_ids=[labels[i] for i in idx])
            hidden, out_lens = encoder(b["feats"], b["feat_lens"])
            return ctc_loss(model["head"](hidden), out_lens, b["tokens"], b["token_lens"])
        return supervised_step(model, loss_fn, cfg.lr)
    main, others, n_lengths = pick_batches(lengths, int(cfg.batch_frames * scale))
    desc = f"encoder d_model {cfg.d_model}, {cfg.enc_layers} blocks + CTC head"
    return desc, make, (main, others), n_lengths, lambda idx: f"{len(idx)} x {max(lengths[i] for i in idx)} frames"


def speech_llm(cfg):
    enc_cfg = EncoderConfig(d_model=cfg.d_model, n_layer=cfg.enc_layers, dropout=0.0, vocab_size=N_CHARS)
    llm_cfg = LLMConfig(vocab_size=cfg.vocab_size, n_layer=cfg.llm_layers, n_embd=cfg.n_embd, dropout=cfg.dropout,
                        max_seq_len=640)
    torch.manual_seed(0)
    model = SpeechLM(enc_cfg, LLM(llm_cfg), ProjectorConfig(cfg.stack))
    model.encoder.requires_grad_(False)  # frozen: stages 1-2 train the projector and the LLM
    model.ctc_head.requires_grad_(False)
    return model


def compile_llm(model, compiled, name):
    """The LLM inside a speech LLM (SpeechLM calls self.llm itself): its forward replaced."""
    if compiled:
        model.llm.forward = compile_or_eager(model.llm.forward, True, name=name)
    return model


def stage_sft(cfg, scale):
    lengths = corpus_lengths(3000)
    hidden = [torch.randn((n + 3) // 4, cfg.d_model) for n in lengths]  # the frozen encoder's cached outputs
    targets = [torch.randint(3, cfg.vocab_size, (max(2, n // 12),)).tolist() for n in lengths]
    base = speech_llm(cfg)

    def make(compiled):
        gen = torch.Generator().manual_seed(0)  # each mode the same SpecAugment masks
        model = compile_llm(copy.deepcopy(base).train(), compiled, "sft llm")
        projector = compile_or_eager(model.projector, compiled, name="sft projector")

        def loss_fn(idx):
            b = data.to_batch(hidden, idx, "cpu")
            h = spec_augment(b["feats"], **HIDDEN_MASKS, generator=gen) if cfg.sft_augment else b["feats"]
            audio = projector(h, b["feat_lens"])
            return model.sft_loss_from_audio(*audio, [[1]] * len(idx), [targets[i] for i in idx])
        return supervised_step(model, loss_fn, cfg.lr)
    main, others, n_lengths = pick_batches(lengths, int(cfg.batch_frames * scale))
    desc = f"projector + LLM {cfg.n_embd} wide, {cfg.llm_layers} blocks, encoder frozen (cached outputs)"
    slots = [(n + 3) // 8 + 1 + len(t) for n, t in zip(lengths, targets)]  # audio embeddings + task + target
    return desc, make, (main, others), n_lengths, \
        lambda idx: f"{len(idx)} x {max(lengths[i] for i in idx)} frames -> {max(slots[i] for i in idx)} LLM slots"


def stage_grpo(cfg, scale):
    gcfg = GRPOConfig()
    G = gcfg.num_generations
    n_utts = max(1, int(cfg.rl_batch * scale) // G)
    base = speech_llm(cfg).eval()  # stage 2: dropout off
    reference = copy.deepcopy(base).requires_grad_(False)
    torch.manual_seed(1)

    def rollout(n_frames, n_tokens):
        """A step's inputs: the frozen encoder's output for n_utts utterances and G completions each."""
        hidden_lens = torch.tensor([max(8, (n + 3) // 4) for n in n_frames])
        hidden = torch.randn(n_utts, int(hidden_lens.max()), cfg.d_model)
        lens = torch.tensor(n_tokens)
        tokens = torch.randint(3, cfg.vocab_size, (n_utts * G, int(lens.max())))
        mask = (torch.arange(tokens.shape[1])[None] < lens[:, None]).float()
        batch = Completions(torch.arange(n_utts), tokens, lens, mask, torch.randn(n_utts * G),
                            torch.zeros(n_utts * G, dtype=torch.bool))
        prompts = [[1]] * n_utts
        with torch.no_grad():
            ref = reference.completion_logprobs(hidden, hidden_lens, prompts, tokens, lens, gcfg.temperature)
        return hidden, hidden_lens, prompts, batch, ref

    lengths = corpus_lengths(3 * n_utts, seed=1)
    main = rollout(lengths[:n_utts], torch.randint(30, 51, (n_utts * G,)).tolist())
    others = [rollout(lengths[n_utts:2 * n_utts], torch.randint(50, 71, (n_utts * G,)).tolist()),
              rollout(lengths[2 * n_utts:], torch.randint(20, 31, (n_utts * G,)).tolist())]

    def make(compiled):
        model = compile_llm(copy.deepcopy(base), compiled, "grpo llm")
        policy = torch.nn.ModuleDict({"projector": model.projector, "llm": model.llm})
        opt = torch.optim.AdamW(policy.parameters(), lr=cfg.rl_lr, betas=(0.9, 0.99), weight_decay=0.0)

        def step(inputs):
            hidden, hidden_lens, prompts, batch, ref = inputs
            metrics = grpo_update(lambda: model.completion_logprobs(hidden, hidden_lens, prompts, batch.tokens,
                                                                   batch.lengths, gcfg.temperature),
                                  policy.parameters(), opt, batch, ref, gcfg)
            return metrics["loss"] if metrics else float("nan")
        return step
    desc = f"grpo_update of projector + LLM {cfg.n_embd} wide, {cfg.llm_layers} blocks (G = {G}, beta {gcfg.beta})"
    return desc, make, (main, others), None, \
        lambda x: f"{x[3].tokens.shape[0]} completions of {x[3].lengths.float().mean():.0f} tokens " \
                  f"(longest {x[3].tokens.shape[1]}) after {int(x[1].max()) // 2 + 1}-slot prompts"


def stage_tokenizer(tcfg, scale):
    lengths = corpus_lengths(3000)
    feats = [torch.randn(n, 80) for n in lengths]
    labels = [torch.randint(1, N_CHARS, (max(1, n // 8),)).tolist() for n in lengths]
    config = TokenizerConfig(encoder=dict(d_model=tcfg.d_model, n_layer=tcfg.tok_layers, dropout=0.0,
                                          conv_channels=tcfg.conv_channels, vocab_size=N_CHARS), n_upper=tcfg.tok_upper,
                             fsq_dims=tcfg.fsq_dims, fsq_levels=tcfg.fsq_levels)
    torch.manual_seed(0)
    base = SpeechTokenizer(config)

    def make(compiled):
        model = copy.deepcopy(base).train()
        forward = compile_or_eager(model, compiled, name="speech tokenizer")

        def loss_fn(idx):
            b = data.to_batch(feats, idx, "cpu", token_ids=[labels[i] for i in idx])
            logits, lens, _ = forward(b["feats"], b["feat_lens"])
            return ctc_loss(logits, lens, b["tokens"], b["token_lens"])
        return supervised_step(model, loss_fn, tcfg.lr)
    main, others, n_lengths = pick_batches(lengths, int(tcfg.batch_frames * scale))
    desc = f"SpeechTokenizer d_model {tcfg.d_model}, {tcfg.tok_layers} + {tcfg.tok_upper} blocks, " \
           f"FSQ {tcfg.fsq_levels}^{tcfg.fsq_dims}"
    return desc, make, (main, others), n_lengths, lambda idx: f"{len(idx)} x {max(lengths[i] for i in idx)} frames"


def stage_flow(tcfg, scale):
    lengths = corpus_lengths(3000)
    feats = [torch.randn(n, 80) for n in lengths]
    n_codes = tcfg.fsq_levels ** tcfg.fsq_dims
    tokens = [torch.randint(0, n_codes, ((n + 3) // 4,)).tolist() for n in lengths]  # 25 tokens/s
    voices = F.normalize(torch.randn(len(lengths), 128), dim=-1)  # the speaker encoder's embeddings
    fcfg = FlowConfig(n_codes=n_codes, speaker_dim=128, d_model=tcfg.flow_d, n_layer=tcfg.flow_layers,
                      cfg_strength=tcfg.cfg_strength)
    torch.manual_seed(0)
    base = TokenToMel(fcfg)

    def make(compiled):
        model = copy.deepcopy(base).train()
        gen = torch.Generator().manual_seed(0)
        voice = compile_or_eager(model.voice, compiled, name="flow voice")
        loss = compile_or_eager(model.loss, compiled, name="flow loss")

        def loss_fn(idx):
            b = data.to_batch(feats, idx, "cpu", token_ids=[tokens[i] for i in idx])
            refs = [int(torch.randint(len(feats), (1,), generator=gen)) for _ in idx]  # another clip of the voice
            r = data.to_batch(data.crops(feats, refs, tcfg.spk_crop, gen), range(len(refs)), "cpu")
            v = voice(voices[idx], r["feats"], r["feat_lens"])
            return loss(b["feats"], b["feat_lens"], b["tokens"], b["token_lens"], v, gen)
        return supervised_step(model, loss_fn, tcfg.lr)
    main, others, n_lengths = pick_batches(lengths, int(tcfg.batch_frames * scale))
    desc = f"TokenToMel {tcfg.flow_d} wide, {tcfg.flow_layers} blocks + reference encoder " \
           f"on {tcfg.spk_crop}-frame crops"
    return desc, make, (main, others), n_lengths, \
        lambda idx: f"{len(idx)} x {max(lengths[i] for i in idx)} frames ({max(len(tokens[i]) for i in idx)} tokens)"


def stage_lm(tcfg, scale):
    lengths = corpus_lengths(3000)
    n_codes = tcfg.fsq_levels ** tcfg.fsq_dims
    # prompt [<tts>][text BPE][<bos>]: ~1 BPE token per 16 frames of speech; target: 25 tokens/s + EOS
    prompts = [[n_codes + 1 + int(i) for i in torch.randint(0, tcfg.vocab_size, (2 + max(2, n // 16),))]
               for n in lengths]
    targets = [torch.randint(0, n_codes, ((n + 3) // 4,)).tolist() + [n_codes] for n in lengths]
    llm_cfg = LLMConfig(vocab_size=n_codes + 1 + tcfg.vocab_size, n_layer=tcfg.lm_layers, n_embd=tcfg.n_embd,
                        dropout=tcfg.lm_dropout, max_seq_len=512)
    torch.manual_seed(0)
    base = TokenLM(llm_cfg, n_codes)
    rows = [len(p) + len(t) for p, t in zip(prompts, targets)]

    def make(compiled):
        lm = copy.deepcopy(base).train()
        if compiled:  # sft_loss calls self(idx=...): the forward replaced
            lm.forward = compile_or_eager(lm.forward, True, name="token lm")
        return supervised_step(lm, lambda idx: lm.sft_loss([prompts[i] for i in idx], [targets[i] for i in idx]),
                               tcfg.lr)
    main, others, n_lengths = pick_batches(rows, int(tcfg.lm_batch_tokens * scale))
    desc = f"TokenLM {tcfg.n_embd} wide, {tcfg.lm_layers} blocks, dropout {tcfg.lm_dropout}, " \
           f"{n_codes + 1} + {tcfg.vocab_size} ids"
    return desc, make, (main, others), n_lengths, lambda idx: f"{len(idx)} x {max(rows[i] for i in idx)} tokens"


# ----------------------------------------------------------------------------- timing

def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def run_mode(step, bf16, batch):
    devices.BF16 = bf16  # devices.autocast reads it (trainer.train_stage's autocast)
    return timed(step, batch)


def net(seconds):
    return f"saves {seconds:.0f} s" if seconds >= 0 else f"costs {-seconds:.0f} s more"


def bench_stage(name, built, modes, repeats, recompile, variants=None):
    """variants: {name: make} of the same stage built with other settings, timed as eager fp32 modes."""
    desc, make, (main, others), n_lengths, shape = built
    kinds = {mode: (make, *MODES[mode]) for mode in modes} | {v: (m, False, False) for v, m in (variants or {}).items()}
    modes = list(kinds)
    field, config = STEPS[name]
    n_steps = getattr(config(), field)
    print(f"\n[{name}] {desc}; {n_steps} steps by default (--{field.replace('_', '-')})")
    print(f"  batch: {shape(main)}" + (f"; {n_lengths} distinct padded lengths in an epoch" if n_lengths else ""))
    torch._dynamo.reset()  # each stage compiles from scratch (and has the recompile limit to itself)
    steps = {}
    first, compile_s, losses, wrappers = {}, {}, {}, {}
    for mode in modes:
        make, compiled, bf16 = kinds[mode]
        torch.manual_seed(0)
        n_wrappers = len(WRAPPERS)
        steps[mode] = make(compiled)
        wrappers[mode] = WRAPPERS[n_wrappers:]
        t, losses[mode] = run_mode(steps[mode], bf16, main)  # the first step: compile (or oneDNN's first kernels)
        first[mode] = t
        if compiled:
            compile_s[mode] = t
        run_mode(steps[mode], bf16, main)  # warm-up
    times = {mode: [] for mode in modes}
    for r in range(repeats):
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:  # rotating order
            times[mode].append(run_mode(steps[mode], kinds[mode][2], main)[0])
    for mode in modes:
        med = statistics.median(times[mode])
        line = f"  {mode:14s} {1000 * med:8.1f} ms/step"
        if mode != "eager":
            ratio = statistics.median(t / e for t, e in zip(times[mode], times["eager"]))
            line += f"   {mode}/eager {ratio:.2f} (speed-up {1 / ratio:.2f}x)"
        line += f"   first step {first[mode]:.1f} s, first loss {losses[mode]:.4f}"
        print(line)
    ratio_to = {}
    for mode in compile_s:
        plain = "bf16" if MODES[mode][1] else "eager"  # the same precision, not compiled
        ratio_to[mode] = statistics.median(t / e for t, e in zip(times[mode], times[plain]))
        saving = statistics.median(times[plain]) - statistics.median(times[mode])
        eager_ones = [w.name for w in wrappers[mode] if not getattr(w, "is_compiled", False)]
        pays = f"pays for itself after {compile_s[mode] / saving:.0f} steps at one batch shape" if saving > 0 else \
            f"never pays: not faster than {plain}"
        print(f"  {mode}: compile {compile_s[mode]:.1f} s (the first step), {pays}"
              + (f" (fell back to eager: {', '.join(eager_ones)})" if eager_ones else ""))
        if recompile == "all" or (recompile == "auto" and ratio_to[mode] < 1 / 1.1):
            costs = []  # seconds over the plain step's, of each first step on a new length
            for other in others:
                t_new, _ = run_mode(steps[mode], MODES[mode][1], other)
                t_plain, _ = run_mode(steps[plain], MODES[plain][1], other)
                costs.append(t_new - t_plain)
                print(f"  {mode}: first step on another length ({shape(other)}): {t_new:.1f} s "
                      f"({plain} {t_plain:.2f} s)" + (": recompiled" if t_new > 2 * t_plain + 1 else ""))
            if saving > 0 and all(c > 1 for c in costs) and n_lengths:
                # torch._dynamo compiles up to its recompile limit of variants; lengths past it run eagerly
                limit = getattr(torch._dynamo.config, "recompile_limit", None) or torch._dynamo.config.cache_size_limit
                n_compiled = min(n_lengths, limit)
                total = compile_s[mode] + (n_compiled - 1) * statistics.mean(costs)
                gain = saving * n_compiled / n_lengths  # per step, averaged over the epoch's lengths
                print(f"  {mode}: every new length recompiles: {n_compiled - 1} recompiles, then (torch._dynamo's "
                      f"recompile limit, {limit}) the other {n_lengths - n_compiled} of the {n_lengths} lengths run "
                      f"eagerly; it pays after {total / gain:.0f} steps; over {n_steps} steps it "
                      f"{net(n_steps * gain - total)}")
            elif saving > 0 and all(c > 1 for c in costs):
                print(f"  {mode}: every new length recompiles (each GRPO step has its own lengths)")
            elif saving > 0 and costs[0] > 1:  # the second shape compiles a dynamic graph, which the third reuses
                total = compile_s[mode] + costs[0]
                print(f"  {mode}: one recompile (a graph dynamic in the length), then none: it pays after "
                      f"{total / saving:.0f} steps; over {n_steps} steps it {net(n_steps * saving - total)}")
    ratios = {mode: statistics.median(t / e for t, e in zip(times[mode], times["eager"])) for mode in modes}
    return ratios, compile_s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed repeats (one step per mode each)")
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated stages of {', '.join(STAGES)}")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--modes", default="eager,compiled,bf16",
                        help=f"comma-separated of {', '.join(MODES)}; bf16 modes only where devices.CPU_BF16")
    parser.add_argument("--recompile", default="auto", choices=("auto", "all", "none"),
                        help="time compiled steps on batches of two other lengths (recompiles?): where "
                             "compiling is >= 1.1x faster (auto), always, or never")
    parser.add_argument("--warm-cache", action="store_true",
                        help="use inductor's usual on-disk cache (compile times of a rerun) instead of a fresh one")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats, batches a tenth of the size")
    parser.add_argument("--conv-channels", type=int, default=0,
                        help="also time ctc and tokenizer with this many subsampling channels (eager fp32)")
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s]
    if set(only) - set(STAGES):
        parser.error(f"--only: unknown stages {sorted(set(only) - set(STAGES))}; choose from {', '.join(STAGES)}")
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - set(MODES):
        parser.error(f"--modes: unknown {sorted(set(modes) - set(MODES))}; choose from {', '.join(MODES)}")
    modes = ["eager"] + [m for m in modes if m != "eager" and (devices.CPU_BF16 or not MODES[m][1])]
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.warm_cache:  # a fresh cache, removed at exit
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache = tempfile.mkdtemp(prefix="inductor-bench-")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    repeats, scale = (2, 0.1) if args.quick else (args.steps, 1.0)
    import logging
    torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)  # no graph-break warnings in the table
    print(f"torch {torch.__version__}, {report.machine()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"devices.CPU_BF16 (bf16 autocast in training): {devices.CPU_BF16}; modes: {', '.join(modes)}; "
          f"{repeats} interleaved repeats; inductor cache: {'usual (warm)' if args.warm_cache else 'fresh (cold)'}")
    asr, tts = TrainConfig(), TTSConfig()
    builders = {"ctc": lambda: stage_ctc(asr, scale), "sft": lambda: stage_sft(asr, scale),
                "grpo": lambda: stage_grpo(asr, scale), "tokenizer": lambda: stage_tokenizer(tts, scale),
                "flow": lambda: stage_flow(tts, scale), "lm": lambda: stage_lm(tts, scale)}
    t0 = time.time()
    results = {}
    others = {"ctc": lambda: stage_ctc(replace(asr, conv_channels=args.conv_channels), scale),
              "tokenizer": lambda: stage_tokenizer(replace(tts, conv_channels=args.conv_channels), scale)}
    for name in only:
        variants = {f"conv {args.conv_channels}": others[name]()[1]} if args.conv_channels and name in others else None
        results[name] = bench_stage(name, builders[name](), modes, repeats, "none" if args.quick else args.recompile,
                                    variants)
    devices.BF16 = True
    print(f"\nsummary: step time / eager fp32's (median of {repeats} paired repeats; < 1 is faster):")
    for name, (ratios, compile_s) in results.items():
        cells = [f"{m}/eager {ratios[m]:.2f} ({1 / ratios[m]:.2f}x)" for m in ratios if m != "eager"]
        cells += [f"compile {compile_s[m]:.0f} s" + ("" if len(compile_s) == 1 else f" ({m})") for m in compile_s]
        print(f"  {name:10s} " + ", ".join(cells))
    print(f"total {time.time() - t0:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
