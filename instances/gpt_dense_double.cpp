// Gpt over Dense<double> FFNs: plain and self-guided (instances/models.hpp).
#include "models.hpp"

BONSAI_PROJECT_MODELS(, bonsai::Dense<double>)
