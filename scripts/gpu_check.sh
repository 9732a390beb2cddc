#!/usr/bin/env bash
# Builds the CUDA backend, runs every CUDA test and benchmark on this machine's GPU, measures the
# same FFN shapes (and a GPT-2 124M training step) in PyTorch when it is installed, and prints a
# short table last. Full logs and JSON/CSV results go to the output folder.
#
#   scripts/gpu_check.sh [--prebuilt DIR] [--out DIR] [--torch none|eager|all] [--torch-part ffn|gpt2|all]
#                        [--dims 2048,4096,5120] [--bench-filter REGEX] [--bench-args "--autotune ..."]
#
# --prebuilt DIR  run test_cuda_* and bench_cuda_* found in DIR instead of building (for a GPU
#                 machine without the build dependencies; build with `cmake --preset cuda
#                 -DBONSAI_MARCH_NATIVE=OFF` and `--target bonsai_cuda_all prepare_data train_gpt`
#                 elsewhere); train_gpt_cuda, train_gpt and prepare_data in DIR are compared too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

prebuilt="" out="gpu_check" torch_mode="all" torch_part="all" dims="2048,4096,5120" filter="." bench_args=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prebuilt) prebuilt="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --torch) torch_mode="$2"; shift 2 ;;
    --torch-part) torch_part="$2"; shift 2 ;;
    --dims) dims="$2"; shift 2 ;;
    --bench-filter) filter="$2"; shift 2 ;;
    --bench-args) bench_args="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"

if [[ -n "$prebuilt" ]]; then
  mapfile -t bin_tests < <(find "$prebuilt" -maxdepth 1 -type f \( -name 'test_cuda_*' -o -name 'test_mpi_nccl_*' \) -perm -u+x | sort)
  mapfile -t bin_benches < <(find "$prebuilt" -maxdepth 1 -type f -name 'bench_cuda_*' -perm -u+x | sort)
  export LD_LIBRARY_PATH="$prebuilt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  examples="$prebuilt"
else
  cmake --preset cuda
  cmake --build build/cuda --target bonsai_cuda_all prepare_data train_gpt --parallel "$(nproc)"
  examples=build/cuda/examples
  # test_mpi_nccl_* (built when MPI and NCCL are found) runs as a single rank without mpirun.
  mapfile -t bin_tests < <(find build/cuda/tests -maxdepth 2 -type f \( -name 'test_cuda_*' -o -name 'test_mpi_nccl_*' \) -perm -u+x | sort)
  mapfile -t bin_benches < <(find build/cuda/bench -maxdepth 2 -type f -name 'bench_cuda_*' -perm -u+x | sort)
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # the NCCL test, as root
status=0
: > "$out/tests.txt"
for t in "${bin_tests[@]}"; do
  echo "== $(basename "$t")" | tee -a "$out/tests.txt"
  if ! "$t" 2>&1 | tee -a "$out/tests.txt" | tail -4; then status=1; fi
done

# train_gpt_cuda against train_gpt (fp32 losses step by step, checkpoints resumed across them, bf16).
if [[ -x "$examples/train_gpt_cuda" && -x "$examples/train_gpt" && -x "$examples/prepare_data" ]]; then
  echo "== train_gpt_cuda against train_gpt" | tee -a "$out/tests.txt"
  if ! python3 tests/cuda/check_trainer.py "$examples/prepare_data" "$examples/train_gpt" \
      "$examples/train_gpt_cuda" docs/growth.md "$out/trainer" 2>&1 | tee -a "$out/tests.txt"; then status=1; fi
else
  echo "== train_gpt_cuda against train_gpt: skipped (no train_gpt_cuda, train_gpt and prepare_data in $examples)" \
    | tee -a "$out/tests.txt"
fi

for b in "${bin_benches[@]}"; do
  name=$(basename "$b")
  echo "== $name"
  # shellcheck disable=SC2086  # bench_args is a list of flags
  "$b" --benchmark_filter="$filter" $bench_args --benchmark_out="$out/$name.json" --benchmark_out_format=json \
    2>&1 | tee "$out/$name.txt" || status=1
done

if [[ "$torch_mode" != "none" ]] && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  backends=eager
  [[ "$torch_mode" == "all" ]] && backends=eager,compile
  PYTHONUNBUFFERED=1 python3 scripts/torch_ffn.py --part "$torch_part" --dims "$dims" \
    --backends "$backends" --csv "$out/torch.csv" 2>&1 | tee "$out/torch.txt" || status=1
fi

python3 scripts/gpu_table.py "$out" || status=1
exit $status
