// The program's instantiations of model.hpp, compiled here and nowhere else.
#include "model.hpp"

BONSAI_GEMM_INSTANCES(, float)
BONSAI_GPT_INSTANCES(, bonsai::Dense<float>)
