// bonsai/backend/cpu/elementwise.hpp — the memory-bound elementwise steps of a transformer layer
// on the CPU (the host side of backend/cuda/elementwise.cuh), over (N, C) matrices with
// contiguous rows, any leading dimension:
//   add             y = x + b                      (residual add, gradient sums; y may be x or b)
//   add_scaled      y = x + b diag(c)              (a residual branch under a growth mask c (C))
//   scale_columns   y <- y diag(c)                 (a growth mask on activations or gradients)
//   scaled_columns  y = x diag(c)
//   gelu            h = gelu(u),  du = dh gelu'(u) (the tanh approximation of epilogue.hpp)
//   SwiGLU          h = silu(g) u,  silu(g) = g sigmoid(g)
//                   dg = dh u silu'(g),  du = dh silu(g),  silu'(g) = s (1 + g (1 - s)), s = sigmoid(g)
#pragma once

#include <cmath>

#include "../../core/eigen.hpp"
#include "../../core/parallel.hpp"
#include "../../core/tensor.hpp"
#include "../epilogue.hpp"

namespace bonsai::cpu {

namespace detail {

/// The column weights c (C) as a row to scale rows by.
template <class T>
auto column_row(const T* c, index_t cols) {
  return Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>(c, cols);
}

/// f(i) for every element i of the contiguous (N, C) operands (leading dimension C).
template <class T, class F>
void for_each_element(const MatrixView<T, Host>& m, F&& f) {
  BONSAI_CHECK(m.stride(1) == 1 && m.ld() == m.cols(), "elementwise: the operands must be "
               "contiguous, got leading dimension ", m.ld(), " for ", m.cols(), " columns");
  parallel_for(m.rows() * m.cols(), f);
}

}  // namespace detail

/// y = x + b, all (N, C); y may be x or b.
template <class T>
void add(const MatrixView<const std::type_identity_t<T>, Host>& x,
         const MatrixView<const std::type_identity_t<T>, Host>& b, const MatrixView<T, Host>& y) {
  as_eigen(y) = as_eigen(x) + as_eigen(b);
}

/// y = x + b diag(c), all (N, C), c (C).
template <class T>
void add_scaled(const MatrixView<const std::type_identity_t<T>, Host>& x,
                const MatrixView<const std::type_identity_t<T>, Host>& b, const T* c,
                const MatrixView<T, Host>& y) {
  as_eigen(y).array() = as_eigen(x).array() + as_eigen(b).array().rowwise() * detail::column_row(c, x.cols());
}

/// y = x diag(c), both (N, C), c (C).
template <class T>
void scaled_columns(const MatrixView<const std::type_identity_t<T>, Host>& x, const T* c,
                    const MatrixView<T, Host>& y) {
  as_eigen(y).array() = as_eigen(x).array().rowwise() * detail::column_row(c, x.cols());
}

/// y(r, j) *= c[j] for every row of y (N, C).
template <class T>
void scale_columns(const MatrixView<T, Host>& y, const T* c) {
  const index_t n = y.rows(), w = y.cols();
  parallel_for(n, [&](index_t r) {
    T* row = y.data() + r * y.ld();
    for (index_t j = 0; j < w; ++j) row[j] *= c[j];
  }, w);
}

/// h = gelu(u), both (N, F) contiguous.
template <class T>
void gelu_forward(const MatrixView<const std::type_identity_t<T>, Host>& u, const MatrixView<T, Host>& h) {
  detail::for_each_element(h, [&](index_t i) { h.data()[i] = epilogue::gelu(u.data()[i]); });
}

/// du = dh gelu'(u), all (N, F) contiguous.
template <class T>
void gelu_backward(const MatrixView<const std::type_identity_t<T>, Host>& dh,
                   const MatrixView<const std::type_identity_t<T>, Host>& u, const MatrixView<T, Host>& du) {
  detail::for_each_element(du, [&](index_t i) { du.data()[i] = dh.data()[i] * epilogue::gelu_grad(u.data()[i]); });
}

/// h = silu(g) u, all (N, F) contiguous.
template <class T>
void swiglu_forward(const MatrixView<const std::type_identity_t<T>, Host>& g,
                    const MatrixView<const std::type_identity_t<T>, Host>& u, const MatrixView<T, Host>& h) {
  detail::for_each_element(h, [&](index_t i) {
    const T a = g.data()[i];
    h.data()[i] = a / (T(1) + std::exp(-a)) * u.data()[i];
  });
}

/// dg = dh u silu'(g), du = dh silu(g) (both =), all (N, F) contiguous.
template <class T>
void swiglu_backward(const MatrixView<const std::type_identity_t<T>, Host>& dh,
                     const MatrixView<const std::type_identity_t<T>, Host>& g,
                     const MatrixView<const std::type_identity_t<T>, Host>& u, const MatrixView<T, Host>& dg,
                     const MatrixView<T, Host>& du) {
  detail::for_each_element(du, [&](index_t i) {
    const T a = g.data()[i], s = T(1) / (T(1) + std::exp(-a)), d = dh.data()[i];
    du.data()[i] = d * a * s;
    dg.data()[i] = d * u.data()[i] * s * (T(1) + a * (T(1) - s));
  });
}

}  // namespace bonsai::cpu
