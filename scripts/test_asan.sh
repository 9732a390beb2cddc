#!/usr/bin/env bash
# Build every CPU test (and the MPI tests) under AddressSanitizer + UndefinedBehaviorSanitizer
# and run them all: any out-of-bounds access, use after free, leak, signed overflow or other
# undefined behaviour fails the test that triggers it. The preset `asan` compiles at -O1 with
# Eigen's GEMM, so this is also the suite's run through the Eigen path (scripts/test.sh runs it
# through oneDNN). The packaging and compile-failure tests run in scripts/test.sh only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cmake --preset asan
cmake --build --preset asan --parallel "$(nproc)"
ctest --preset asan -LE "consumer|failtest" --output-on-failure
