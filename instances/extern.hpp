// instances/extern.hpp — the instantiations bonsai's own tests, benchmarks and examples compile
// once, in this folder's library (bonsai_instances), instead of in every translation unit that
// uses them. CMake force-includes this header in every C++ source that links bonsai_instances;
// each .cpp file here defines one group. docs/compile_times.md shows the same pattern for a
// program of your own.
#pragma once

#include <bonsai/instances.hpp>

BONSAI_KERNEL_INSTANCES(extern)
