"""
train_tts.py's supervised stages, each one train_stage call: on real audio the speech tokenizer
(CTC through the FSQ bottleneck), a speaker encoder (voice classification on crops), the flow
(tokens + voice -> log-mel by conditional flow matching), the CTC ASRs (the judge, the reward
ASR) and Token2Text; on (text, speech tokens) the LM's SFT, and its control. RL is in the script.
Each takes the script's config (cfg) and a TTSData (run; tts/corpora.py).
"""
import os
import random
from dataclasses import asdict, replace

import torch

from nanospeechrl import data
from nanospeechrl.checkpoint import load_checkpoint, read_config
from nanospeechrl.encoder import CTC_CHARS, CTCHead, Encoder, EncoderConfig, ctc_loss
from nanospeechrl.llm import LLMConfig
from nanospeechrl.pretrained import load_pretrained_into, pretrained_config
from nanospeechrl.trainer import mean_loss, train_stage
from nanospeechrl.tts.evaluate import synthesis_cer
from nanospeechrl.tts.flow import FlowConfig, TokenToMel
from nanospeechrl.tts.judge import ctc_model_transcriber
from nanospeechrl.tts.synthesis import TTS, load_model
from nanospeechrl.tts.speaker import SpeakerEncoder
from nanospeechrl.tts.token2text import Token2Text, Token2TextConfig
from nanospeechrl.tts.token_lm import TokenLM, prompt_ids
from nanospeechrl.tts.tokens import SpeechTokenizer, TokenizerConfig


def ctc_step_fn(model_fn, feats, labels, device):
    """batch indices -> CTC loss of model_fn(feats, lengths) -> (logits, lengths)."""
    def step(idx):
        b = data.to_batch(feats, idx, device, token_ids=[labels[i] for i in idx])
        logits, lens = model_fn(b["feats"], b["feat_lens"])
        return ctc_loss(logits, lens, b["tokens"], b["token_lens"])
    return step


def train_tokenizer(run, cfg, device, tokenizer, log, gen):
    """Stage tokenizer: CTC on the transcripts through the FSQ bottleneck."""
    torch.manual_seed(cfg.seed)
    tcfg = TokenizerConfig(encoder=dict(d_model=cfg.d_model, n_layer=cfg.tok_layers, dropout=0.0,
                                        conv_channels=cfg.conv_channels, vocab_size=len(CTC_CHARS) + 1),
                           n_upper=cfg.tok_upper,
                           fsq_dims=cfg.fsq_dims, fsq_levels=cfg.fsq_levels, stride=cfg.tok_stride)
    model = SpeechTokenizer(tcfg).to(device)
    step = ctc_step_fn(lambda f, n: model(f, n)[:2], run.feats, run.labels, device)
    train_stage("tokenizer", model, step, [len(f) for f in run.feats], cfg, device, {"tokenizer": asdict(tcfg)},
                tokenizer, log, gen, steps=cfg.tok_steps)
    return model.eval()


def train_speaker(name, scfg, seed, run, cfg, device, tokenizer, log, gen):
    """Stage speaker (and the judge's speaker encoder): cosine-softmax voice classification on crops."""
    torch.manual_seed(seed)
    model = SpeakerEncoder(scfg).to(device)
    feats, labels = run.feats, torch.tensor(run.voice_labels)

    def step(idx):
        b = data.to_batch(data.crops(feats, idx, cfg.spk_crop, gen), range(len(idx)), device)
        return model.loss(model(b["feats"], b["feat_lens"]), labels[idx].to(device))

    train_stage(name, model, step, [min(len(f), cfg.spk_crop) for f in feats], cfg, device,
                {"speaker": asdict(scfg), "voice_classes": run.voice_classes}, tokenizer, log, gen,
                steps=cfg.spk_steps)


