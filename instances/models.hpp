// instances/models.hpp — the models bonsai's own tests, benchmarks and examples compile once,
// in bonsai_models (float) and bonsai_models_double, instead of in every translation unit that
// uses them; CMake force-includes this header in every C++ source that links them. gpt_float.cpp
// and gpt_double.cpp define them, one file per scalar type. docs/compile_times.md shows the same
// pattern for a program of your own.
#pragma once

#include <bonsai/nn/gpt.hpp>
#include <bonsai/nn/premerge.hpp>

#include "kernels.hpp"

// The models of each FFN structure: plain and self-guided (SGT); structured ones also pre-merged
// (decoding).
#define BONSAI_PROJECT_MODELS(EXTERN, Map) \
  BONSAI_GPT_INSTANCES(EXTERN, Map)        \
  BONSAI_GPT_INSTANCES(EXTERN, bonsai::SelfGuided<Map>)
#define BONSAI_PROJECT_STRUCTURED_MODELS(EXTERN, Map) \
  BONSAI_PROJECT_MODELS(EXTERN, Map)                  \
  BONSAI_DECODER_INSTANCES(EXTERN, bonsai::PreMerged<Map>)

BONSAI_PROJECT_MODELS(extern, bonsai::Dense<float>)
BONSAI_PROJECT_STRUCTURED_MODELS(extern, bonsai::LowRank<float>)
BONSAI_PROJECT_STRUCTURED_MODELS(extern, bonsai::BlockDense<float>)
BONSAI_PROJECT_STRUCTURED_MODELS(extern, bonsai::BlockShuffle<float>)
BONSAI_PROJECT_MODELS(extern, bonsai::Dense<double>)
BONSAI_PROJECT_STRUCTURED_MODELS(extern, bonsai::LowRank<double>)
BONSAI_PROJECT_STRUCTURED_MODELS(extern, bonsai::BlockDense<double>)
BONSAI_PROJECT_STRUCTURED_MODELS(extern, bonsai::BlockShuffle<double>)
