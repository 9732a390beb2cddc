#!/usr/bin/env bash
# The main demo: fetch the Brown corpus and GPT-2's tokenizer, tokenize the corpus into llm.c
# shards, train a small GPT with a LowRank FFN (32% of the dense FFN's parameters) for a few
# minutes on the CPU, then print the validation perplexity, a generated sample and draw the
# loss curve to runs/demo/loss.png. Extra arguments go to train_gpt (e.g. --steps 50).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup_brown.sh
bin=build/cpu-release/examples

rm -rf runs/demo
"$bin/train_gpt" --train "data/brown/gpt2/train_*.bin" --val "data/brown/gpt2/val_*.bin" \
  --tokenizer data/gpt2 --layers 6 --d-model 384 --heads 6 --seq-len 256 \
  --ffn lowrank --ffn-params 0.32 --batch 8 --steps 250 --warmup 20 --lr 1.5e-3 \
  --eval-every 50 --eval-batches 8 --ckpt-every 50 --sample-tokens 48 \
  --prompt "The jury said" --out runs/demo "$@"

gnuplot -e "runs='runs/demo'; out='runs/demo/loss.png'" scripts/plot_loss.gp
echo "loss curve: runs/demo/loss.png; more samples: $bin/generate --ckpt runs/demo --prompt \"...\""
