// bonsai/bonsai.hpp — umbrella header: core types, structured linear maps, initialisers and the
// CPU backend. <bonsai/cuda.hpp> adds the CUDA backend.
#pragma once

#include "config.hpp"
#include "core/eigen.hpp"
#include "core/error.hpp"
#include "core/extent.hpp"
#include "core/memory.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "core/view.hpp"
#include "structured/block_dense.hpp"
#include "structured/block_diag.hpp"
#include "structured/block_shuffle.hpp"
#include "structured/dense.hpp"
#include "structured/init.hpp"
#include "structured/low_rank.hpp"
#include "structured/map.hpp"
#include "structured/product.hpp"
#include "structured/shuffle.hpp"
#include "backend/cpu.hpp"
