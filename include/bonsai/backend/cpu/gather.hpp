// bonsai/backend/cpu/gather.hpp — the gathers and scatters of sparsity-accelerated training on
// the CPU: a layer that computes only its kept heads or channels copies their rows or column
// blocks of a weight into compact matrices, runs on those, and adds the compact gradients back.
//   gather_rows(src, rows, dst)                      dst[i, :] = src[rows[i], :]
//   scatter_add_rows(src, rows, dst)                 dst[rows[i], :] += src[i, :]  (i in order,
//                                                    so repeated rows add up deterministically)
//   gather_column_blocks(src, blocks, w, dst)        dst[:, j w + e] = src[:, blocks[j] w + e]
//   scatter_add_column_blocks(src, blocks, w, dst)   dst[:, blocks[j] w + e] += src[:, j w + e]
// Matrices are row-major with contiguous rows; e < w.
#pragma once

#include <algorithm>
#include <span>

#include "../../core/parallel.hpp"
#include "../../core/tensor.hpp"

namespace bonsai::cpu {

namespace detail {
template <class A, class B>
void check_gather(const char* who, const A& wide, const B& compact, index_t rows_compact,
                  index_t cols_compact) {
  BONSAI_CHECK(compact.rows() == rows_compact && compact.cols() == cols_compact &&
                   wide.stride(1) == 1 && compact.stride(1) == 1,
               who, ": the compact matrix has shape ", shape{compact.rows(), compact.cols()},
               " but the selection needs ", shape{rows_compact, cols_compact});
}
}  // namespace detail

/// dst[i, :] = src[rows[i], :]; src (R, C), dst (rows.size(), C).
template <class T>
void gather_rows(const MatrixView<const std::type_identity_t<T>, Host>& src,
                 std::span<const index_t> rows, const MatrixView<T, Host>& dst) {
  detail::check_gather("gather_rows", src, dst, index_t(rows.size()), src.cols());
  const index_t c = src.cols();
  parallel_for(index_t(rows.size()), [&](index_t i) {
    std::copy_n(src.data() + rows[std::size_t(i)] * src.ld(), c, dst.data() + i * dst.ld());
  }, c);
}

/// dst[rows[i], :] += src[i, :] for i = 0, 1, ... in order; src (rows.size(), C), dst (R, C).
template <class T>
void scatter_add_rows(const MatrixView<const std::type_identity_t<T>, Host>& src,
                      std::span<const index_t> rows, const MatrixView<T, Host>& dst) {
  detail::check_gather("scatter_add_rows", dst, src, index_t(rows.size()), dst.cols());
  const index_t c = dst.cols();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const T* s = src.data() + index_t(i) * src.ld();
    T* d = dst.data() + rows[i] * dst.ld();
    for (index_t e = 0; e < c; ++e) d[e] += s[e];
  }
}

/// dst[:, j w + e] = src[:, blocks[j] w + e]; src (R, A), dst (R, blocks.size() w).
template <class T>
void gather_column_blocks(const MatrixView<const std::type_identity_t<T>, Host>& src,
                          std::span<const index_t> blocks, index_t w, const MatrixView<T, Host>& dst) {
  const index_t k = index_t(blocks.size());
  detail::check_gather("gather_column_blocks", src, dst, src.rows(), k * w);
  parallel_for(src.rows(), [&](index_t o) {
    for (index_t j = 0; j < k; ++j)
      std::copy_n(src.data() + o * src.ld() + blocks[std::size_t(j)] * w, w, dst.data() + o * dst.ld() + j * w);
  }, k * w);
}

/// dst[:, blocks[j] w + e] += src[:, j w + e]; src (R, blocks.size() w), dst (R, A).
template <class T>
void scatter_add_column_blocks(const MatrixView<const std::type_identity_t<T>, Host>& src,
                               std::span<const index_t> blocks, index_t w, const MatrixView<T, Host>& dst) {
  const index_t k = index_t(blocks.size());
  detail::check_gather("scatter_add_column_blocks", dst, src, dst.rows(), k * w);
  parallel_for(dst.rows(), [&](index_t o) {
    for (index_t j = 0; j < k; ++j) {
      const T* s = src.data() + o * src.ld() + j * w;
      T* d = dst.data() + o * dst.ld() + blocks[std::size_t(j)] * w;
      for (index_t e = 0; e < w; ++e) d[e] += s[e];
    }
  }, k * w);
}

}  // namespace bonsai::cpu
