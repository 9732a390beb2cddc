// Eigen's float GEMM behind cpu::gemm (instances/extern.hpp).
#include "extern.hpp"

BONSAI_GEMM_INSTANCES(, float)
