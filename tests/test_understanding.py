"""Spoken QA and speech translation plumbing: manifests with task/prompt/transcript, per-task
rewards, BLEU/chrF/exact-match scoring and its bootstrap, prompt truncation, the built-in task
corpora, and train_asr.py end to end on sqa/ast rows (SFT, GRPO, mixed-policy GRPO)."""
import json
import os
import random

import pytest
import sacrebleu

from asr_helpers import TINY, load_train_asr, read_metrics, train_asr
from nanospeechrl import audio, rewards
from nanospeechrl.builtin.corpus import CorpusConfig, build_corpus
from nanospeechrl.data import Example, read_manifest, write_manifest
from nanospeechrl.metrics import (bleu_stats, bootstrap_bleu_diff, bootstrap_wer_diff, corpus_bleu_from, error_counts,
                                  text_scores)
from nanospeechrl.asr.speechlm import prompt_ids
from nanospeechrl.builtin.synth import synthesize
from nanospeechrl.tokenizer import Tokenizer


def test_transcript_round_trip_and_spoken(tmp_path):
    audio.save(tmp_path / "a.wav", synthesize("hello", rate=220))
    exs = [Example(str(tmp_path / "a.wav"), "Anna lives in Rome.", "sqa", "Where does Anna live?",
                   transcript="Anna lives in Rome. Tom is old."),
           Example(str(tmp_path / "a.wav"), "Hola.", "ast"), Example(str(tmp_path / "a.wav"), "hello")]
    write_manifest(tmp_path / "m.jsonl", exs)
    back, _ = read_manifest(tmp_path / "m.jsonl")
    assert [(e.task, e.prompt, e.transcript) for e in back] == [(e.task, e.prompt, e.transcript) for e in exs]
    assert [e.spoken for e in back] == ["Anna lives in Rome. Tom is old.", "", "hello"]  # ast: words unknown


def test_score_tasks_uses_each_tasks_rewards():
    weights = {"asr": {"wer": 1.0}, "sqa": {"bleu": 2.0}}
    hyps = ["a b c", "anna lives in rome", "x y"]
    refs = ["a b d", "anna lives in rome", "a b"]
    total, parts = rewards.score_tasks(weights, hyps, refs, ["asr", "sqa", "asr"])
    assert total == pytest.approx([1 - 1 / 3, 2.0, 0.0])
    assert parts["wer"][1] is None and parts["bleu"][0] is None and parts["bleu"][1] == pytest.approx(1.0)


