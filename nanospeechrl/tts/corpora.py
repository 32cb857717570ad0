"""
What a train_tts.py run trains and evaluates on.

Built-in (the default): the "tts" corpus of builtin/corpus.py, the asr sentences with less
background noise. Its train split trains every stage; test (held-out voices) and test_seen
(the same sentences, training voices) are the two voice sets the evaluation scores apart.
Other data: a JSONL manifest whose rows have a "speaker", plus --eval sets; eval utterances of
speakers in the training set form the training-voice set, the rest the held-out-voice set.

Each evaluation item comes with two other real clips of its voice: `cond`, which the TTS is
conditioned on, and `ref`, which similarity is measured against (neither is the item itself).
"""
import os
import random
from collections import Counter, defaultdict
from typing import NamedTuple

from nanospeechrl import data
from nanospeechrl.builtin.corpus import CorpusConfig, build_corpus
from nanospeechrl.encoder import EncoderConfig, ctc_labels
from nanospeechrl.rewards import normalize
from nanospeechrl.tts.speaker import label_parts
from nanospeechrl.tts.text_front import spoken

SEEN, UNSEEN = "training voices", "held-out voices"


class TTSData(NamedTuple):
    train: list  # data.Example
    feats: list  # log-mel (T, 80) of train
    labels: list  # CTC character labels of train
    voice_labels: list  # per training utterance, the class index of each voice-label part
    voice_classes: list  # per label part, the sorted class names
    dev: tuple  # (examples, feats): the tokenizer's report
    voice_sets: dict  # {SEEN / UNSEEN: [item dicts: text, feats, cond, ref, audio, speaker]}


def manifests(cfg):
    """-> (train spec, {name: eval spec}, extra reference specs) of the run's data."""
    if cfg.data == "builtin":
        root = build_corpus(CorpusConfig(task="tts", seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test,
                                         n_test_accent=0, n_test_long=0, snr_db=(25.0, 45.0)))
        split = lambda name: os.path.join(root, f"{name}.jsonl")  # noqa: E731
        return split("train"), {"test": split("test"), "test_seen": split("test_seen")}, split("dev")
    evals = {}
    for item in filter(None, cfg.eval.split(",")):
        name, _, spec = item.partition("=")
        if not spec:
            raise SystemExit(f"--eval expects name=path items, got {item!r}")
        evals[name] = spec
    if not evals:
        raise SystemExit("--data other than builtin needs --eval name=manifest with test utterances of known speakers")
    return cfg.data, evals, None


def load_tts_data(cfg):
    train_spec, eval_specs, dev_spec = manifests(cfg)
    cache = os.path.join(os.path.dirname(cfg.out.rstrip("/")) or ".", "feature-cache")
    max_frames = EncoderConfig.max_frames

    def load(spec, skip_empty=False):
        examples, skipped = data.load_examples(spec, cfg.skip_bad, skip_empty=skip_empty)
        feats, examples, bad = data.features(examples, cache, cfg.skip_bad, max_frames)
        bad["no_speech"] = sum(ex.no_speech for ex in examples)  # silence / noise rows: nothing to say
        feats, examples = [f for f, ex in zip(feats, examples) if not ex.no_speech], \
            [ex for ex in examples if not ex.no_speech]
        if skipped or +bad:
            print(f"skipped in {spec}: {dict(skipped + bad)}")
        return examples, feats

    train, feats = load(train_spec, skip_empty=True)
    nameless = [ex.source for ex in train if not ex.speaker]
    if nameless:
        raise data.DataError(f"{nameless[0]}: no 'speaker': TTS trains its speaker encoder on the voice of every "
                             f"training utterance ({len(nameless)} rows lack one)")
    parts = [label_parts(ex.speaker) for ex in train]
    if len({len(p) for p in parts}) > 1:
        raise data.DataError(f"{train_spec}: speaker ids split into different numbers of '+' parts "
                             f"(e.g. {train[0].speaker!r}); use one form for every row")
    classes = [sorted({p[k] for p in parts}) for k in range(len(parts[0]))]
    voice_labels = [[classes[k].index(v) for k, v in enumerate(p)] for p in parts]
    dev = load(dev_spec) if dev_spec else next(iter(load(s) for s in eval_specs.values()))
    evals = [load(spec) for spec in eval_specs.values()]
    seen_voices = {ex.speaker for ex in train}
    pool = defaultdict(list)  # voice -> every real utterance of it we have: where cond and ref come from
    for examples, fs in [(train, feats), dev] + evals:
        for ex, f in zip(examples, fs):
            pool[ex.speaker].append((ex, f))
    rng, voice_sets, short = random.Random(cfg.seed), {SEEN: [], UNSEEN: []}, Counter()
    for examples, fs in evals:
        for ex, f in zip(examples, fs):
            others = [(e, g) for e, g in pool[ex.speaker]
                      if e.audio != ex.audio and normalize(e.text) != normalize(ex.text)]
            if len(others) < 2:
                short[ex.speaker] += 1
                continue
            (_, cond), (_, ref) = rng.sample(others, 2)
            voice_sets[SEEN if ex.speaker in seen_voices else UNSEEN].append(
                dict(text=ex.text, feats=f, cond=cond, ref=ref, audio=ex.audio, speaker=ex.speaker))
    if short:
        print(f"evaluation: {sum(short.values())} items left out: their voice has fewer than 2 other clips")
    print(f"train: {len(train)} utterances, {sum(len(f) for f in feats) / 360000:.2f} h, {len(seen_voices)} voices; "
          + ", ".join(f"{k}: {len(v)} items" for k, v in voice_sets.items()))
    labels = [ctc_labels(normalize(spoken(ex.spoken))) for ex in train]  # "42" -> "forty two", as the LM reads it
    return TTSData(train, feats, labels, voice_labels, classes, dev, voice_sets)


def rl_items(run, n, seed):
    """RL needs no audio: n texts from the built-in grammar that no corpus split contains (after
    normalize), each with its CTC labels and a training voice (the log-mel of a random training
    clip, `cond`)."""
    from nanospeechrl.builtin.grammar import sentence
    used = {normalize(ex.text) for ex in run.train + list(run.dev[0])}
    used |= {normalize(it["text"]) for items in run.voice_sets.values() for it in items}
    rng, items = random.Random(f"{seed}/rl"), []
    for _ in range(100 * n):
        text = sentence(rng)
        if normalize(text) not in used:
            used.add(normalize(text))
            items.append({"text": text, "labels": ctc_labels(normalize(text)),
                          "cond": run.feats[rng.randrange(len(run.feats))]})
            if len(items) == n:
                return items
    raise RuntimeError(f"the grammar gave only {len(items)} new texts for RL")
