// bonsai/backend/cpu/norm.hpp — row normalisations of activations x (N, C), one row per token:
//   LayerNorm  y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps)
//   RMSNorm    y = x * rstd * w,               rstd = 1 / sqrt(mean(x^2) + eps)
// Forward keeps mean and rstd (N) for backward. Backward assigns or adds dx (add: the residual
// stream's gradient collects it in place) and adds dw, db through per-thread partial sums
// combined in thread order (deterministic for a fixed thread count).
#pragma once

#include <algorithm>
#include <cmath>

#include "../../core/tensor.hpp"
#include "epilogue.hpp"

namespace bonsai::cpu {

/// What a norm saves for backward.
template <class T>
struct NormState {
  Workspace<T> mean;      // (N), LayerNorm only
  Workspace<T> rstd;      // (N)
  Workspace<T> partials;  // (threads, 2C) dw, db partial sums
};

namespace detail {

template <class T>
void check_norm_shapes(const char* who, const MatrixView<const T, Host>& x,
                       const MatrixView<T, Host>& y, index_t c) {
  BONSAI_CHECK(x.cols() == c && y.rows() == x.rows() && y.cols() == c, who, ": x has shape ",
               shape{x.rows(), x.cols()}, " and y has shape ", shape{y.rows(), y.cols()},
               " but the norm has ", c, " features");
  BONSAI_CHECK(x.stride(1) == 1 && y.stride(1) == 1, who, ": rows must be contiguous");
}

/// Shared backward pass: with xhat = (x - mean) * rstd (mean = 0 for RMSNorm),
/// g = dy * w, dx = rstd * (g - mean(g) [LayerNorm only] - xhat * mean(g * xhat)).
template <class T, bool Centered>
void norm_backward(const MatrixView<const T, Host>& dy, const MatrixView<const T, Host>& x,
                   const T* w, const MatrixView<T, Host>& dx, T* dw, T* db, bool accumulate_dx,
                   NormState<T>& st) {
  const index_t n = x.rows(), c = x.cols();
  const int threads = std::max(1, max_threads());
  T* partials = st.partials.reserve(index_t(threads) * 2 * c);
  std::fill(partials, partials + index_t(threads) * 2 * c, T(0));
  const T* mean = Centered ? st.mean.data() : nullptr;
  const T* rstd = st.rstd.data();
  for_row_ranges(n, c, [&](int t, index_t r0, index_t r1) {
    T* pdw = partials + index_t(t) * 2 * c;
    T* pdb = pdw + c;
    for (index_t r = r0; r < r1; ++r) {
      const T* xr = x.data() + r * x.ld();
      const T* g = dy.data() + r * dy.ld();
      T* d = dx.data() + r * dx.ld();
      const T mu = Centered ? mean[r] : T(0), rs = rstd[r];
      T sum_g = 0, sum_gx = 0;
      for (index_t j = 0; j < c; ++j) {
        const T xhat = (xr[j] - mu) * rs;
        const T gw = g[j] * w[j];
        sum_g += gw;
        sum_gx += gw * xhat;
        pdw[j] += g[j] * xhat;
        if constexpr (Centered) pdb[j] += g[j];
      }
      const T mean_g = Centered ? sum_g / T(c) : T(0), mean_gx = sum_gx / T(c);
      for (index_t j = 0; j < c; ++j) {
        const T xhat = (xr[j] - mu) * rs;
        const T v = rs * (g[j] * w[j] - mean_g - xhat * mean_gx);
        d[j] = accumulate_dx ? d[j] + v : v;
      }
    }
  });
  for (int t = 0; t < threads; ++t) {
    const T* pdw = partials + index_t(t) * 2 * c;
    for (index_t j = 0; j < c; ++j) dw[j] += pdw[j];
    if (db)
      for (index_t j = 0; j < c; ++j) db[j] += pdw[c + j];
  }
}

}  // namespace detail

/// LayerNorm forward: x, y (N, C); w, b (C). y may not alias x.
template <class T>
void layernorm_forward(const MatrixView<const T, Host>& x, const T* w, const T* b,
                       const MatrixView<T, Host>& y, T eps, NormState<T>& st) {
  const index_t n = x.rows(), c = x.cols();
  detail::check_norm_shapes("layernorm_forward", x, y, c);
  T* mean = st.mean.reserve(n);
  T* rstd = st.rstd.reserve(n);
  detail::for_row_ranges(n, c, [&](int, index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const T* xr = x.data() + r * x.ld();
      T* yr = y.data() + r * y.ld();
      T mu = 0;
      for (index_t j = 0; j < c; ++j) mu += xr[j];
      mu /= T(c);
      T var = 0;
      for (index_t j = 0; j < c; ++j) var += (xr[j] - mu) * (xr[j] - mu);
      var /= T(c);
      const T rs = T(1) / std::sqrt(var + eps);
      for (index_t j = 0; j < c; ++j) yr[j] = (xr[j] - mu) * rs * w[j] + b[j];
      mean[r] = mu;
      rstd[r] = rs;
    }
  });
}

/// LayerNorm backward: dx = (or +=) dL/dx; dw, db += their sums over tokens.
template <class T>
void layernorm_backward(const MatrixView<const T, Host>& dy, const MatrixView<const T, Host>& x,
                        const T* w, const MatrixView<T, Host>& dx, T* dw, T* db,
                        bool accumulate_dx, NormState<T>& st) {
  detail::norm_backward<T, true>(dy, x, w, dx, dw, db, accumulate_dx, st);
}

/// RMSNorm forward: x, y (N, C); w (C).
template <class T>
void rmsnorm_forward(const MatrixView<const T, Host>& x, const T* w, const MatrixView<T, Host>& y,
                     T eps, NormState<T>& st) {
  const index_t n = x.rows(), c = x.cols();
  detail::check_norm_shapes("rmsnorm_forward", x, y, c);
  T* rstd = st.rstd.reserve(n);
  detail::for_row_ranges(n, c, [&](int, index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const T* xr = x.data() + r * x.ld();
      T* yr = y.data() + r * y.ld();
      T ms = 0;
      for (index_t j = 0; j < c; ++j) ms += xr[j] * xr[j];
      const T rs = T(1) / std::sqrt(ms / T(c) + eps);
      for (index_t j = 0; j < c; ++j) yr[j] = xr[j] * rs * w[j];
      rstd[r] = rs;
    }
  });
}

/// RMSNorm backward: dx = (or +=) dL/dx; dw += its sum over tokens.
template <class T>
void rmsnorm_backward(const MatrixView<const T, Host>& dy, const MatrixView<const T, Host>& x,
                      const T* w, const MatrixView<T, Host>& dx, T* dw, bool accumulate_dx,
                      NormState<T>& st) {
  detail::norm_backward<T, false>(dy, x, w, dx, dw, nullptr, accumulate_dx, st);
}

}  // namespace bonsai::cpu
