// bonsai/structured/self_guided.hpp — SelfGuided<S>: self-guided training of a structured map S
// (spec §6), o = a W x + (1 - a) S x, with W a trainable dense guide of shape (out, in) that
// starts as S.to_dense() and a the guide's weight, blended from 1 to 0 over training. Backward
// scales S's gradients by (1 - a) and W's by a. a = 1 computes only W x; a = 0 computes only
// S x (what reduce-flop draws when it skips the guide). Parameters are S's under their own
// names followed by "guide" (out, in), so release() leaves S's names unchanged. Params
// S + in*out; forward FLOPs those of the paths a selects.
#pragma once

#include "with_dense.hpp"

namespace bonsai {

template <LinearMap S>
class SelfGuided : public detail::WithDense<S> {
  using Base = detail::WithDense<S>;

 public:
  using typename Base::scalar_type;

  explicit SelfGuided(const S& structured, double alpha = 1.0) : Base(structured, "guide") {
    set_alpha(alpha);
  }

  /// FLOPs of what forward computes at the current a.
  index_t flops(index_t tokens) const noexcept {
    return (m_alpha < 1 ? this->m_structured.flops(tokens) : 0) + (m_alpha > 0 ? this->m_dense.flops(tokens) : 0);
  }

  /// W_merged = a W + (1 - a) S_merged: (out, in).
  Matrix<scalar_type> to_dense() const {
    const scalar_type a(m_alpha);
    Matrix<scalar_type> w = this->m_structured.to_dense();
    as_eigen(w) = a * as_eigen(this->m_dense.weight()) + (scalar_type(1) - a) * as_eigen(w);
    return w;
  }

  /// The guide's weight a in [0, 1].
  double alpha() const noexcept { return m_alpha; }
  void set_alpha(double alpha) {
    BONSAI_CHECK(alpha >= 0 && alpha <= 1, "SelfGuided: alpha = ", alpha, " is outside [0, 1]");
    m_alpha = alpha;
  }

  /// The dense guide W (out, in) as a Dense map bound to its storage.
  const Dense<scalar_type>& guide() const noexcept { return this->m_dense; }

 private:
  double m_alpha = 1.0;
};

}  // namespace bonsai
