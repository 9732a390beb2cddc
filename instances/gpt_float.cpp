// Gpt over every FFN structure in float: plain and self-guided, the structured ones also pre-merged
// (instances/models.hpp). One file: the CPU kernels every structure runs (attention, norms,
// RoPE, embedding, cross-entropy, the dense projections) are most of each model's compilation,
// so the four together compile in about 1.7 times one alone, not 4 times.
#include "models.hpp"

BONSAI_PROJECT_MODELS(, bonsai::Dense<float>)
BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::LowRank<float>)
BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::BlockDense<float>)
BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::BlockShuffle<float>)
