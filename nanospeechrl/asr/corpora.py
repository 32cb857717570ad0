"""
What a train_asr.py run trains and evaluates on: the built-in corpora of its task (built on
first use), or a JSONL manifest / LibriSpeech directory, plus named eval sets (`--eval
name=spec,...`); their log-mel features (cached), the run's BPE tokenizer, and each training
utterance's target and prompt ids. `cfg` is train_asr.py's TrainConfig.

`--rl-holdout N` keeps N training utterances out of stages 0-1 for stage 2 (and adds them to
stage 1b's data): the SFT model transcribes its own training utterances almost perfectly
(docs/RESULTS.md), so RL on them has little to learn. Built-in corpora are built N
utterances larger (their train split is in random order, its first n_train utterances the
same whatever N is) and hold out the extra ones; other data holds out a seeded random N
(at most half).
"""
import os
import random
from collections import Counter
from typing import NamedTuple

from nanospeechrl import data, distributed
from nanospeechrl.asr.speechlm import prompt_ids
from nanospeechrl.builtin.corpus import TASK_SPLITS, CorpusConfig, build_corpus, sft_rows
from nanospeechrl.tokenizer import Tokenizer

DEV_ONLY = ("dev_long", "dev_noisy")  # built-in splits evaluated only when --splits names them
N_STOPPING = 200  # dev items per task for SFT's early stopping (a teacher-forced loss: cheap)
SPEECH_TO_TEXT = ("asr", "sqa", "ast")  # the tasks of tokenizer.TASKS that train_asr.py trains
# --task -> the built-in corpora it trains on: one task, or "mix" of all of them
TASK_CORPORA = {**{task: [task] for task in SPEECH_TO_TEXT}, "mix": list(SPEECH_TO_TEXT)}


def builtin_corpora(cfg):
    """The built-in corpora a run of this config trains on: [(task, CorpusConfig, training rows
    before the RL hold-out)]. cfg: a TrainConfig, or anything with its fields (a checkpoint's)."""
    sizes = {"asr": cfg.n_train, "sqa": cfg.n_sqa, "ast": cfg.n_ast}
    out = []
    for task in TASK_CORPORA[cfg.task]:
        n_eval = cfg.n_test if task == "asr" else cfg.n_test_understanding
        corpus = CorpusConfig(task=task, seed=cfg.seed, n_train=sizes[task] + cfg.rl_holdout, n_dev=n_eval,
                              n_test=n_eval, long_frac=cfg.long_frac)
        out.append((task, corpus, sft_rows(corpus, sizes[task])))
    return out


