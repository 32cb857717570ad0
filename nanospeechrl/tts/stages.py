"""
train_tts.py's supervised stages before and beside the LM, each one train_stage call on real
audio: the speech tokenizer (CTC through the FSQ bottleneck), a speaker encoder (voice
classification on crops), the flow (tokens + voice -> log-mel by conditional flow matching), and
the CTC ASRs (the judge, the reward ASR) and Token2Text. The LM's SFT and RL are in the script.
Each takes the script's config (cfg) and a TTSData (run; tts/corpora.py).
"""
from dataclasses import asdict

import torch

from nanospeechrl import data
from nanospeechrl.encoder import CTC_CHARS, CTCHead, Encoder, EncoderConfig, ctc_loss
from nanospeechrl.trainer import train_stage
from nanospeechrl.tts.flow import FlowConfig, TokenToMel
from nanospeechrl.tts.speaker import SpeakerEncoder
from nanospeechrl.tts.token2text import Token2Text, Token2TextConfig
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
                                        vocab_size=len(CTC_CHARS) + 1), n_upper=cfg.tok_upper,
                           fsq_dims=cfg.fsq_dims, fsq_levels=cfg.fsq_levels)
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


def train_flow(run, tokens, voices, cfg, device, tokenizer, log, gen, n_codes):
    """Stage flow: conditional flow matching from (tokens, voice) to log-mel. The voice is taken as
    at test time, from another utterance of the speaker (its speaker embedding and a crop for the
    reference encoder): the corpus draws pitch and rate per utterance, so the target's own
    embedding would tell the flow what no test-time reference can (cfg.flow_voice "own": the old way)."""
    torch.manual_seed(cfg.seed)
    frames = torch.cat(run.feats)
    fcfg = FlowConfig(n_codes=n_codes, speaker_dim=voices.shape[1], reference_dim=cfg.flow_ref, d_model=cfg.flow_d,
                      n_layer=cfg.flow_layers, cfg_strength=cfg.cfg_strength, mel_mean=frames.mean().item(),
                      mel_std=frames.std().item())
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
                            vocab_size=len(CTC_CHARS) + 1)
    model = torch.nn.ModuleDict({"encoder": Encoder(enc_cfg), "head": CTCHead(enc_cfg)}).to(device)
    step = ctc_step_fn(lambda f, n: (lambda h, m: (model["head"](h), m))(*model["encoder"](f, n)), run.feats,
                       run.labels, device)
    train_stage(name, model, step, [len(f) for f in run.feats], cfg, device, {"encoder": asdict(enc_cfg)},
                tokenizer, log, gen, steps=steps)


def train_token2text(run, tokens, cfg, device, tokenizer, log, gen, n_codes):
    """Stage reward, part 2: Token2Text on the tokenizer's tokens of real training audio."""
    torch.manual_seed(cfg.seed + 3)
    tcfg = Token2TextConfig(n_codes=n_codes, d_model=cfg.d_model, n_layer=cfg.tok_upper + 2,
                            vocab_size=len(CTC_CHARS) + 1)
    model = Token2Text(tcfg).to(device)

    step = lambda idx: model.ctc_loss([tokens[i] for i in idx], [run.labels[i] for i in idx], device)  # noqa: E731
    train_stage("token2text", model, step, [4 * len(t) for t in tokens], cfg, device, {"token2text": asdict(tcfg)},
                tokenizer, log, gen, steps=cfg.t2t_steps)
