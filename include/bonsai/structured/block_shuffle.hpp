// bonsai/structured/block_shuffle.hpp — BlockShuffle (Monarch-style):
// y = P_{B,s} blockdiag(U) P_{q,B} blockdiag(V) x with m = min(in, out) the intermediate
// width, p = in/B, q = m/B, s = out/B, V_i (q, p) and U_c (s, q). Block c of the second stage
// reads every B-th intermediate feature starting at c; the output shuffle interleaves the
// blocks. Params m (in + out) / B; with B = 1 it is two dense factors, so it can be full rank.
#pragma once

#include <algorithm>

#include "block_diag.hpp"
#include "product.hpp"
#include "shuffle.hpp"

namespace bonsai {

template <class T>
using BlockShuffle = Product<Shuffle<>, BlockDiag<T>, Shuffle<>, BlockDiag<T>>;

/// BlockShuffle in -> out with B blocks in both stages; needs in % B == 0 and out % B == 0.
template <class T>
BlockShuffle<T> block_shuffle(index_t in, index_t out, index_t blocks) {
  detail::check_positive("BlockShuffle", "in_features", in);
  detail::check_positive("BlockShuffle", "out_features", out);
  detail::check_positive("BlockShuffle", "blocks", blocks);
  detail::check_divisible("BlockShuffle", "in_features", in, blocks);
  detail::check_divisible("BlockShuffle", "out_features", out, blocks);
  const index_t m = std::min(in, out), q = m / blocks, s = out / blocks;
  return Shuffle<>(blocks, s) * BlockDiag<T>(m, out, blocks) * Shuffle<>(q, blocks) *
         BlockDiag<T>(in, m, blocks);
}

}  // namespace bonsai
