// Eigen's SVD for the float initialisers (instances/extern.hpp).
#include "extern.hpp"

BONSAI_SVD_INSTANCES(, float)
