#!/usr/bin/env bash
# Build the tests of every file reader (safetensors, checkpoints, GPT-2 weights, token shards,
# tokenizers, data loader) and the whole-model tests under AddressSanitizer + UBSan and run them:
# corrupt input must give a bonsai::Error, never a crash or an out-of-bounds read.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=(test_train_safetensors test_train_checkpoint test_train_gpt2_io test_train_token_shard
         test_train_tokenizer test_train_data_loader test_nn_gpt_io)
cmake --preset asan -DBONSAI_BUILD_EIGEN_TWINS=OFF -DBONSAI_BUILD_BENCHMARKS=OFF \
      -DBONSAI_BUILD_EXAMPLES=OFF >/dev/null
cmake --build --preset asan --parallel "$(nproc)" --target "${targets[@]}"
ctest --preset asan -R "^(safetensors|checkpoint|atomic_file|gpt_config_json|gpt2_io|token shard|gpt2 tokenizer|byte tokenizer|data loader|gpt io):"
