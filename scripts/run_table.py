#!/usr/bin/env python3
"""Summarise training runs as a Markdown table, from each run directory's metrics.csv.

Usage: run_table.py [--reach runs/ref] runs/a [runs/b ...]

One row per run: optimizer steps, training FLOPs, wall time of the steps, their mean throughput
(tokens over the steps' time), the last validation loss and its perplexity, and the best
validation loss. With --reach, two more columns: the
training FLOPs at the first evaluation whose validation loss is at or below the reference run's
final validation loss, and the share of the reference run's FLOPs that saves.
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
    curve = [(float(r["train_flops"]), float(r["val_loss"])) for r in val]
    return {
        "curve": curve,
        "run": os.path.basename(os.path.normpath(run)),
        "steps": len(train),
        "flops": float(train[-1]["train_flops"]),
        "minutes": sum(float(r["ms"]) for r in train if r["ms"]) / 60e3,
        "tokens_per_s": sum(float(r["tokens_per_s"]) * float(r["ms"]) for r in train if r["ms"])
        / max(sum(float(r["ms"]) for r in train if r["ms"]), 1e-9),
        "val": last,
        "ppl": math.exp(last),
        "best": min(float(r["val_loss"]) for r in val),
    }


def reach(row, ref):
    """FLOPs at the first evaluation of `row` at or below ref's final val loss, and the saving."""
    for flops, loss in row["curve"]:
        if loss <= ref["val"]:
            return f"{flops:.3e}", f"{100.0 * (1.0 - flops / ref['flops']):.0f}%"
    return "not reached", "—"


def main(argv):
    args = argv[1:]
    ref = None
    if args[:1] == ["--reach"]:
        if len(args) < 2:
            sys.exit(__doc__.strip())
        ref = summarise(args[1])
        args = args[2:]
    if not args:
        sys.exit(__doc__.strip())
    rows = [summarise(r) for r in args]
    head = ("| run | steps | training FLOPs | wall time (min) | tokens/s | val loss | val perplexity "
            "| best val loss |")
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if ref:
        head += f" FLOPs to val loss {ref['val']:.4f} | compute saved |"
        rule += "---:|---:|"
    print(head)
    print(rule)
    for r in rows:
        line = (f"| {r['run']} | {r['steps']} | {r['flops']:.3e} | {r['minutes']:.1f} | "
                f"{r['tokens_per_s']:.0f} | {r['val']:.4f} | {r['ppl']:.1f} | {r['best']:.4f} |")
        if ref:
            line += " {} | {} |".format(*reach(r, ref))
        print(line)


if __name__ == "__main__":
    main(sys.argv)
