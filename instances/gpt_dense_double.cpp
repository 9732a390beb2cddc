// Gpt over Dense<double> FFNs: plain and self-guided (instances/extern.hpp).
#include "extern.hpp"

BONSAI_PROJECT_MODELS(, bonsai::Dense<double>)
