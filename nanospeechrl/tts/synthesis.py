"""
Text + a voice -> speech: the trained TTS pieces put together, and loading them from a run.

    tts = load_tts("out/tts/lm")                       # the LM checkpoint; flow and speaker beside it
    voice = tts.voice([load_reference("ref.wav")])     # (1, dim) the voice of a reference clip
    mels, capped = tts.synthesize(["Hello there."], voice)
    wav = vocode(mels[0])                              # Griffin-Lim: what a person hears

The text is read through the front end first (tts/text_front.py: digits, times, dates, money and
abbreviations become words; text it cannot say is refused). The LM samples speech tokens
(temperature 1 by default, as it was trained to be sampled), the flow model turns them into
log-mel conditioned on the voice, Griffin-Lim into a waveform. A text too long for the LM's
context is split into sentences, each spoken on its own.
"""
import math
import re
from pathlib import Path

import torch

from nanospeechrl.audio import SAMPLE_RATE, AudioError, griffin_lim, load, log_mel, mel_to_linear
from nanospeechrl.checkpoint import load_checkpoint, read_config
from nanospeechrl.data import collate, pad_ids
from nanospeechrl.llm import LLMConfig
from nanospeechrl.rewards import normalize
from nanospeechrl.tokenizer import Tokenizer
from nanospeechrl.tts.flow import FOLD, FlowConfig, TokenToMel
from nanospeechrl.tts.speaker import SpeakerConfig, SpeakerEncoder
from nanospeechrl.tts.text_front import speakable
from nanospeechrl.tts.token_lm import TokenLM, length_caps, sample_tokens, speech_tokens

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_REFERENCE_SECONDS = 0.5  # the voice encoders pool over time: a shorter clip shows too little of the voice
SILENCE_DBFS = -50.0  # a reference clip whose loudest sample is quieter than this holds no voice


class TTS:
    def __init__(self, lm, flow, speaker, tokenizer, max_ratio):
        self.lm, self.flow, self.speaker, self.tokenizer, self.max_ratio = lm, flow, speaker, tokenizer, max_ratio

    @property
    def device(self):
        return self.lm.wte.weight.device

    def to(self, device):
        for m in (self.lm, self.flow, self.speaker):
            m.to(device)
        return self

    @torch.no_grad()
    def voice(self, feats):
        """Reference clips' log-mel, a list of (T, 80) -> the flow's voice condition (B, dim): the
        speaker embedding and the flow's own reference encoding of each clip."""
        b = collate(feats)
        f, n = b["feats"].to(self.device), b["feat_lens"].to(self.device)
        return self.flow.voice(self.speaker(f, n), f, n)

    def pieces(self, text):
        """A text -> the texts it is spoken as, read through the front end ("Dr. Smith paid $5." ->
        "Doctor Smith paid five dollars."): the whole, or its sentences when it is too long for the
        LM. A ValueError (one line) when it has no words, holds characters the model cannot say, or
        has a sentence too long to fit."""
        text = speakable(text)  # before splitting: "Dr." must not end a sentence
        budget = self.lm.config.max_seq_len

        def fits(t):
            prompt = self.lm.prompt(self.tokenizer, t)
            return len(prompt) + length_caps([prompt], self.max_ratio)[0] <= budget

        if fits(text):
            return [text]
        sentences = [s for s in _SENTENCE_END.split(text.strip()) if normalize(s)]
        too_long = [s for s in sentences if not fits(s)]
        if too_long:
            raise ValueError(f"the sentence {too_long[0][:60]!r}... is too long for this model's context "
                             f"({budget} tokens with its speech): split it into shorter sentences")
        return sentences

    @torch.no_grad()
    def tokens(self, texts, temperature=1.0, top_k=0, top_p=1.0, generator=None):
        """Texts (each fitting the LM) -> (speech-token lists, capped (N,) bool). The front end is
        applied in the prompt (token_lm.prompt_ids), so "42" is read as "forty two" here too."""
        prompts = [self.lm.prompt(self.tokenizer, t) for t in texts]
        rollout, capped = sample_tokens(self.lm, prompts, self.max_ratio, temperature=temperature, top_k=top_k,
                                        top_p=top_p, generator=generator)
        return speech_tokens(rollout, self.lm.eos_id), capped

    @torch.no_grad()
    def mels(self, tokens, voices, steps=10, generator=None, cfg_strength=None):
        """Speech-token lists + voices (B, dim; voice()) -> a list of log-mel (FOLD * repeat * n_i, 80);
        cfg_strength: the flow's guidance (None: its config's)."""
        ids, lengths = pad_ids(tokens, self.device)
        mel = self.flow.sample(ids, lengths, voices, steps, cfg_strength, generator=generator)
        k = FOLD * self.flow.config.repeat  # mel frames per speech token
        return [m[:k * n] for m, n in zip(mel.float(), lengths.tolist())]

    def synthesize(self, texts, voices, steps=10, generator=None, **sampling):
        """Texts + one voice per text (B, dim; voice()) -> (log-mel list, capped list of bool)."""
        mels, capped = [], []
        for text, voice in zip(texts, voices):
            parts = self.pieces(text)
            tokens, cut = self.tokens(parts, generator=generator, **sampling)
            pieces = self.mels(tokens, voice[None].expand(len(parts), -1), steps, generator)
            mels.append(torch.cat(pieces))
            capped.append(bool(cut.any()))
        return mels, capped


