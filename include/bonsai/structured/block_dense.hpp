// bonsai/structured/block_dense.hpp — BlockDense: y = U blockdiag(V_0..V_{B-1}) x, a
// block-diagonal map in -> rank followed by a dense rank -> out; rank(W_merged) <= R. Params
// R (out + in/B). With B = 1 it is LowRank.
#pragma once

#include <algorithm>

#include "block_diag.hpp"
#include "dense.hpp"
#include "product.hpp"

namespace bonsai {

template <class T>
using BlockDense = Product<Dense<T>, BlockDiag<T>>;

/// BlockDense in -> out through rank R with B blocks; needs in % B == 0, R % B == 0 and
/// R <= min(in, out).
template <class T>
BlockDense<T> block_dense(index_t in, index_t out, index_t rank, index_t blocks) {
  detail::check_positive("BlockDense", "rank", rank);
  BONSAI_CHECK(rank <= std::min(in, out), "BlockDense: rank = ", rank,
               " exceeds min(in_features, out_features) = min(", in, ", ", out, ")");
  detail::check_positive("BlockDense", "blocks", blocks);
  detail::check_divisible("BlockDense", "in_features", in, blocks);
  detail::check_divisible("BlockDense", "rank", rank, blocks);
  return Dense<T>(rank, out) * BlockDiag<T>(in, rank, blocks);
}

}  // namespace bonsai
