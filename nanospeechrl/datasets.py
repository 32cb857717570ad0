"""
Which examples a training run uses: the built-in corpora of its task (built on first use), or a
JSONL manifest / LibriSpeech directory, plus named eval sets (`--eval name=spec,...`).
`cfg` is train_asr.py's TrainConfig (data, task, eval, seed, skip_bad, rl_holdout and the corpus sizes).

`--rl-holdout N` keeps N training utterances out of stages 0-1 for stage 2 (and adds them to
stage 1b's data). The SFT model transcribes its own training utterances almost perfectly
(greedy WER 1.8% on 300 of them vs 14.1% on test, README), so RL on them has little to learn;
on held-out speech it errs as on test. Built-in corpora are built N utterances larger (their
train split is in random order, its first n_train utterances the same whatever N is) and
hold out the extra ones; other data holds out a seeded random N (at most half).
"""
import os
import random
from collections import Counter

from nanospeechrl import data
from nanospeechrl.builtin import TASK_SPLITS, CorpusConfig, build_corpus

TASKS = {"asr": ["asr"], "sqa": ["sqa"], "ast": ["ast"], "mix": ["asr", "sqa", "ast"]}  # --task -> corpora


def load_data(cfg):
    """-> (train examples, RL hold-out examples, {eval name: examples}, skipped Counter)."""
    if cfg.data == "builtin":
        sizes = {"asr": cfg.n_train, "sqa": cfg.n_sqa, "ast": cfg.n_ast}
        train_spec, specs = [], {}
        for task in TASKS[cfg.task]:
            root = build_corpus(CorpusConfig(task=task, seed=cfg.seed, n_train=sizes[task] + cfg.rl_holdout,
                                             n_test=cfg.n_test))
            train_spec.append(os.path.join(root, "train.jsonl"))
            for split in TASK_SPLITS[task][1:]:
                if cfg.task != "mix":
                    specs[split] = os.path.join(root, f"{split}.jsonl")
                elif split in ("test", "test_accent"):  # mix: the test sets only, to keep the run short
                    specs[f"{task}/{split}"] = os.path.join(root, f"{split}.jsonl")
    else:
        train_spec, specs = [cfg.data], {}
    for item in filter(None, cfg.eval.split(",")):
        name, _, spec = item.partition("=")
        if not spec:
            raise SystemExit(f"--eval expects name=path items, got {item!r}")
        specs[name] = spec
    # Empty transcripts in training data are skipped and counted; other bad lines need --skip-bad.
    train, rl, skipped = [], [], Counter()
    for spec in train_spec:
        examples, bad = data.load_examples(spec, skip_bad=cfg.skip_bad, skip_empty=True)
        if cfg.data != "builtin" and cfg.rl_holdout:
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
    return train, rl, evals, skipped
