// Gpt over BlockShuffle<double> FFNs: plain, self-guided and pre-merged (instances/extern.hpp).
#include "extern.hpp"

BONSAI_PROJECT_STRUCTURED_MODELS(, bonsai::BlockShuffle<double>)