def test_text_scores_and_bleu_stats_match_sacrebleu():
    rng = random.Random(0)
    words = "el la coche casa roja rojo grande es y no".split()
    refs = [" ".join(rng.choices(words, k=rng.randint(3, 8))) for _ in range(40)]
    hyps = [" ".join(w if rng.random() < 0.7 else rng.choice(words) for w in r.split()) for r in refs]
    r = text_scores(refs, hyps)
    assert r["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert r["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert r["exact"] == sum(h == x for h, x in zip(hyps, refs)) / 40
    stats = bleu_stats(refs, hyps)
    for _ in range(5):  # a resample's BLEU from summed statistics == rescoring that resample (the naive twin)
        idx = [rng.randrange(40) for _ in range(40)]
        naive = sacrebleu.corpus_bleu([hyps[i] for i in idx], [[refs[i] for i in idx]]).score
        assert corpus_bleu_from(stats, idx) == pytest.approx(naive)
    d, lo, hi = bootstrap_bleu_diff(refs, hyps, refs, n_resamples=200)
    assert d == pytest.approx(100 - r["bleu"]) and 0 < lo <= d <= hi
    assert bootstrap_bleu_diff(refs, hyps, hyps, n_resamples=50) == (0.0, 0.0, 0.0)
    # seeds: lists of systems compare their mean scores
    other = [" ".join(w if rng.random() < 0.8 else rng.choice(words) for w in r.split()) for r in refs]
    d2, lo2, hi2 = bootstrap_bleu_diff(refs, [hyps, hyps], [refs, other], n_resamples=200)
    assert d2 == pytest.approx((100 + text_scores(refs, other)["bleu"]) / 2 - r["bleu"]) and lo2 <= d2 <= hi2
    w, _, _ = bootstrap_wer_diff(refs, [hyps, refs], [refs, refs], n_resamples=50)
    assert w == pytest.approx(-error_counts(refs, hyps)["wer"] / 2)


def test_prompt_ids_truncates_and_says_so():
    tok = Tokenizer.train(["where does anna live", "how many cups did tom buy"], vocab_size=300)
    ex = Example("a.wav", "Anna lives in Rome.", "sqa", "Where does Anna live?")
    ids, cut = prompt_ids(tok, ex, 64)
    assert ids[0] == tok.task_id("sqa") and tok.decode(ids[1:]) == "Where does Anna live?" and not cut
    short, cut = prompt_ids(tok, ex, 3)
    assert short == ids[:3] and cut


@pytest.mark.parametrize("task", ["sqa", "ast"])
def test_builtin_task_corpus(tmp_path, task):
    cfg = CorpusConfig(task=task, n_train=3, n_dev=1, n_test=2, n_test_accent=1)
    root = build_corpus(cfg, root=str(tmp_path), processes=2, verbose=False)
    assert sorted(f for f in os.listdir(root) if f.endswith(".jsonl")) == \
        ["dev.jsonl", "test.jsonl", "test_accent.jsonl", "train.jsonl"]  # no test_long outside asr
    exs, _ = read_manifest(os.path.join(root, "train.jsonl"))
    assert len(exs) == 3 and all(e.task == task and e.transcript and e.text != e.transcript for e in exs)
    assert all(bool(e.prompt) == (task == "sqa") for e in exs)
    assert all(e.duration > 1.0 for e in exs)


# ----------------------------------------------------------------------------- train_asr.py --task

SQA = [("Anna lives in Rome. Tom has two cups.", "Where does Anna live?", "Anna lives in Rome."),
       ("Tom has two cups. Anna lives in Oslo.", "How many cups does Tom have?", "Tom has two cups."),
       ("Lucy met Sam at noon. Tom is ten.", "Who did Lucy meet?", "Lucy met Sam.")]
AST = [("The red car is big.", "El coche rojo es grande."), ("We washed the cups.", "Lavamos las tazas.")]


@pytest.fixture(scope="module")
def task_corpus(tmp_path_factory):
    """sqa, ast and asr rows in one train manifest; an sqa and an ast eval manifest."""
    root = tmp_path_factory.mktemp("tasks")
    rows = []
    for i, (passage, q, a) in enumerate(SQA):
        audio.save(root / f"q{i}.wav", synthesize(passage, rate=260))
        rows.append({"audio": f"q{i}.wav", "text": a, "task": "sqa", "prompt": q, "transcript": passage})
    for i, (en, es) in enumerate(AST):
        audio.save(root / f"t{i}.wav", synthesize(en, rate=260))
        rows.append({"audio": f"t{i}.wav", "text": es, "task": "ast", "transcript": en})
    audio.save(root / "a0.wav", synthesize("one two three", rate=260))
    rows.append({"audio": "a0.wav", "text": "one two three"})
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "sqa.jsonl").write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    (root / "ast.jsonl").write_text("\n".join(lines[3:5]) + "\n", encoding="utf-8")
    return root


