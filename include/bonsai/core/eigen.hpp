// bonsai/core/eigen.hpp — zero-copy Eigen maps of host matrix views (row-major, any leading
// dimension), the bridge between bonsai's views and Eigen's algorithms.
#pragma once

#include <Eigen/Core>
#include <type_traits>

#include "tensor.hpp"

namespace bonsai {

template <class T>
using EigenRowMajor = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Eigen::Map of a host matrix view with unit column stride: (rows, cols), leading dimension ld.
template <class T>
auto as_eigen(const MatrixView<T, Host>& m) {
  BONSAI_CHECK(m.stride(1) == 1, "as_eigen: columns must be contiguous (stride ", m.stride(1), ")");
  using Base = std::conditional_t<std::is_const_v<T>, const EigenRowMajor<T>, EigenRowMajor<T>>;
  return Eigen::Map<Base, Eigen::Unaligned, Eigen::OuterStride<>>(m.data(), m.rows(), m.cols(),
                                                                   Eigen::OuterStride<>(m.ld()));
}

/// Eigen::Map of an owning host matrix.
template <class T>
auto as_eigen(Tensor<T, 2, Host>& m) { return as_eigen(m.view()); }
template <class T>
auto as_eigen(const Tensor<T, 2, Host>& m) { return as_eigen(m.view()); }

/// A new host matrix holding a copy of an Eigen expression.
template <class Derived>
auto to_matrix(const Eigen::MatrixBase<Derived>& e) {
  using T = typename Derived::Scalar;
  Tensor<T, 2, Host> out(e.rows(), e.cols());
  as_eigen(out) = e;
  return out;
}

}  // namespace bonsai
