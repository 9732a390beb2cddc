// Eigen's SVD for the double initialisers (instances/kernels.hpp).
#include "kernels.hpp"

BONSAI_SVD_INSTANCES(, double)