def load_reference(path):
    """A reference clip of the voice to speak in -> its log-mel (T, 80); an AudioError (a ValueError
    whose message starts with the path) when it cannot be read, is too short, or is silence."""
    wav = load(path)
    seconds = len(wav) / SAMPLE_RATE
    if seconds < MIN_REFERENCE_SECONDS:
        raise AudioError(f"{path}: {seconds:.2f} s is too short for a reference clip: it needs at least "
                         f"{MIN_REFERENCE_SECONDS} s of the voice speaking")
    peak = wav.abs().max().item()
    if peak < 10 ** (SILENCE_DBFS / 20):
        level = f"{20 * math.log10(peak):.0f} dBFS" if peak > 0 else "all zeros"
        raise AudioError(f"{path}: the reference clip is silence (peak {level}, below {SILENCE_DBFS:.0f} dBFS): "
                         f"it must hold the voice speaking")
    return log_mel(wav)


def vocode(mel, n_iter=32, generator=None, peak=0.9):
    """Log-mel (T, 80) -> waveform (by Griffin-Lim, on the CPU), scaled down to `peak` if louder:
    a 16-bit file would clip it, and the log-mel of the result does not depend on the level."""
    wav = griffin_lim(mel_to_linear(mel.float().cpu()), n_iter=n_iter, generator=generator)
    return wav * min(1.0, peak / (wav.abs().max().item() + 1e-9))


def build_model(config):
    """A TTS run's checkpoint config -> its (untrained) module, by what the config holds."""
    from nanospeechrl.encoder import CTCHead, Encoder, EncoderConfig
    from nanospeechrl.tts.token2text import Token2Text, Token2TextConfig
    from nanospeechrl.tts.tokens import SpeechTokenizer, TokenizerConfig
    if "tokenizer" in config:
        return SpeechTokenizer(TokenizerConfig(**config["tokenizer"]))
    if "speaker" in config:
        return SpeakerEncoder(SpeakerConfig(**{**config["speaker"], "classes": tuple(config["speaker"]["classes"])}))
    if "flow" in config:
        return TokenToMel(FlowConfig(**config["flow"]))
    if "token2text" in config:
        return Token2Text(Token2TextConfig(**config["token2text"]))
    if "token_lm" in config:
        return TokenLM(LLMConfig(**config["llm"]), config["token_lm"]["n_codes"])
    if "encoder" in config and "llm" not in config:  # a CTC model: the judge, the reward ASR, train_asr's stage0
        enc = EncoderConfig(**config["encoder"])
        return torch.nn.ModuleDict({"encoder": Encoder(enc), "head": CTCHead(enc)})
    raise ValueError(f"not a checkpoint of a TTS run's model (config keys: {sorted(config)})")


def load_model(path, map_location="cpu"):
    """A finished stage's checkpoint -> its module with the trained weights, in eval mode."""
    model = build_model(read_config(path))
    load_checkpoint(path, model, map_location=map_location)
    return model.eval()


def load_tts(path, map_location="cpu"):
    """A text-to-token LM checkpoint (<run>/lm or an RL stage after it) -> TTS, in eval mode. The
    flow model and speaker encoder come from the run directory (config.json names them)."""
    try:
        config = read_config(path)
    except FileNotFoundError as e:  # no directory, or one without a checkpoint in it
        raise ValueError(f"{path}: not a TTS checkpoint ({e}); synthesize needs <tts run>/lm or a TTS RL "
                         f"stage, e.g. out/tts/lm") from e
    if "token_lm" not in config:
        raise ValueError(f"{path}: not a TTS checkpoint (no 'token_lm' in config.json); synthesize needs "
                         f"<tts run>/lm or a TTS RL stage, e.g. out/tts/lm")
    run = Path(path).parent
    lm = TokenLM(LLMConfig(**config["llm"]), config["token_lm"]["n_codes"])
    tokenizer = Tokenizer.load(load_checkpoint(path, lm, map_location=map_location)["dir"])
    flow = load_model(run / config["token_lm"]["flow"], map_location)
    speaker = load_model(run / config["token_lm"]["speaker"], map_location)
    return TTS(lm.eval(), flow, speaker, tokenizer, config["token_lm"]["max_ratio"])
