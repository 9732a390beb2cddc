// bonsai/cuda.hpp — umbrella header of the CUDA backend: everything in <bonsai/bonsai.hpp> plus
// Lowering<Map, Device> for every structured node, SelfGuided and PreMerged (cuBLASLt GEMMs in
// fp32, TF32 or bf16 with fp32 accumulation; fused epilogues), device tensors and copies, the
// trainer's kernels, Ops<Device> (the op seam, so nn/gpt.hpp's Gpt<Up, Down, Device> runs on one
// GPU) and AdamW<T, Device> (train/adamw_device.cuh).
// Compile with nvcc (C++20, --expt-relaxed-constexpr) and link bonsai::cuda.
#pragma once

#include "bonsai.hpp"
#include "backend/cuda/error.cuh"
#include "backend/cuda/memory.cuh"
#include "backend/cuda/runtime.cuh"
#include "backend/cuda/gemm.cuh"
#include "backend/cuda/epilogue.cuh"
#include "backend/cuda/linear.cuh"
#include "backend/cuda/shuffle.cuh"
#include "backend/cuda/cross_entropy.cuh"
#include "backend/cuda/embedding.cuh"
#include "backend/cuda/adamw.cuh"
#include "backend/cuda/self_guided.cuh"
#include "backend/cuda/norm.cuh"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/rope.cuh"
#include "backend/cuda/elementwise.cuh"
#include "backend/cuda/ops.cuh"
#include "nn/gpt.hpp"
#include "train/adamw_device.cuh"
#include "backend/pre_merged.hpp"
#include "backend/product.hpp"
