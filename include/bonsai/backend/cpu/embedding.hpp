// bonsai/backend/cpu/embedding.hpp — token (+ learned position) embedding:
//   y[b*T + t] = wte[tok[b, t]] (+ wpe[t]),     y (B*T, C), wte (V, C), wpe (T_max, C)
// Backward scatters dy rows into dwte (and dwpe). Threads split the C columns, so every
// gradient element is summed by one thread in token order: race-free and deterministic.
#pragma once

#include <cstdint>

#include "../../core/parallel.hpp"
#include "../../core/tensor.hpp"

namespace bonsai::cpu {

namespace detail {
inline void check_tokens(const std::int32_t* tok, index_t n, index_t vocab) {
  for (index_t i = 0; i < n; ++i)
    BONSAI_CHECK(tok[i] >= 0 && tok[i] < vocab, "embedding: token id ", tok[i], " at position ",
                 i, " is outside the vocabulary [0, ", vocab, ")");
}
}  // namespace detail

/// y = wte[tok] + wpe[pos0 + t]; tok (B*T) with T = seq; wpe may be empty (rotary models).
template <class T>
void embedding_forward(const std::int32_t* tok, index_t batch, index_t seq, index_t pos0,
                       const MatrixView<const T, Host>& wte, const MatrixView<const T, Host>& wpe,
                       const MatrixView<T, Host>& y) {
  const index_t n = batch * seq, c = wte.cols();
  BONSAI_CHECK(y.rows() == n && y.cols() == c, "embedding_forward: y has shape ",
               shape{y.rows(), y.cols()}, " but ", batch, " x ", seq, " tokens of width ", c,
               " need ", shape{n, c});
  BONSAI_CHECK(wpe.empty() || (wpe.cols() == c && pos0 + seq <= wpe.rows()),
               "embedding_forward: positions [", pos0, ", ", pos0 + seq,
               ") exceed the position table of shape ", shape{wpe.rows(), wpe.cols()});
  detail::check_tokens(tok, n, wte.rows());
  parallel_for(n, [&](index_t i) {
    const T* e = wte.data() + tok[i] * wte.ld();
    T* yr = y.data() + i * y.ld();
    if (wpe.empty()) {
      for (index_t j = 0; j < c; ++j) yr[j] = e[j];
    } else {
      const T* p = wpe.data() + (pos0 + i % seq) * wpe.ld();
      for (index_t j = 0; j < c; ++j) yr[j] = e[j] + p[j];
    }
  }, c);
}

/// dwte[tok] += dy rows; dwpe[t] += dy rows (when dwpe is not empty).
template <class T>
void embedding_backward(const std::int32_t* tok, index_t batch, index_t seq,
                        const MatrixView<const T, Host>& dy, const MatrixView<T, Host>& dwte,
                        const MatrixView<T, Host>& dwpe) {
  const index_t n = batch * seq, c = dy.cols();
  constexpr index_t chunk = 64;  // columns per task
  parallel_for((c + chunk - 1) / chunk, [&](index_t k) {
    const index_t j0 = k * chunk, j1 = std::min(c, j0 + chunk);
    for (index_t i = 0; i < n; ++i) {
      const T* g = dy.data() + i * dy.ld();
      T* e = dwte.data() + tok[i] * dwte.ld();
      for (index_t j = j0; j < j1; ++j) e[j] += g[j];
      if (!dwpe.empty()) {
        T* p = dwpe.data() + (i % seq) * dwpe.ld();
        for (index_t j = j0; j < j1; ++j) p[j] += g[j];
      }
    }
  }, n * chunk);
}

}  // namespace bonsai::cpu
