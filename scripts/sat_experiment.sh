#!/usr/bin/env bash
# Sparsity-accelerated continued training, on the Brown corpus in bytes (vocabulary 256, so the
# output head is a negligible share of the work and the blocks, which SAT thins, are nearly all
# of it): a base model, 6 layers x d_model 384 (6 heads, FFN 1536, T = 256, B = 8), trained from
# scratch for N steps (default 600) and exported, then continued for M more steps (default 400)
# from those weights, densely and with SAT at omission rates 0.3, 0.5 and 0.7, each with the
# ladder (rate until M/2, 4 stairs down to dense at 0.9 M) and flat (the rate to the end, no
# return to dense). Every continuation has the same steps, learning-rate schedule and data.
# Writes runs/sat/results.md (FLOPs, wall time, tokens/s, val loss) and runs/sat/loss.png (val
# loss against training FLOPs); with other N or M the directory is runs/sat-N-M. RATES picks the
# rates, THREADS the OpenMP threads of each run (0: all cores).
#   bash scripts/sat_experiment.sh [N] [M]
#   RATES="0.5" THREADS=2 bash scripts/sat_experiment.sh 600 400
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
base_steps=${1:-600}
steps=${2:-400}
rates=(${RATES:-0.3 0.5 0.7})

bash scripts/setup_brown.sh train_gpt
bin=build/cpu-release/examples
out=runs/sat
[[ $base_steps == 600 && $steps == 400 ]] || out=runs/sat-$base_steps-$steps
mkdir -p "$out"
model=(--layers 6 --d-model 384 --heads 6 --ffn dense)
common=(--train "data/brown/byte/train_*.bin" --val "data/brown/byte/val_*.bin" --tokenizer byte
        --seq-len 256 --batch 8 --warmup 20 --lr 1e-3 --shuffle --sample-tokens 0 --keep-ckpts 1
        --eval-batches 16 --threads "${THREADS:-0}")

# A finished run is kept; a stopped one resumes from its last checkpoint.
run() {
  local name=$1 n=$2; shift 2
  local resume=()
  if grep -qs '^validation loss' "$out/$name.log"; then echo "== $name (done)"; return; fi
  if compgen -G "$out/$name/ckpt_*[0-9]" > /dev/null; then resume=(--resume); else rm -rf "${out:?}/$name"; fi
  echo "== $name ${resume[*]}"
  "$bin/train_gpt" "${common[@]}" --steps "$n" --ckpt-every $((n / 4)) --eval-every $((n / 16)) \
    --out "$out/$name" "${resume[@]}" "$@" | tee -a "$out/$name.log" | grep -v '^step *[0-9]*/'
}
run base "$base_steps" "${model[@]}" --export-hf "$out/base/hf"

cont=(--init-from "$out/base/hf")
run dense "$steps" "${cont[@]}"
names=(dense)
for rho in "${rates[@]}"; do
  run "sat$rho" "$steps" "${cont[@]}" --sat-rate "$rho"
  run "sat$rho-flat" "$steps" "${cont[@]}" --sat-rate "$rho" --sat-ladder "$steps,$steps,1"
  names+=("sat$rho" "sat$rho-flat")
done

python3 scripts/run_table.py "${names[@]/#/$out/}" | tee "$out/results.md"
gnuplot -e "runs='${names[*]/#/$out/}'; labels='${names[*]}'; out='$out/loss.png'; xcol='train_flops'; val_only=1; title='Brown bytes, continued training of 6x384 ($steps steps): validation loss against training FLOPs'" \
  scripts/plot_loss.gp
echo "table: $out/results.md, plot: $out/loss.png"
