// bonsai/cuda.hpp — umbrella header of the CUDA backend: everything in <bonsai/bonsai.hpp> plus
// Lowering<Map, Device> for every structured node (cuBLASLt GEMMs in fp32, TF32 or bf16 with
// fp32 accumulation; fused epilogues), device tensors and copies. Compile with nvcc (C++20,
// --expt-relaxed-constexpr) and link bonsai::cuda.
#pragma once

#include "bonsai.hpp"
#include "backend/cuda/error.cuh"
#include "backend/cuda/memory.cuh"
#include "backend/cuda/runtime.cuh"
#include "backend/cuda/gemm.cuh"
#include "backend/cuda/epilogue.cuh"
#include "backend/cuda/linear.cuh"
#include "backend/cuda/shuffle.cuh"
#include "backend/cuda/norm.cuh"
#include "backend/product.hpp"
