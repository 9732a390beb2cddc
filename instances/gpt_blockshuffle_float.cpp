// Gpt over BlockShuffle<float> FFNs: plain, self-guided and pre-merged (instances/models.hpp).
#include "models.hpp"

BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::BlockShuffle<float>)
