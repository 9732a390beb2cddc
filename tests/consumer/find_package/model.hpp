// The one header every source of this program includes: the costly templates it uses, declared
// extern (docs/compile_times.md). model_instances.cpp defines them, once.
#pragma once

#include <bonsai/bonsai.hpp>
#include <bonsai/instances.hpp>
#include <bonsai/nn/gpt.hpp>

using Model = bonsai::Gpt<bonsai::Dense<float>, bonsai::Dense<float>>;

BONSAI_GEMM_INSTANCES(extern, float)
BONSAI_GPT_INSTANCES(extern, bonsai::Dense<float>)