def test_train_asr_sqa_ast_grpo_and_mixed_policy(task_corpus):
    out = task_corpus / "out"
    args = ["--data", task_corpus / "train.jsonl", "--eval", f"sqa={task_corpus / 'sqa.jsonl'},"
            f"ast={task_corpus / 'ast.jsonl'}", *TINY, "--out", out, "--max-prompt-tokens", "4"]
    r = train_asr(*args, "--no-evaluate", cwd=task_corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning: 3 prompts in train are longer than --max-prompt-tokens 4" in r.stdout
    rows = [x for x in read_metrics(out) if x.get("stage") == "stage2"]
    assert rows and all("rewards/bleu" in x for x in rows)  # the default reward of sqa and ast rows
    r = train_asr(*args, "--stages", "2", "--off-policy", "reference", cwd=task_corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "stage2-mixed" / "state.json").read_text())["done"]
    evals = [x for x in read_metrics(out) if x.get("stage") == "eval"]
    assert {(x["model"], x["split"]) for x in evals} == {(m, s) for m in ("sft", "grpo", "grpo-mixed")
                                                         for s in ("sqa", "ast")}
    assert all({"bleu", "chrf", "exact"} <= set(x) for x in evals)
    compare = [x for x in read_metrics(out) if x.get("stage") == "compare"]
    assert len(compare) == 4 and all(x["low"] <= x["bleu_diff"] <= x["high"] for x in compare)
    assert "BLEU(grpo-mixed) - BLEU(sft)" in r.stdout and "exact" in r.stdout


def test_seeds_replicate_stage_2_and_its_control_and_summarise(task_corpus):
    """--seeds 2 --stages 2,1b: two GRPO runs and two equal-time controls from one SFT model;
    the evaluation prints each method's mean over seeds with a paired interval to the control."""
    out = task_corpus / "seeds"
    args = ["--data", task_corpus / "train.jsonl", "--eval", f"sqa={task_corpus / 'sqa.jsonl'}", *TINY, "--out", out]
    r = train_asr(*args, "--stages", "0,1", "--no-evaluate", cwd=task_corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    r = train_asr(*args, "--stages", "2,1b", "--seeds", "2", "--temperature", "3", cwd=task_corpus)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {d for d in os.listdir(out) if d.startswith("stage")} == \
        {"stage0", "stage1", "stage2", "stage2-seed1", "stage1b", "stage1b-seed1"}
    rows = read_metrics(out)
    rollouts = [[(x["entropy"], x["completions/mean_length"]) for x in rows if x.get("stage") == name]
                for name in ("stage2", "stage2-seed1")]
    assert len(rollouts[0]) == len(rollouts[1]) == 2 and rollouts[0] != rollouts[1]  # different rollout seeds
    assert {x["model"] for x in rows if x.get("stage") == "eval"} == {"sft+", "sft", "grpo", "sft+@1", "grpo@1"}
    seeds = {x["method"]: x for x in rows if x.get("stage") == "seeds"}
    assert seeds["grpo"]["seeds"] == seeds["sft+"]["seeds"] == 2 and seeds["sft"]["seeds"] == 1
    assert seeds["grpo"]["low"] <= seeds["grpo"]["diff"] <= seeds["grpo"]["high"] and "diff" not in seeds["sft+"]
    assert "(2 seeds)  mean - mean(sft+)" in r.stdout


def test_reward_flag_for_all_tasks_or_per_task():
    train_asr_module = load_train_asr()
    rewards_of = lambda *argv: train_asr_module.task_rewards(train_asr_module.parse_args(["--stages", "0", *argv])[0])
    assert rewards_of()["sqa"] == {"bleu": 1.0} and rewards_of()["asr"] == {"wer": 1.0, "hallucination": 1.0}
    assert rewards_of("--reward", "chrf")["asr"] == {"chrf": 1.0}
    per_task = rewards_of("--reward", "sqa=chrf:1,keyword:0.5;ast=bleu:2")
    assert per_task == {"asr": {"wer": 1.0, "hallucination": 1.0}, "sqa": {"chrf": 1.0, "keyword": 0.5},
                        "ast": {"bleu": 2.0}}
    with pytest.raises(ValueError, match="unknown task 'qa'"):
        rewards_of("--reward", "qa=chrf")


def test_unknown_task_flag_fails_at_start_up(task_corpus):
    r = train_asr("--task", "sing", "--out", task_corpus / "nope", cwd=task_corpus)
    assert r.returncode == 2 and "unknown task 'sing'" in r.stderr and "mix" in r.stderr
