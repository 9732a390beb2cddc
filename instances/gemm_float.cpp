// Eigen's float GEMM behind cpu::gemm (instances/kernels.hpp).
#include "kernels.hpp"

BONSAI_GEMM_INSTANCES(, float)
