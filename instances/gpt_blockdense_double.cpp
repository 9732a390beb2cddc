// Gpt over BlockDense<double> FFNs: plain, self-guided and pre-merged (instances/models.hpp).
#include "models.hpp"

BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::BlockDense<double>)
