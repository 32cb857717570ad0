"""
The evaluation's judges of intelligibility: models that never train, select or reward the TTS.

    speech LLM  train_asr.py's stage-1 model (out/asr/stage1 when it exists: the default). The
                project's best recogniser, never trained on TTS output, and unlike the CTC reward
                ASR in architecture. A decoder that knows a sentence would flatter the TTS, so
                `check_unseen` refuses a judge whose training text holds a TTS dev or test text.
    ctc         the TTS run's own CTC ASR (stage judge), trained on real audio only; always there,
                and reported beside the speech LLM.

A judge is a function: a list of log-mel (T, 80) -> transcripts.
"""
import os
import re
from types import SimpleNamespace

from nanospeechrl.checkpoint import read_config
from nanospeechrl.data import load_examples, map_batches
from nanospeechrl.encoder import ctc_greedy_decode, ctc_text
from nanospeechrl.rewards import normalize

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def ctc_transcriber(model_fn, batch_size, device):
    """model_fn(feats, lengths) -> (CTC logits, lengths)  =>  transcribe(feats list) -> greedy texts."""
    def run(b):
        logits, lens = model_fn(b["feats"], b["feat_lens"])
        return [ctc_text(ids) for ids in ctc_greedy_decode(logits.float(), lens)]
    return lambda feats: map_batches(run, feats, batch_size, device)


def ctc_model_transcriber(model, batch_size, device):
    """A CTC ModuleDict {"encoder", "head"} (the judge, the reward ASR) -> transcribe(feats list)."""
    return ctc_transcriber(lambda f, n: (lambda h, m: (model["head"](h), m))(*model["encoder"](f, n)), batch_size,
                           device)


def speech_llm_judge(path, batch_size, device):
    """A train_asr.py speech-LLM checkpoint as the judge (greedy decoding)."""
    from nanospeechrl.asr.evaluate import transcribe_all
    from nanospeechrl.asr.speechlm import load_speechlm
    model, tokenizer = load_speechlm(path, device)
    return lambda feats: transcribe_all(model, tokenizer, feats, device, batch_size, 160)


def is_speech_llm(path):
    return "llm" in read_config(path)


def default_judge(out):
    """The speech LLM of a train_asr.py run beside this one (<out>/../asr/stage1), or "" if none."""
    path = os.path.join(os.path.dirname(os.path.normpath(out)), "asr", "stage1")
    return path if os.path.exists(os.path.join(path, "state.json")) and is_speech_llm(path) else ""


def load_judges(cfg, device):
    """-> [(name, judge)], the one the README reports first: the speech LLM (cfg.judge) when there
    is one, then the run's own CTC judge when trained; a CTC --judge stands in for the latter."""
    from nanospeechrl.tts.synthesis import load_model
    judges, own = [], os.path.join(cfg.out, "judge")
    if cfg.judge and is_speech_llm(cfg.judge):
        judges.append(("speech LLM", speech_llm_judge(cfg.judge, cfg.eval_batch, device)))
    ctc = cfg.judge if cfg.judge and not is_speech_llm(cfg.judge) else own
    if os.path.exists(os.path.join(ctc, "state.json")):
        judges.append(("CTC", ctc_model_transcriber(load_model(ctc).to(device), cfg.eval_batch, device)))
    return judges


def training_texts(path):
    """Every text a train_asr.py checkpoint's run trained on (targets, spoken transcripts and
    prompts; the RL hold-out included): rebuilt from its config, for the built-in corpora
    without rendering any audio."""
    train = SimpleNamespace(**read_config(path)["train"])
    if train.data != "builtin":
        examples, _ = load_examples(train.data, skip_bad=True)
        return [t for ex in examples for t in (ex.text, ex.spoken, ex.prompt) if t]
    from nanospeechrl.asr.corpora import builtin_corpora
    from nanospeechrl.builtin.corpus import _items
    return [item[k] for _, corpus, _ in builtin_corpora(train) for item in _items(corpus)["train"]
            for k in ("text", "transcript", "prompt") if item.get(k)]


def check_unseen(path, texts):
    """Stop if the judge at path trained on any of texts (a sentence of a training row, after
    normalize(), equal to one of them): its decoder would know the answer."""
    if "train" not in read_config(path):  # not a train_asr.py checkpoint: a TTS run's own CTC judge (its train split)
        return
    seen = {normalize(s) for t in training_texts(path) for s in [t, *_SENTENCE_END.split(t)]}
    leaked = sorted({t for t in texts if normalize(t) in seen})
    if leaked:
        raise SystemExit(f"--judge {path}: its training data holds {len(leaked)} of the {len(set(texts))} TTS dev "
                         f"and test texts (e.g. {leaked[0]!r}); a judge that knows the sentence flatters the TTS. "
                         f"Use a train_asr.py run with the same --seed, or --judge ''.")
