// bonsai/backend/epilogue.hpp — what a linear map's output stage computes after the matrix
// product, described once and fused by each backend: None (y = acc), Bias (y = acc + b) and
// BiasGelu (y = gelu_tanh(acc + b), gelu_tanh(u) = u/2 (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3)))).
// Backward turns dy into d(acc) and adds the column sums of d(acc + b) into dbias when given.
#pragma once

#include <cmath>
#include <type_traits>

#include "../core/view.hpp"

namespace bonsai {

/// The layout in which an output stage moves a row: identity, or the transpose of a row-major
/// (a, b) view as Shuffle(a, b) does (a or b = 1 is the identity too). Every backend's fused
/// epilogue takes one, so a product ending in a Shuffle permutes in its epilogue pass.
struct RowLayout {
  index_t a = 0, b = 0;
  static RowLayout identity() { return {}; }
  static RowLayout transposed(index_t a, index_t b) { return {a, b}; }
  bool is_identity() const noexcept { return a == 0 || a == 1 || b == 1; }
};

}  // namespace bonsai

namespace bonsai::epilogue {

/// y = acc.
struct None {};

/// y = acc + bias. bias: (out); dbias: (out), optional, accumulated (+=) by backward.
template <class T, class Space = Host>
struct Bias {
  VectorView<const T, Space> bias;
  VectorView<T, Space> dbias{};
};

/// y = gelu_tanh(acc + bias). The pre-activation acc + bias is kept in the context for
/// backward.
template <class T, class Space = Host>
struct BiasGelu {
  VectorView<const T, Space> bias;
  VectorView<T, Space> dbias{};
};

template <class E>
inline constexpr bool has_bias = false;
template <class T, class S>
inline constexpr bool has_bias<Bias<T, S>> = true;
template <class T, class S>
inline constexpr bool has_bias<BiasGelu<T, S>> = true;

template <class E>
inline constexpr bool has_gelu = false;
template <class T, class S>
inline constexpr bool has_gelu<BiasGelu<T, S>> = true;

/// sqrt(2 / pi) and the cubic coefficient of the tanh approximation.
inline constexpr double gelu_k0 = 0.7978845608028654;
inline constexpr double gelu_k1 = 0.044715;

/// Scalar reference gelu_tanh(u) and its derivative (tests and fallbacks).
template <class T>
BONSAI_HOST_DEVICE T gelu(T u) {
  return T(0.5) * u * (T(1) + std::tanh(T(gelu_k0) * (u + T(gelu_k1) * u * u * u)));
}
template <class T>
BONSAI_HOST_DEVICE T gelu_grad(T u) {
  const T th = std::tanh(T(gelu_k0) * (u + T(gelu_k1) * u * u * u));
  return T(0.5) * (T(1) + th) +
         T(0.5) * u * (T(1) - th * th) * T(gelu_k0) * (T(1) + T(3 * gelu_k1) * u * u);
}

}  // namespace bonsai::epilogue
