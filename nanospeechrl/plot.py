"""
Training curves from a run's metrics.jsonl, as one PNG.

    python -m nanospeechrl.plot out/asr            # -> out/asr/training.png
    python -m nanospeechrl.plot out/asr -o run.png
    python -m nanospeechrl.plot out/a out/b -o both.png   # several runs' metrics, one figure
    python -m nanospeechrl.plot out/a out/b --only judge_cer,kl   # just these panels

Panels: the loss of every supervised stage against its step, and its dev loss where early
stopping measured one; for every RL stage (rows with a reward) the mean reward, reward_std,
KL to the reference, rollout entropy, mean completion length and, where
logged (train_tts.py --rl-eval-every), the judge's CER; and the evaluation of every model on
every split (WER, or BLEU for QA and translation). A stage logged
twice at one step (a resumed or repeated run) keeps its last value. Lines that are not JSON
objects (a run killed mid-write) are skipped, each named on stderr.
"""
import argparse
import json
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

RL_PANELS = [("reward", "mean reward"), ("reward_std", "reward std within a group"), ("kl", "KL to the reference"),
             ("entropy", "rollout entropy (nats/token)"), ("completions/mean_length", "completion length (tokens)"),
             ("judge_cer", "judge CER on dev texts")]


def read_metrics(path):
    """metrics.jsonl -> list of row dicts; unusable lines are reported on stderr and skipped."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path}: no such file (a training run writes it to its --out directory)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"warning: {path}:{lineno}: not JSON ({e.msg}); skipped", file=sys.stderr)
                continue
            if not isinstance(row, dict) or not isinstance(row.get("stage"), str):
                print(f"warning: {path}:{lineno}: not a metrics row (no 'stage'); skipped", file=sys.stderr)
                continue
            rows.append(row)
    if not rows:
        raise SystemExit(f"error: {path}: no metrics rows to plot")
    return rows


def curves(rows, key):
    """{stage: (steps, values)} of `key` over the rows that have it and a step, last value per step."""
    by_stage = defaultdict(dict)
    for row in rows:
        if isinstance(row.get(key), (int, float)) and isinstance(row.get("step"), int):
            by_stage[row["stage"]][row["step"]] = row[key]
    return {stage: (sorted(v), [v[s] for s in sorted(v)]) for stage, v in by_stage.items()}


def evaluation(rows):
    """{(model, split): (metric name, value in %)}: the last eval row of each model and split."""
    out = {}
    for row in rows:
        if row["stage"] == "eval" and "model" in row and "split" in row:
            metric = "wer" if "wer" in row else "bleu" if "bleu" in row else None
            if metric:
                out[row["model"], row["split"]] = (metric, row[metric] * (100 if metric == "wer" else 1))
    return out


def plot(rows, path, only=None):
    """Draw the panels that the rows have data for (of `only`, keys like "loss", "kl", "eval",
    if given) into one PNG at path; a stage has one colour in every panel."""
    rl_stages = set(curves(rows, "reward")) | set(curves(rows, "judge_cer"))
    losses = {k: v for k, v in curves(rows, "loss").items() if k not in rl_stages}
    panels = ([("loss", "supervised loss", losses)] if losses else [])
    panels += [(key, title, curves(rows, key)) for key, title in (("dev_loss", "dev loss (early stopping)"),
               ("dev_cer", "dev CER of syntheses, reward ASR")) if curves(rows, key)]
    panels += [(key, title, curves(rows, key)) for key, title in RL_PANELS if rl_stages and curves(rows, key)]
    scores = evaluation(rows)
    if only:
        panels, scores = [p for p in panels if p[0] in only], scores if "eval" in only else {}
    colours = {stage: f"C{i}" for i, stage in enumerate(sorted({s for _, _, data in panels for s in data}))}
    n = len(panels) + bool(scores)
    if n == 0:
        raise SystemExit("error: the metrics hold no losses, rewards or evaluations to plot")
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.2 * ((n + cols - 1) // cols)),
                             squeeze=False)
    axes = axes.flatten()
    for ax, (key, title, data) in zip(axes, panels):
        for stage, (steps, values) in sorted(data.items()):
            ax.plot(steps, values, label=stage, linewidth=1, color=colours[stage])
        ax.set(title=title, xlabel="step")
        if key == "loss":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if scores:
        ax = axes[len(panels)]
        models = list(dict.fromkeys(m for m, _ in scores))
        splits = list(dict.fromkeys(s for _, s in scores))
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            xs = [j + i * width for j, s in enumerate(splits) if (model, s) in scores]
            ax.bar(xs, [scores[model, s][1] for s in splits if (model, s) in scores], width, label=model)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(splits))], splits, rotation=20, fontsize=7)
        metrics = sorted({m for m, _ in scores.values()})
        ax.set(title="evaluation: " + " / ".join("WER %" if m == "wer" else "BLEU" for m in metrics))
        ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="training runs' --out directories (holding metrics.jsonl)")
    parser.add_argument("-o", "--output", help="PNG to write (default: <first run>/training.png)")
    parser.add_argument("--only", help="comma-separated panels to draw, of: loss, " + ", ".join(k for k, _ in RL_PANELS)
                        + ", eval (default: all that have data)")
    args = parser.parse_args(argv)
    output = args.output or os.path.join(args.runs[0], "training.png")
    only = set(args.only.split(",")) if args.only else None
    if only and only - {"loss", "eval", *(k for k, _ in RL_PANELS)}:
        parser.error(f"--only: unknown panels {sorted(only - {'loss', 'eval', *(k for k, _ in RL_PANELS)})}")
    plot([row for run in args.runs for row in read_metrics(os.path.join(run, "metrics.jsonl"))], output, only)
    print(output)


if __name__ == "__main__":
    main()
