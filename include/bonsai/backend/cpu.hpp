// bonsai/backend/cpu.hpp — the CPU backend: Lowering<Map, Host> for every structured node.
#pragma once

#include "cpu/epilogue.hpp"
#include "cpu/gemm.hpp"
#include "cpu/transpose.hpp"
#include "cpu/linear.hpp"
#include "cpu/pre_merged.hpp"
#include "product.hpp"
#include "cpu/self_guided.hpp"
#include "cpu/shuffle.hpp"
#include "lowering.hpp"
#include "cpu/ops.hpp"
