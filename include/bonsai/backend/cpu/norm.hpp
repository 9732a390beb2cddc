// bonsai/backend/cpu/norm.hpp — row normalisations of activations x (N, C), one row per token:
//   LayerNorm  y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps)
//   RMSNorm    y = x * rstd * w,               rstd = 1 / sqrt(mean(x^2) + eps)
// Forward keeps mean and rstd (N) for backward. Backward assigns or adds dx (add: the residual
// stream's gradient collects it in place) and adds dw, db through per-thread partial sums
// combined in thread order (deterministic for a fixed thread count).
// An optional mask c (C, values in [0, 1]; MSG's growth masks) weights the statistics and the
// output: mean = sum c x / sum c, var = sum c (x - mean)^2 / sum c (RMSNorm: mean(x^2) likewise),
// y = c * norm(x); with c = [1..1, 0..0] the first units see exactly the narrower norm, and
// c = 1 is the plain norm up to rounding.
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

/// The mask's weight sum (C without a mask); a mask must keep some weight.
template <class T>
T mask_weight(const T* mask, index_t c, const char* who) {
  if (!mask) return T(c);
  T s = 0;
  for (index_t j = 0; j < c; ++j) s += mask[j];
  BONSAI_CHECK(s > T(0), who, ": the mask has no weight (every unit masked to 0)");
  return s;
}

/// Shared forward pass (b = null for RMSNorm).
template <class T, bool Centered, bool Masked>
void norm_forward(const MatrixView<const T, Host>& x, const T* w, const T* b,
                  const MatrixView<T, Host>& y, T eps, NormState<T>& st, const T* mask) {
  const index_t n = x.rows(), c = x.cols();
  const T weight = mask_weight(mask, c, Centered ? "layernorm_forward" : "rmsnorm_forward");
  T* mean = Centered ? st.mean.reserve(n) : nullptr;
  T* rstd = st.rstd.reserve(n);
  for_row_ranges(n, c, [&](int, index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const T* xr = x.data() + r * x.ld();
      T* yr = y.data() + r * y.ld();
      T mu = 0;
      if constexpr (Centered) {
        for (index_t j = 0; j < c; ++j) mu += Masked ? mask[j] * xr[j] : xr[j];
        mu /= weight;
      }
      T var = 0;
      for (index_t j = 0; j < c; ++j) {
        const T v = (xr[j] - mu) * (xr[j] - mu);
        var += Masked ? mask[j] * v : v;
      }
      const T rs = T(1) / std::sqrt(var / weight + eps);
      for (index_t j = 0; j < c; ++j) {
        const T v = Centered ? (xr[j] - mu) * rs * w[j] + b[j] : xr[j] * rs * w[j];
        yr[j] = Masked ? mask[j] * v : v;
      }
      if constexpr (Centered) mean[r] = mu;
      rstd[r] = rs;
    }
  });
}

/// Shared backward pass: with xhat = (x - mean) * rstd (mean = 0 for RMSNorm), g = c dy w and
/// S = sum c, dx = rstd * (g - c sum(g) / S [LayerNorm only] - c xhat sum(g xhat) / S).
template <class T, bool Centered, bool Masked>
void norm_backward(const MatrixView<const T, Host>& dy, const MatrixView<const T, Host>& x,
                   const T* w, const MatrixView<T, Host>& dx, T* dw, T* db, bool accumulate_dx,
                   NormState<T>& st, const T* mask) {
  const index_t n = x.rows(), c = x.cols();
  const T weight = mask_weight(mask, c, "norm backward");
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
      const T* dyr = dy.data() + r * dy.ld();
      T* d = dx.data() + r * dx.ld();
      const T mu = Centered ? mean[r] : T(0), rs = rstd[r];
      T sum_g = 0, sum_gx = 0;
      for (index_t j = 0; j < c; ++j) {
        const T xhat = (xr[j] - mu) * rs;
        const T g = Masked ? mask[j] * dyr[j] : dyr[j];
        const T gw = g * w[j];
        sum_g += gw;
        sum_gx += gw * xhat;
        pdw[j] += g * xhat;
        if constexpr (Centered) pdb[j] += g;
      }
      const T mean_g = Centered ? sum_g / weight : T(0), mean_gx = sum_gx / weight;
      for (index_t j = 0; j < c; ++j) {
        const T xhat = (xr[j] - mu) * rs;
        const T gw = (Masked ? mask[j] * dyr[j] : dyr[j]) * w[j];
        const T v = Masked ? rs * (gw - mask[j] * (mean_g + xhat * mean_gx))
                           : rs * (gw - mean_g - xhat * mean_gx);
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

/// LayerNorm forward: x, y (N, C); w, b (C); mask (C) or null. y may not alias x.
template <class T>
void layernorm_forward(const MatrixView<const T, Host>& x, const T* w, const T* b,
                       const MatrixView<T, Host>& y, T eps, NormState<T>& st,
                       const T* mask = nullptr) {
  detail::check_norm_shapes("layernorm_forward", x, y, x.cols());
  if (mask) detail::norm_forward<T, true, true>(x, w, b, y, eps, st, mask);
  else detail::norm_forward<T, true, false>(x, w, b, y, eps, st, mask);
}

/// LayerNorm backward: dx = (or +=) dL/dx; dw, db += their sums over tokens; `mask` as in
/// forward.
template <class T>
void layernorm_backward(const MatrixView<const T, Host>& dy, const MatrixView<const T, Host>& x,
                        const T* w, const MatrixView<T, Host>& dx, T* dw, T* db,
                        bool accumulate_dx, NormState<T>& st, const T* mask = nullptr) {
  if (mask) detail::norm_backward<T, true, true>(dy, x, w, dx, dw, db, accumulate_dx, st, mask);
  else detail::norm_backward<T, true, false>(dy, x, w, dx, dw, db, accumulate_dx, st, mask);
}

/// RMSNorm forward: x, y (N, C); w (C); mask (C) or null.
template <class T>
void rmsnorm_forward(const MatrixView<const T, Host>& x, const T* w, const MatrixView<T, Host>& y,
                     T eps, NormState<T>& st, const T* mask = nullptr) {
  detail::check_norm_shapes("rmsnorm_forward", x, y, x.cols());
  if (mask) detail::norm_forward<T, false, true>(x, w, nullptr, y, eps, st, mask);
  else detail::norm_forward<T, false, false>(x, w, nullptr, y, eps, st, mask);
}

/// RMSNorm backward: dx = (or +=) dL/dx; dw += its sum over tokens; `mask` as in forward.
template <class T>
void rmsnorm_backward(const MatrixView<const T, Host>& dy, const MatrixView<const T, Host>& x,
                      const T* w, const MatrixView<T, Host>& dx, T* dw, bool accumulate_dx,
                      NormState<T>& st, const T* mask = nullptr) {
  if (mask) detail::norm_backward<T, false, true>(dy, x, w, dx, dw, nullptr, accumulate_dx, st, mask);
  else detail::norm_backward<T, false, false>(dy, x, w, dx, dw, nullptr, accumulate_dx, st, mask);
}

}  // namespace bonsai::cpu
