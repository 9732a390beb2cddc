// Gpt over BlockDense<float> FFNs: plain, self-guided and pre-merged (instances/extern.hpp).
#include "extern.hpp"

BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::BlockDense<float>)