def load_data(cfg):
    """-> (train examples, RL hold-out examples, {eval name: examples}, skipped Counter, dev examples
    for early stopping: the built-in dev splits' first N_STOPPING items per task, else --eval's dev)."""
    if cfg.data == "builtin":
        names = {(task, split): f"{task}/{split}" if cfg.task == "mix" else split
                 for task in TASK_CORPORA[cfg.task] for split in TASK_SPLITS[task][1:]}
        wanted = [name for name in cfg.splits.split(",") if name]
        if set(wanted) - set(names.values()):
            raise SystemExit(f"--splits {cfg.splits!r}: no built-in split {', '.join(set(wanted) - set(names.values()))}"
                             f"; choose from {', '.join(names.values())}")
        train_spec, specs, stopping = [], {}, []
        for task, corpus, n_sft in builtin_corpora(cfg):
            root = build_corpus(corpus)
            stopping += data.load_examples(os.path.join(root, "dev.jsonl"))[0][:N_STOPPING]
            train_spec.append((os.path.join(root, "train.jsonl"), n_sft))
            for split in TASK_SPLITS[task][1:]:
                # mix: tests only, to keep it short; dev_long / dev_noisy (choosing RL settings) on request
                default = (cfg.task != "mix" or split in ("test", "test_accent")) and split not in DEV_ONLY
                if (names[task, split] in wanted) if wanted else default:
                    specs[names[task, split]] = os.path.join(root, f"{split}.jsonl")
    else:
        train_spec, specs, stopping = [(cfg.data, None)], {}, None
    for item in filter(None, cfg.eval.split(",")):
        name, _, spec = item.partition("=")
        if not spec:
            raise SystemExit(f"--eval expects name=path items, got {item!r}")
        specs[name] = spec
    # Empty transcripts in training data are skipped and counted; other bad lines need --skip-bad.
    train, rl, skipped = [], [], Counter()
    for spec, n in train_spec:  # n: the built-in corpus's rows before its hold-out, else None
        examples, bad = data.load_examples(spec, skip_bad=cfg.skip_bad, skip_empty=True)
        if n is None:
            if cfg.rl_holdout:
                random.Random(cfg.seed).shuffle(examples)
            n = len(examples) - min(cfg.rl_holdout, len(examples) // 2)  # never more than half
        train, rl = train + examples[:n], rl + examples[n:]
        skipped.update(bad)
    evals = {}
    for name, spec in specs.items():
        evals[name], eval_skipped = data.load_examples(spec, skip_bad=cfg.skip_bad)
        if eval_skipped:
            print(f"skipped in eval set {name}: {dict(eval_skipped)}")
    if not evals:  # no eval set given: hold out a slice of the training data
        random.Random(cfg.seed).shuffle(train)
        n = max(1, min(200, len(train) // 50))
        evals, train = {"heldout": train[:n]}, train[n:]
    if stopping is None:
        stopping = evals.get("dev", evals.get("heldout", []))
    return train, rl, evals, skipped, stopping


class RunData(NamedTuple):
    train: list  # data.Example: stages 0-1 train on these
    held_out: list  # --rl-holdout: stage 2 learns on these, stage 1b trains on train + them
    feats: list  # log-mel (T, 80) of train + held_out, in that order
    targets: list  # target ids + EOS of train + held_out
    prompts: list  # prompt ids ([<task>] + prompt tokens) of train + held_out
    evals: dict  # {split: (examples, feats)}
    dev: tuple  # (examples, feats, prompts, targets): SFT's early stopping (empty lists: none)


def load_run_data(cfg, max_frames):
    """-> (the run's Tokenizer, RunData): examples and log-mel features (cached beside --out) of
    the training, RL hold-out and eval sets, and every training utterance's target and prompt ids."""
    train, held_out, evals, skipped, stopping = load_data(cfg)
    cache = os.path.join(os.path.dirname(cfg.out.rstrip("/")) or ".", "feature-cache")
    feats, train, bad = data.features(train, cache, cfg.skip_bad, max_frames)
    skipped.update(bad)
    held_feats, held_out, bad = data.features(held_out, cache, cfg.skip_bad, max_frames)
    skipped.update(bad)
    for name, examples in evals.items():  # ASR audio of any length is transcribed in windows
        longest = None if all(ex.task == "asr" for ex in examples) else max_frames
        eval_feats, kept, eval_skipped = data.features(examples, cache, cfg.skip_bad, longest)
        if eval_skipped:
            print(f"skipped in eval set {name}: {dict(eval_skipped)}")
        evals[name] = (kept, eval_feats)
    if skipped:
        print(f"skipped training examples: {dict(skipped)}")
    print(f"train: {len(train)} utterances, {sum(len(f) for f in feats) / 360000:.2f} h; RL hold-out: "
          f"{len(held_out)}; " + ", ".join(f"{k}: {len(v[0])}" for k, v in evals.items()))
    tokenizer = run_tokenizer(cfg, train)
    for name, examples in [("train", train)] + [(k, v[0]) for k, v in evals.items()]:
        n_cut = sum(prompt_ids(tokenizer, ex, cfg.max_prompt_tokens)[1] for ex in examples)
        if n_cut:
            print(f"warning: {n_cut} prompts in {name} are longer than --max-prompt-tokens "
                  f"{cfg.max_prompt_tokens} and were truncated")
    dev_feats, stopping, _ = data.features(stopping, cache, True, max_frames)
    everything = train + held_out

    def ids(examples):  # -> (prompt ids, target ids + EOS) of each example
        return ([prompt_ids(tokenizer, ex, cfg.max_prompt_tokens)[0] for ex in examples],
                [tokenizer.encode(ex.text) + [tokenizer.eos_id] for ex in examples])

    prompts, targets = ids(everything)
    return tokenizer, RunData(train, held_out, feats + held_feats, targets, prompts, evals,
                              (stopping, dev_feats, *ids(stopping)))


def run_tokenizer(cfg, train):
    """The run's tokenizer: <out>/tokenizer.json when resuming (or when stages 0-1 do not run), else
    the --llm-init checkpoint's (our special tokens added), else a BPE trained on the training text."""
    path = os.path.join(cfg.out, "tokenizer.json")
    if os.path.exists(path) and (cfg.resume or not {"0", "1"} & set(cfg.stages.split(",")) or
                                 not distributed.is_main()):  # torchrun: rank 0's
        return Tokenizer.load(path)
    if cfg.llm_init:  # a pretrained decoder comes with its tokenizer
        tokenizer = Tokenizer.from_pretrained(cfg.llm_init)
        tokenizer.save(path)
        return tokenizer
    tokenizer = Tokenizer.train([ex.text for ex in train] + [ex.prompt for ex in train if ex.prompt],
                                vocab_size=cfg.vocab_size)
    tokenizer.save(path)
    return tokenizer
