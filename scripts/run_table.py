#!/usr/bin/env python3
"""Summarise training runs as a Markdown table, from each run directory's metrics.csv.

Usage: run_table.py runs/a [runs/b ...]

One row per run: optimizer steps, training FLOPs, wall time of the steps, the last validation
loss and its perplexity, and the best validation loss.
"""
import csv
import math
import os
import sys


def summarise(run):
    path = os.path.join(run, "metrics.csv")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"run_table.py: cannot read {path}: {e}")
    train = [r for r in rows if r["loss"]]
    val = [r for r in rows if r["val_loss"]]
    if not train or not val:
        sys.exit(f"run_table.py: {path} has no training or no validation rows")
    last = float(val[-1]["val_loss"])
    return {
        "run": os.path.basename(os.path.normpath(run)),
        "steps": len(train),
        "flops": float(train[-1]["train_flops"]),
        "minutes": sum(float(r["ms"]) for r in train if r["ms"]) / 60e3,
        "val": last,
        "ppl": math.exp(last),
        "best": min(float(r["val_loss"]) for r in val),
    }


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__.strip())
    rows = [summarise(r) for r in argv[1:]]
    print("| run | steps | training FLOPs | wall time (min) | val loss | val perplexity | best val loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['steps']} | {r['flops']:.3e} | {r['minutes']:.1f} | "
              f"{r['val']:.4f} | {r['ppl']:.1f} | {r['best']:.4f} |")


if __name__ == "__main__":
    main(sys.argv)
