"""
Benchmark: where a GRPO step's time goes, and rollout tokens/s.

Runs a few stage-2 steps of train_asr.py from a finished SFT checkpoint (default: the one
`python train_asr.py` leaves in out/asr) into a scratch output directory, then reads the
per-phase timings it logged. The first step is dropped (warm-up).

    python bench/grpo.py                      # after python train_asr.py
    python bench/grpo.py --run out/asr --steps 6 --num-generations 8

Then stage 1b (SFT continued for the same wall time) times SFT steps on the same machine in
the same run. Prints seconds per phase, each phase's share of the step, the step's cost in SFT
steps, and the rollout speed; the last line is rollout tokens/s as a number.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("encode", "rollout", "reward", "reference", "update")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="out/asr", help="output dir of a train_asr.py run with a finished stage1")
    parser.add_argument("--steps", type=int, default=6)
    args, extra = parser.parse_known_args()  # anything else goes to train_asr.py (e.g. --num-generations 8)
    run = os.path.abspath(args.run)
    if not os.path.exists(os.path.join(run, "stage1", "state.json")):
        sys.exit(f"no finished SFT checkpoint in {run}/stage1: run `python train_asr.py` first, or pass --run")
    config = json.load(open(os.path.join(run, "stage1", "config.json")))["train"]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "asr")
        os.makedirs(out)
        shutil.copytree(os.path.join(run, "stage1"), os.path.join(out, "stage1"))
        shutil.copy(os.path.join(run, "tokenizer.json"), out)
        subprocess.run([sys.executable, os.path.join(ROOT, "train_asr.py"), "--stages", "2,1b", "--out", out,
                        "--no-evaluate", "--rl-steps", str(args.steps), "--log-every", "1", "--data", config["data"],
                        "--n-train", str(config["n_train"]), *extra], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        used = json.load(open(os.path.join(out, "stage2", "config.json")))
    sft = [r for r in rows if r.get("stage") == "stage1b"]
    rows = [r for r in rows if r.get("stage") == "stage2"][1:]
    if not rows:
        sys.exit("no stage-2 steps after the warm-up one: use --steps 2 or more")
    train, grpo = used["train"], used["grpo"]
    G = grpo["num_generations"]
    sampled_rows = train["rl_batch"] // G * (G - (grpo["off_policy"] != "none"))
    total = sum(sum(r.get(f"time/{p}", 0) for p in PHASES) for r in rows) / len(rows)
    print(f"{len(rows)} GRPO steps after warm-up: {train['rl_batch']} completions per step (G = {G}), "
          f"max_new_tokens {grpo['max_new_tokens']}")
    for p in PHASES:
        t = sum(r.get(f"time/{p}", 0) for r in rows) / len(rows)
        print(f"  {p:10s} {t:7.3f} s  {100 * t / total:5.1f}%")
    sft_step = (sft[-1]["time"] - sft[0]["time"]) / max(1, sft[-1]["step"] - sft[0]["step"])
    print(f"  {'step':10s} {total:7.3f} s = {total / sft_step:.1f} SFT steps of {sft_step:.3f} s (stage 1b, "
          f"{train['batch_frames']} frames a batch)")
    tokens = sum(r["completions/mean_length"] * sampled_rows for r in rows)
    print("rollout tokens/s (sampled completion tokens / rollout phase time):")
    print(f"{tokens / sum(r['time/rollout'] for r in rows):.1f}")


if __name__ == "__main__":
    main()
