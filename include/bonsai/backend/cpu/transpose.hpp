// bonsai/backend/cpu/transpose.hpp — dst = src^T for row-major matrices, in cache-sized tiles
// split across threads (a plain element loop strides through memory and is ~10x slower).
#pragma once

#include <algorithm>

#include "../../core/parallel.hpp"
#include "../../core/view.hpp"

namespace bonsai::cpu {

/// dst (cols, rows) = src (rows, cols)^T; src and dst must not overlap.
template <class T>
void transpose(const MatrixView<const std::type_identity_t<T>, Host>& src, const MatrixView<T, Host>& dst) {
  BONSAI_CHECK(dst.rows() == src.cols() && dst.cols() == src.rows(), "transpose: src has shape ",
               shape{src.rows(), src.cols()}, " but dst has shape ", shape{dst.rows(), dst.cols()});
  constexpr index_t tile = 32;
  const index_t rows = src.rows(), cols = src.cols();
  const index_t row_tiles = (rows + tile - 1) / tile, col_tiles = (cols + tile - 1) / tile;
  parallel_for(
      row_tiles * col_tiles,
      [&](index_t t) {
        const index_t r0 = (t / col_tiles) * tile, c0 = (t % col_tiles) * tile;
        const index_t r1 = std::min(rows, r0 + tile), c1 = std::min(cols, c0 + tile);
        for (index_t c = c0; c < c1; ++c) {
          T* out = dst.data() + c * dst.ld();
          for (index_t r = r0; r < r1; ++r) out[r] = src.data()[r * src.ld() + c];
        }
      },
      tile * tile);
}

}  // namespace bonsai::cpu