def train_flow(run, tokens, voices, cfg, device, tokenizer, log, gen, n_codes, stride):
    """Stage flow: conditional flow matching from (tokens, voice) to log-mel. The voice is taken as
    at test time, from another utterance of the speaker (its speaker embedding and a crop for the
    reference encoder): the corpus draws pitch and rate per utterance, so the target's own
    embedding would tell the flow what no test-time reference can (cfg.flow_voice "own": the old way)."""
    torch.manual_seed(cfg.seed)
    frames = torch.cat(run.feats)
    fcfg = FlowConfig(n_codes=n_codes, speaker_dim=voices.shape[1], reference_dim=cfg.flow_ref, repeat=stride,
                      d_model=cfg.flow_d, n_layer=cfg.flow_layers, cfg_strength=cfg.cfg_strength,
                      mel_mean=frames.mean().item(), mel_std=frames.std().item())
    model = TokenToMel(fcfg).to(device)
    same_voice = {}  # speaker -> indices of its training utterances: a reference is another one of them
    for i, ex in enumerate(run.train):
        same_voice.setdefault(ex.speaker, []).append(i)

    def step(idx):
        b = data.to_batch(run.feats, idx, device, token_ids=[tokens[i] for i in idx])
        others = [[j for j in same_voice[run.train[i].speaker] if j != i] or [i] for i in idx]
        refs = [o[int(torch.randint(len(o), (1,), generator=gen))] for o in others]
        r = data.to_batch(data.crops(run.feats, refs, cfg.spk_crop, gen), range(len(refs)), device)
        embedding = voices[refs if cfg.flow_voice == "other" else idx]
        voice = model.voice(embedding.to(device), r["feats"], r["feat_lens"])
        return model.loss(b["feats"], b["feat_lens"], b["tokens"], b["token_lens"], voice, gen)

    train_stage("flow", model, step, [len(f) for f in run.feats], cfg, device, {"flow": asdict(fcfg)}, tokenizer,
                log, gen, steps=cfg.flow_steps)


def train_ctc(name, seed, steps, run, cfg, device, tokenizer, log, gen):
    """A CTC ASR on real audio (the judge, the reward ASR): its own seed, the tokenizer's depth."""
    torch.manual_seed(seed)
    enc_cfg = EncoderConfig(d_model=cfg.d_model, n_layer=cfg.tok_layers + cfg.tok_upper, dropout=0.0,
                            conv_channels=cfg.conv_channels, vocab_size=len(CTC_CHARS) + 1)
    model = torch.nn.ModuleDict({"encoder": Encoder(enc_cfg), "head": CTCHead(enc_cfg)}).to(device)
    step = ctc_step_fn(lambda f, n: (lambda h, m: (model["head"](h), m))(*model["encoder"](f, n)), run.feats,
                       run.labels, device)
    train_stage(name, model, step, [len(f) for f in run.feats], cfg, device, {"encoder": asdict(enc_cfg)},
                tokenizer, log, gen, steps=steps)


def train_token2text(run, tokens, cfg, device, tokenizer, log, gen, n_codes, stride):
    """Stage reward, part 2: Token2Text on the tokenizer's tokens of real training audio."""
    torch.manual_seed(cfg.seed + 3)
    tcfg = Token2TextConfig(n_codes=n_codes, d_model=cfg.d_model, n_layer=cfg.tok_upper + 2,
                            vocab_size=len(CTC_CHARS) + 1, repeat=stride)
    model = Token2Text(tcfg).to(device)

    step = lambda idx: model.ctc_loss([tokens[i] for i in idx], [run.labels[i] for i in idx], device)  # noqa: E731
    train_stage("token2text", model, step, [4 * stride * len(t) for t in tokens], cfg, device,
                {"token2text": asdict(tcfg)}, tokenizer, log, gen, steps=cfg.t2t_steps)


def lm_data(examples, tokens, tokenizer, n_codes):
    """(prompts, targets) of the LM's SFT: text -> the tokenizer's tokens of its audio + EOS."""
    prompts = [prompt_ids(tokenizer, ex.text, n_codes) for ex in examples]
    return prompts, [t + [n_codes] for t in tokens]


