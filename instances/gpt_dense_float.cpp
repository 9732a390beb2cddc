// Gpt over Dense<float> FFNs: plain and self-guided (instances/models.hpp).
#include "models.hpp"

BONSAI_PROJECT_MODELS(, bonsai::Dense<float>)
