// Gpt over Dense<float> FFNs: plain and self-guided (instances/extern.hpp).
#include "extern.hpp"

BONSAI_PROJECT_MODELS(, bonsai::Dense<float>)
