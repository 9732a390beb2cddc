#!/usr/bin/env bash
# Install dependencies, build the cpu-release preset and run the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh
bash scripts/fetch_data.sh  # GPT-2 tokenizer files for the tokenizer tests
# No Eigen-GEMM twins here: scripts/test_asan.sh runs the whole suite through Eigen's GEMM.
cmake --preset cpu-release -DBONSAI_BUILD_EIGEN_TWINS=OFF
cmake --build --preset cpu-release --parallel "$(nproc)"
ctest --preset cpu-release --output-on-failure -j2

# The CUDA backend is compiled wherever nvcc is installed, so it cannot rot on machines without
# a GPU; its tests skip themselves when no device is present (scripts/gpu_check.sh runs them and
# the CUDA benchmarks on a GPU machine).
if [[ -x /usr/local/cuda/bin/nvcc ]] || command -v nvcc >/dev/null 2>&1; then
  cmake --preset cuda -DBONSAI_BUILD_EIGEN_TWINS=OFF
  cmake --build build/cuda --target bonsai_cuda_all --parallel "$(nproc)"
  ctest --test-dir build/cuda -R '^cuda: ' --output-on-failure -j2 --no-tests=error
fi

# The whole suite again under AddressSanitizer + UBSan, through Eigen's GEMM.
bash scripts/test_asan.sh