def train_lm(name, run, tokens, cfg, device, tokenizer, log, gen, n_codes, dev_tokens=None, **schedule):
    """Stage lm: SFT of the text-to-token LM on (text, the tokenizer's tokens of its audio), early
    stopping on the dev utterances' (dev_tokens); with schedule = seconds + lr_fn + init_opt, the
    control: SFT continued from the lm checkpoint."""
    torch.manual_seed(cfg.seed)
    control = schedule.get("init_opt")  # the control starts from the SFT model: its config and its paired set
    config = read_config(control) if control else None
    pairs = config["train"].get("lm_pairs", 0) if control else cfg.lm_pairs
    if pairs != cfg.lm_pairs:
        print(f"{name}: on the {pairs or 'all'} pairs the SFT LM trained on (--lm-pairs {cfg.lm_pairs} ignored)")
    n = pairs or len(run.train)  # limited paired data: RL's texts need no audio, SFT's do
    prompts, targets = lm_data(run.train[:n], tokens[:n], tokenizer, n_codes)
    if control:
        lm = TokenLM(LLMConfig(**config["llm"]), n_codes).to(device)
        load_checkpoint(control, lm)
    else:
        if cfg.llm_init:  # a pretrained decoder: its text rows after the speech tokens and EOS
            base = pretrained_config(cfg.llm_init)
            llm_cfg = replace(base, vocab_size=n_codes + 1 + max(base.vocab_size, tokenizer.vocab_size),
                              dropout=cfg.lm_dropout)
        else:
            llm_cfg = LLMConfig(vocab_size=n_codes + 1 + tokenizer.vocab_size, n_layer=cfg.lm_layers,
                                n_embd=cfg.n_embd, dropout=cfg.lm_dropout, max_seq_len=512)
        lm = TokenLM(llm_cfg, n_codes)
        if cfg.llm_init:
            load_pretrained_into(lm, cfg.llm_init, offset=n_codes + 1)
        lm = lm.to(device)
        max_ratio = 1.1 * max(len(t) / (len(p) - 2) for t, p in zip(targets, prompts))  # the length cap's slope
        config = {"llm": asdict(llm_cfg), "token_lm": {"n_codes": n_codes, "max_ratio": max_ratio, "flow": "flow",
                                                       "speaker": "speaker"}, "train": asdict(cfg)}
        schedule = {"steps": cfg.lm_steps}
    dev_loss = measure = None
    if dev_tokens:
        dev_prompts, dev_targets = lm_data(run.dev[0], dev_tokens, tokenizer, n_codes)
        dev_loss = lambda: mean_loss(lambda idx: lm.sft_loss([dev_prompts[i] for i in idx],  # noqa: E731
                                                             [dev_targets[i] for i in idx]),
                                     [len(p) + len(t) for p, t in zip(dev_prompts, dev_targets)], cfg.lm_batch_tokens,
                                     lambda idx: sum(len(dev_targets[i]) for i in idx))
        measure = dev_loss
        if cfg.lm_stop == "cer":  # what the reward ASR hears of dev syntheses; the dev loss logged beside it
            measure = dev_synthesis_cer(lm, run, cfg, device, tokenizer, config["token_lm"]["max_ratio"], dev_loss)
    train_stage(name, lm, lambda idx: lm.sft_loss([prompts[i] for i in idx], [targets[i] for i in idx]),
                [len(p) + len(t) for p, t in zip(prompts, targets)], cfg, device, config, tokenizer, log, gen,
                batch_frames=cfg.lm_batch_tokens, dev_loss=measure, dev_metric=f"dev_{cfg.lm_stop}", **schedule)


def dev_synthesis_cer(lm, run, cfg, device, tokenizer, max_ratio, dev_loss):
    """--lm-stop cer: () -> {dev_cer: the reward ASR's CER of 128 dev texts synthesised by the LM in
    training, each in a fixed training voice, dev_loss: dev_loss()}."""
    path = lambda stage: os.path.join(cfg.out, stage)  # noqa: E731
    tts = TTS(lm, load_model(path("flow")).to(device), load_model(path("speaker")).to(device), tokenizer, max_ratio)
    transcribe = ctc_model_transcriber(load_model(path("reward_asr")).to(device), cfg.eval_batch, device)
    rng = random.Random(f"{cfg.seed}/dev-voices")
    texts = [ex.text for ex in run.dev[0][:128]]
    cer = synthesis_cer(texts, [run.feats[rng.randrange(len(run.feats))] for _ in texts], transcribe, cfg,
                        cfg.rl_euler)
    return lambda: {"dev_cer": cer(tts), "dev_loss": dev_loss()}
