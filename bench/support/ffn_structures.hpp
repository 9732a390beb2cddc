// bench/support/ffn_structures.hpp — the FFN pairs every FFN benchmark compares: for width d
// (FFN 4d), dense and each structure at the paper's two budgets, 63% and 32% of dense
// parameters (spec §8: LowRank R = d/2 and d/4; BlockShuffle B = 2 and 4; BlockDense with the
// paper's B and R per width, which give 58.6% / 29.3% at d >= 1024).
#pragma once

#include <bonsai/bonsai.hpp>
#include <utility>

namespace bonsai::bench {

/// BlockDense blocks and ranks of the paper's runs: d -> {B, R at 63%, R at 32%}.
struct BlockDenseConfig {
  index_t blocks, r63, r32;
};
inline BlockDenseConfig block_dense_config(index_t d) {
  if (d == 768) return {2, 512, 256};
  if (d == 1024) return {4, 768, 384};
  return {4, 3 * d / 4, 3 * d / 8};  // d >= 2048: B = 4, R = 3d/4, 3d/8
}

/// Calls add(name, make) for each structure, dense first; make() returns the (up, down) pair.
template <class T, class Add>
void for_each_ffn_structure(index_t d, Add&& add) {
  const index_t f = 4 * d;
  add("dense", [=] { return std::pair(Dense<T>(d, f), Dense<T>(f, d)); });
  add("lowrank_63", [=] { return std::pair(LowRank<T>(d, f, d / 2), LowRank<T>(f, d, d / 2)); });
  add("lowrank_32", [=] { return std::pair(LowRank<T>(d, f, d / 4), LowRank<T>(f, d, d / 4)); });
  const auto bd = block_dense_config(d);
  add("blockdense_63", [=] {
    return std::pair(block_dense<T>(d, f, bd.r63, bd.blocks), block_dense<T>(f, d, bd.r63, bd.blocks));
  });
  add("blockdense_32", [=] {
    return std::pair(block_dense<T>(d, f, bd.r32, bd.blocks), block_dense<T>(f, d, bd.r32, bd.blocks));
  });
  add("blockshuffle_63", [=] { return std::pair(block_shuffle<T>(d, f, 2), block_shuffle<T>(f, d, 2)); });
  add("blockshuffle_32", [=] { return std::pair(block_shuffle<T>(d, f, 4), block_shuffle<T>(f, d, 4)); });
}

}  // namespace bonsai::bench
