// instances/models_device.cuh — the GPU models bonsai's CUDA tests, benchmarks and examples compile
// once, in bonsai_models_device, instead of in every CUDA translation unit that uses them: the
// Gpt<Map, Map, Device> of every FFN structure in fp32 and bf16. CMake force-includes this header in
// every CUDA source that links them; gpt_device.cu defines them.
#pragma once

#include <bonsai/cuda.hpp>
#include <bonsai/instances.hpp>

#define BONSAI_PROJECT_DEVICE_MODELS(EXTERN, Map)                    \
  BONSAI_DEVICE_GPT_INSTANCES(EXTERN, bonsai::Map<float>)            \
  BONSAI_DEVICE_GPT_INSTANCES(EXTERN, bonsai::Map<bonsai::bf16>)

BONSAI_PROJECT_DEVICE_MODELS(extern, Dense)
BONSAI_PROJECT_DEVICE_MODELS(extern, LowRank)
BONSAI_PROJECT_DEVICE_MODELS(extern, BlockDense)
BONSAI_PROJECT_DEVICE_MODELS(extern, BlockShuffle)
