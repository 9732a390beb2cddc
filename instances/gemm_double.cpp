// Eigen's double GEMM behind cpu::gemm (instances/kernels.hpp).
#include "kernels.hpp"

BONSAI_GEMM_INSTANCES(, double)
