#!/usr/bin/env bash
# Whether two train_gpt binaries (say, before and after a refactor) train bit for bit alike:
# both run the same short runs over every method (each FFN structure, Llama-style layers, SGT,
# growth with LEMON and MSLT, MSG, LiGO, SAT's ladder, MoE) and their step-6 model and optimizer
# checkpoints and main.log must be byte-identical.
#   bash scripts/compare_trainers.sh OLD_TRAIN_GPT NEW_TRAIN_GPT [SHARD_DIR]
# SHARD_DIR holds train_*.bin and val_*.bin of byte tokens (default: the shards of the
# example_prepare_data test in build/cpu-release). Exits 1 when any run differs.
set -uo pipefail
old=${1:?usage: compare_trainers.sh OLD_TRAIN_GPT NEW_TRAIN_GPT [SHARD_DIR]}
new=${2:?usage: compare_trainers.sh OLD_TRAIN_GPT NEW_TRAIN_GPT [SHARD_DIR]}
data=${3:-build/cpu-release/examples/example_runs/text_bytes}
[[ -e "$data/train_000000.bin" ]] || { echo "no shards in $data (run the example_prepare_data test)"; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--train "$data/train_*.bin" --val "$data/val_*.bin" --tokenizer byte --layers 2 --d-model 32
        --heads 2 --seq-len 32 --batch 2 --grad-accum 2 --steps 6 --warmup 2 --eval-every 2
        --eval-batches 2 --sample-tokens 4 --shuffle --threads 2)
status=0
i=0
while IFS= read -r flags; do
  i=$((i + 1))
  read -r -a extra <<< "$flags"
  for side in old new; do
    bin=$old; [[ $side == new ]] && bin=$new
    if ! "$bin" "${common[@]}" "${extra[@]}" --out "$out/$side$i" > "$out/$side$i.txt" 2>&1; then
      echo "run $i failed with $bin ($flags):"; tail -3 "$out/$side$i.txt"; status=1; continue 2
    fi
  done
  same=yes
  for f in ckpt_00000006/model.safetensors ckpt_00000006/optimizer.safetensors main.log; do
    cmp -s "$out/old$i/$f" "$out/new$i/$f" || { same=no; echo "differs: $f ($flags)"; status=1; }
  done
  [[ $same == yes ]] && echo "identical: $flags"
done <<'RUNS'
--ffn lowrank --rank 8
--ffn dense
--ffn blockdense --rank 8 --blocks 2
--ffn blockshuffle --blocks 2
--ffn dense --norm rmsnorm --pos rope --act swiglu --kv-heads 1
--ffn lowrank --rank 8 --sgt cosine --sgt-ratio 0.67 --sgt-reduce-flop
--ffn lowrank --rank 8 --structured-first-ffn --grow 3:lemon:d=48,heads=3,layers=3,rank=12 --grow 4:mslt:layers=6 --grow-state carry --grow-lr rewind
--ffn lowrank --rank 8 --grow 2:msg:d=48,heads=3,ffn=160,layers=3 --msg-steps 3 --grow-state carry
--ffn dense --grow 3:ligo:d=64,layers=3,steps=3
--ffn lowrank --rank 8 --sat-rate 0.5 --sat-ladder 2,5,3 --sat-score activation
--ffn lowrank --rank 8 --moe-experts 4 --moe-top-k 2 --moe-every 1
RUNS
exit $status
