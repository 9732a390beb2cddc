// Eigen's GEMM behind cpu::gemm, float and double (instances/extern.hpp).
#include "extern.hpp"

BONSAI_GEMM_INSTANCES(, float)
BONSAI_GEMM_INSTANCES(, double)
