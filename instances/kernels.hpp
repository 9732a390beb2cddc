// instances/kernels.hpp — the scalar kernels (the SVD initialisers, Eigen's GEMM) compiled once
// in bonsai_kernels / bonsai_kernels_double, declared extern for every C++ and CUDA source that
// links them (force-included by CMake). They are the same whichever CPU GEMM a program uses.
#pragma once

#include <bonsai/instances.hpp>

BONSAI_KERNEL_INSTANCES(extern)
