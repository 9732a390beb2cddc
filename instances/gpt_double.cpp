// Gpt over every FFN structure in double: plain and self-guided, the structured ones also pre-merged
// (instances/models.hpp). One file: the CPU kernels every structure runs (attention, norms,
// RoPE, embedding, cross-entropy, the dense projections) are most of each model's compilation,
// so the four together compile in about 1.7 times one alone, not 4 times.
#include "models.hpp"

BONSAI_PROJECT_MODELS(, bonsai::Dense<double>)
BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::LowRank<double>)
BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::BlockDense<double>)
BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::BlockShuffle<double>)
