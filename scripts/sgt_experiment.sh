#!/usr/bin/env bash
# The Structured-FFN paper's self-guided training experiment in miniature, on the Brown corpus:
# the same small GPT (6 layers, d_model 384, GPT-2 tokenizer, T = 256, B = 8) trained
#   dense          for --steps N (default 250)
#   lowrank_32     LowRank FFNs at 32% of the dense FFN's parameters, trained for as many steps
#                  as the dense run's FLOPs buy (more tokens, equal compute)
#   lowrank_32_sgt the same LowRank model with SGT (cosine, reduce-flop) and the fixed-FLOPs
#                  budget: N steps extended by the guided steps, which repeat the first data
# all at equal training FLOPs, reading the training windows in a seeded shuffled order (Brown is
# ordered by genre, so repeating the "first" data must not mean repeating the news section).
# Writes runs/sgt/results.md (val loss, perplexity, FLOPs, wall time) and runs/sgt/loss.png
# (loss against training FLOPs).
#   bash scripts/sgt_experiment.sh [N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps=${1:-250}

bash scripts/setup_brown.sh train_gpt
bin=build/cpu-release/examples
out=runs/sgt
mkdir -p "$out"
common=(--train "data/brown/gpt2/train_*.bin" --val "data/brown/gpt2/val_*.bin" --tokenizer data/gpt2
        --layers 6 --d-model 384 --heads 6 --seq-len 256 --batch 8 --warmup 20 --lr 1.5e-3
        --shuffle --sample-tokens 0 --keep-ckpts 1)

# Training GFLOP per step of a model, from a one-step probe run.
gflop_per_step() {
  "$bin/train_gpt" "${common[@]}" "$@" --steps "$steps" --stop-after 1 --out "$out/probe" |
    sed -n 's/.* \([0-9.]*\) GFLOP per step.*/\1/p'
  rm -rf "$out/probe"
}
dense=$(gflop_per_step --ffn dense)
lowrank=$(gflop_per_step --ffn lowrank --ffn-params 0.32)
more_steps=$(python3 -c "print(int($steps * $dense / $lowrank))")
echo "dense $dense GFLOP/step, LowRank 32% $lowrank GFLOP/step: the LowRank baseline trains $more_steps steps"

run() {
  local name=$1; shift
  rm -rf "${out:?}/$name"
  "$bin/train_gpt" "${common[@]}" --eval-every 25 --eval-batches 16 --out "$out/$name" "$@" | tee "$out/$name.log" | grep -v '^step'
}
run dense --ffn dense --steps "$steps"
run lowrank_32 --ffn lowrank --ffn-params 0.32 --steps "$more_steps"
run lowrank_32_sgt --ffn lowrank --ffn-params 0.32 --steps "$steps" \
  --sgt cosine --sgt-reduce-flop --sgt-budget flops

python3 scripts/run_table.py "$out/dense" "$out/lowrank_32" "$out/lowrank_32_sgt" | tee "$out/results.md"
gnuplot -e "runs='$out/dense $out/lowrank_32 $out/lowrank_32_sgt'; out='$out/loss.png'; xcol='train_flops'; title='Brown, 6x384: validation loss at equal training FLOPs'" \
  scripts/plot_loss.gp
echo "table: $out/results.md, plot: $out/loss.png"
