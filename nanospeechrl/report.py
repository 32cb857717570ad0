"""
The report card a run ends with: <out>/report.md, read off <out>/metrics.jsonl (as nanochat
writes one). The machine (CPU model and instruction set, or GPU), the commit, the command, the
wall time per stage, and the evaluation's tables with their paired-bootstrap intervals, so a
number in the README can be checked against the run that made it.

    write_report(out, "train_asr.py")          # after the evaluation
"""
import json
import os
import platform
import subprocess
import sys
import time

import torch

ISA = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what decides CPU speed and bf16 here


def machine():
    """One line: the GPU if one is used, else the CPU model, its cores and instruction set."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()} ({torch.cuda.device_count()} visible)"
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:  # not Linux
        pass
    isa = ", ".join(x for x in ISA if x in flags) or "none of " + ", ".join(ISA)
    return f"CPU {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; {isa}"


def commit():
    """The git commit of the code that ran (+ "dirty" with uncommitted changes), or "unknown"."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + (" + uncommitted changes" if dirty else "")) or "unknown"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]


def _pct(x):
    return "" if x is None else f"{100 * x:.1f}%"


def _interval(row, key):
    """'+1.2 [-0.3, +2.7]' (points) from a row's key, key/low, key/high, or ''."""
    if row.get(key) is None:
        return ""
    return f"{100 * row[key]:+.1f} [{100 * row[key + '/low']:+.1f}, {100 * row[key + '/high']:+.1f}]"


def stage_times(rows):
    """{stage: seconds}: each training stage's own clock (its last 'time'), in the order run."""
    out = {}
    for r in rows:  # the last row of a stage: a resumed stage's clock goes on, a re-run one starts again
        if "time" in r and r.get("stage") not in ("eval", "compare", "seeds") and "step" in r:
            out[r["stage"]] = r["time"]
    return out


def latest(rows, stage):
    """The rows of one kind, the last of each (model, split) kept: a later evaluation replaces an earlier."""
    keep = {}
    for r in rows:
        if r.get("stage") == stage:
            keep[r.get("model", r.get("method")), r["split"]] = r
    return list(keep.values())


def asr_tables(rows):
    """train_asr.py's evaluation: WER (or BLEU) per model and split, and each comparison."""
    evals, compare = latest(rows, "eval"), {(r["model"], r["split"]): r for r in latest(rows, "compare")}
    out = []
    for split in dict.fromkeys(r["split"] for r in evals):
        body = []
        for r in (x for x in evals if x["split"] == split):
            c = compare.get((r["model"], split))
            k = 100 if "wer" in r else 1  # WER in points, BLEU as it is
            d = None if c is None else c.get("wer_diff", c.get("bleu_diff"))
            diff = "" if c is None else f"{k * d:+.1f} [{k * c['low']:+.1f}, {k * c['high']:+.1f}] vs {c['base']}"
            score = f"BLEU {r['bleu']:.1f}, chrF {r['chrf']:.1f}" if "bleu" in r else \
                f"WER {_pct(r.get('wer'))}, ins {r.get('ins')}, loops {r.get('loops')}"
            body.append((r["model"], score, r.get("n"), diff))
        out += [f"### {split}", ""] + _table(("model", "score", "n", "difference, 95% interval"), body) + [""]
    return out + seeds_table(rows)


def seeds_table(rows):
    """The means over replicates (--seeds) of each method, with their intervals to the baseline and to SFT."""
    seeds = latest(rows, "seeds")
    if not seeds:
        return []

    def mean(r):  # a WER or CER (fraction) or a BLEU, with its spread over the seeds
        key = next(k for k in ("wer", "cer", "bleu") if k in r)
        k = 1 if key == "bleu" else 100
        return k, f"{key.upper()} {k * r[key]:.1f} ± {k * r[key + '_sd']:.1f}"

    def diff(r, pre=""):
        k = mean(r)[0]
        return "" if f"{pre}diff" not in r else \
            f"{k * r[pre + 'diff']:+.1f} [{k * r[pre + 'low']:+.1f}, {k * r[pre + 'high']:+.1f}] vs {r[pre + 'base']}"

    body = [(r["split"], r["method"], r["seeds"], mean(r)[1], diff(r), diff(r, "sft_")) for r in seeds]
    return ["### seeds (means over replicates)", ""] + \
        _table(("split", "method", "seeds", "mean", "difference, 95% interval", "to SFT"), body) + [""]


def tts_tables(rows):
    """train_tts.py's evaluation: per voice set, every row's judge WER / CER, the other judge's CER
    (where one scored), similarity, duration, the reward models' CER, CER against (a) and the control."""
    evals, out = latest(rows, "eval"), []
    for split in dict.fromkeys(r["split"] for r in evals):
        body = []
        for r in (x for x in evals if x["split"] == split):
            other = next((k for k in r if k.endswith("/cer") and not k.startswith("cer_diff")), None)
            control = next((k for k in r if k.startswith("cer_diff/") and k.count("/") == 1 and k != "cer_diff/(a)"),
                           None)
            body.append((r["model"], _pct(r["wer"]), _pct(r["cer"]), _pct(r.get(other)) if other else "",
                         f"{r['similarity']:.3f}", f"{r['duration_ratio']:.2f}", _pct(r.get("reward_asr_cer")),
                         _pct(r.get("token2text_cer")), _interval(r, "cer_diff/(a)"),
                         _interval(r, control) if control else ""))
        judge = next((r.get("judge") for r in evals if r["split"] == split), "judge")
        head = ("row", "WER", "CER", "other judge CER", "similarity", "duration", "reward ASR CER", "Token2Text CER",
                "CER - (a)", "CER - control")
        if not any(row[3] for row in body):  # one judge (no --ctc-judge): no empty column
            head, body = [h for i, h in enumerate(head) if i != 3], [row[:3] + row[4:] for row in body]
        out += [f"### {split} (judge: {judge})", ""] + _table(head, body) + [""]
    return out + seeds_table(rows)


def write_report(out, script, started=None):
    """Write <out>/report.md from <out>/metrics.jsonl. -> its path."""
    path = os.path.join(out, "metrics.jsonl")
    rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
    lines = [f"# {script} report card", "",
             f"- written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, commit {commit()}",
             f"- machine: {machine()}; torch {torch.__version__}",
             f"- this command: `python {' '.join([script, *sys.argv[1:]])}`" +
             (f", {time.time() - started:.0f} s" if started else "")]
    runs = [r for r in rows if r.get("stage") == "run"]
    if len(runs) > 1:  # --out holds the work of several commands: the tables below are their latest rows
        lines += ["", "Commands that wrote to this directory, oldest first:", ""]
        lines += [f"- {time.strftime('%Y-%m-%d %H:%M', time.gmtime(r['started']))} UTC: `python "
                  f"{os.path.basename(r['command'].split()[0])} {' '.join(r['command'].split()[1:])}`" for r in runs]
    lines += ["", "## Wall time per stage (its own clock, setup excluded)", ""]
    lines += _table(("stage", "seconds"), [(k, f"{v:.0f}") for k, v in stage_times(rows).items()])
    stops = [r for r in rows if "stopped" in r]
    if stops:
        lines += ["", "## Early stopping", ""] + [f"- {r['stage']}: {r['stopped']} (weights of step {r['best_step']})"
                                                  for r in stops]
    lines += ["", "## Results", ""] + (tts_tables(rows) if script == "train_tts.py" else asr_tables(rows))
    report = os.path.join(out, "report.md")
    with open(report + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(report + ".tmp", report)
    return report
