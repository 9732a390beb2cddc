// bonsai/backend/cpu/epilogue.hpp — the CPU's fused output stage. One pass per token row reads
// the product's accumulator, optionally through a Shuffle's row transpose (so a product ending
// in a Shuffle stores its output permuted at no extra pass), adds the bias, applies tanh-GELU
// and keeps the pre-activation for backward; backward is the mirror pass, with dbias summed in
// per-thread partials (deterministic for a fixed thread count).
#pragma once

#include <algorithm>

#include "../../core/eigen.hpp"
#include "../../core/parallel.hpp"
#include "../../core/tensor.hpp"
#include "../epilogue.hpp"

namespace bonsai::cpu {

/// Scratch an epilogue keeps between forward and backward.
template <class T>
struct EpilogueState {
  Workspace<T> pre;       // (T, out) pre-activation acc + b, when GELU follows
  Workspace<T> dacc;      // (T, out) d(acc), when it differs from dy
  Workspace<T> partials;  // (threads, out) dbias partial sums
  Workspace<T> rowbuf;    // (threads, out) one row of d(pre) per thread
  index_t tokens = 0;
  index_t width = 0;
};

namespace detail {

template <class T>
using RowArray = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>;
template <class T>
using ConstRowArray = Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>;
template <class T>
using RowMat = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using ConstRowMat = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

/// Runs f(thread, row_begin, row_end) on contiguous row ranges, one per thread.
template <class F>
void for_row_ranges(index_t rows, index_t work_per_row, F&& f) {
  const int threads = rows * work_per_row >= (1 << 15) ? std::max(1, max_threads()) : 1;
  const auto run = [&](int t, int nt) {
    const index_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    if (begin < end) f(t, begin, end);
  };
#if defined(_OPENMP)
  if (threads > 1) {
#  pragma omp parallel num_threads(threads)
    run(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  run(0, 1);
}

/// y = gelu(u + b).
template <class T>
void gelu_row(const T* u, const T* b, T* y, index_t n) {
  using epilogue::gelu_k0, epilogue::gelu_k1;
  const auto v = (ConstRowArray<T>(u, n) + ConstRowArray<T>(b, n)).eval();
  RowArray<T>(y, n) = T(0.5) * v * (T(1) + (T(gelu_k0) * (v + T(gelu_k1) * v.cube())).tanh());
}

/// g = dy * gelu'(u + b).
template <class T>
void gelu_grad_row(const T* dy, const T* u, const T* b, T* g, index_t n) {
  using epilogue::gelu_k0, epilogue::gelu_k1;
  const auto v = (ConstRowArray<T>(u, n) + ConstRowArray<T>(b, n)).eval();
  const auto th = (T(gelu_k0) * (v + T(gelu_k1) * v.cube())).tanh().eval();
  RowArray<T>(g, n) = ConstRowArray<T>(dy, n) *
                      (T(0.5) * (T(1) + th) +
                       T(0.5) * v * (T(1) - th.square()) * T(gelu_k0) * (T(1) + T(3 * gelu_k1) * v.square()));
}

}  // namespace detail

/// y = epi(layout(acc)): acc (T, out) read through `layout`, y (T, out). When acc is y itself
/// (identity layout, no GELU) the bias is added in place. With GELU, layout(acc) is kept in
/// state.pre (without the bias, so a GEMM can write it directly and the pass only reads it).
template <class T, class Epi>
void epilogue_forward(const Epi& epi, const MatrixView<const T, Host>& acc, RowLayout layout,
                      const MatrixView<T, Host>& y, EpilogueState<T>& state) {
  const index_t rows = y.rows(), n = y.cols();
  state.tokens = rows;
  state.width = n;
  constexpr bool gelu = epilogue::has_gelu<Epi>;
  const MatrixView<T, Host> dst = gelu ? state.pre.matrix(rows, n) : y;  // holds layout(acc)
  const bool move = !layout.is_identity() || acc.data() != dst.data() || acc.ld() != dst.ld();
  if (!move && !epilogue::has_bias<Epi>) return;
  detail::for_row_ranges(rows, n, [&](int, index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const T* s = acc.data() + r * acc.ld();
      T* d = dst.data() + r * dst.ld();
      if (!layout.is_identity())
        detail::RowMat<T>(d, layout.b, layout.a) = detail::ConstRowMat<T>(s, layout.a, layout.b).transpose();
      else if (move)
        std::copy(s, s + n, d);
      if constexpr (gelu)
        detail::gelu_row(d, epi.bias.data(), y.data() + r * y.ld(), n);
      else if constexpr (epilogue::has_bias<Epi>)
        detail::RowArray<T>(d, n) += detail::ConstRowArray<T>(epi.bias.data(), n);
    }
  });
}

/// Backward of epilogue_forward: returns d(acc) in acc's layout. Without GELU and with the
/// identity layout that is dy itself (nothing is written); otherwise it is written to `target`
/// (T, out) — or nowhere when `target` is empty and only dbias is wanted. epi.dbias += sums.
template <class T, class Epi>
MatrixView<const T, Host> epilogue_backward(const Epi& epi, const MatrixView<const T, Host>& dy,
                                            RowLayout layout, const MatrixView<T, Host>& target,
                                            EpilogueState<T>& state) {
  const index_t rows = dy.rows(), n = dy.cols();
  constexpr bool gelu = epilogue::has_gelu<Epi>;
  bool want_dbias = false;
  if constexpr (epilogue::has_bias<Epi>) want_dbias = !epi.dbias.empty();
  const bool passthrough = !gelu && layout.is_identity();
  if (passthrough && !want_dbias) return dy;
  const bool write = !passthrough && !target.empty();

  const int threads = std::max(1, max_threads());
  T* partials = nullptr;
  if (want_dbias) {
    partials = state.partials.reserve(index_t(threads) * n);
    std::fill(partials, partials + index_t(threads) * n, T(0));
  }
  const bool need_rowbuf = gelu && (!layout.is_identity() || !write);
  T* rowbufs = need_rowbuf ? state.rowbuf.reserve(index_t(threads) * n) : nullptr;
  const T* pre = gelu ? state.pre.data() : nullptr;
  if (gelu)
    BONSAI_CHECK(state.tokens == rows && state.width == n,
                 "backward: the epilogue saved ", shape{state.tokens, state.width},
                 " in forward but dy has shape ", shape{rows, n});

  detail::for_row_ranges(rows, n, [&](int t, index_t r0, index_t r1) {
    T* part = partials ? partials + index_t(t) * n : nullptr;
    T* rowbuf = rowbufs ? rowbufs + index_t(t) * n : nullptr;
    for (index_t r = r0; r < r1; ++r) {
      const T* g = dy.data() + r * dy.ld();
      T* out = write ? target.data() + r * target.ld() : nullptr;
      if constexpr (gelu) {
        T* gbuf = layout.is_identity() && out ? out : rowbuf;
        detail::gelu_grad_row(g, pre + r * n, epi.bias.data(), gbuf, n);
        g = gbuf;
      }
      if (part) detail::RowArray<T>(part, n) += detail::ConstRowArray<T>(g, n);
      if (out && !layout.is_identity())
        detail::RowMat<T>(out, layout.a, layout.b) = detail::ConstRowMat<T>(g, layout.b, layout.a).transpose();
    }
  });
  if constexpr (epilogue::has_bias<Epi>) {
    if (want_dbias) {
      auto db = detail::RowArray<T>(epi.dbias.data(), n);
      for (int t = 0; t < threads; ++t) db += detail::ConstRowArray<T>(partials + index_t(t) * n, n);
    }
  }
  if (passthrough) return dy;
  return target;
}

}  // namespace bonsai::cpu
