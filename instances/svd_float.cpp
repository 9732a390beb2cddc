// Eigen's SVD for the float initialisers (instances/kernels.hpp).
#include "kernels.hpp"

BONSAI_SVD_INSTANCES(, float)
