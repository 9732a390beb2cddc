// Eigen's SVD for the double initialisers (instances/extern.hpp).
#include "extern.hpp"

BONSAI_SVD_INSTANCES(, double)
