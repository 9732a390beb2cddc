// bonsai/structured/self_guided.hpp — SelfGuided<S>: self-guided training of a structured map S
// (spec §6), o = a W x + (1 - a) S x, with W a trainable dense guide of shape (out, in) that
// starts as S.to_dense() and a the guide's weight, blended from 1 to 0 over training. Backward
// scales S's gradients by (1 - a) and W's by a. a = 1 computes only W x; a = 0 computes only
// S x (what reduce-flop draws when it skips the guide). Parameters are S's under their own
// names followed by "guide" (out, in), so release() leaves S's names unchanged. Params
// S + in*out; forward FLOPs those of the paths a selects.
#pragma once

#include <string>

#include "dense.hpp"
#include "map.hpp"

namespace bonsai {

template <LinearMap S>
class SelfGuided {
 public:
  using scalar_type = scalar_of<S>;
  using Structured = S;
  static constexpr index_t static_in = S::static_in;
  static constexpr index_t static_out = S::static_out;

  explicit SelfGuided(const S& structured, double alpha = 1.0)
      : m_structured(structured), m_guide(structured.in_features(), structured.out_features()) {
    set_alpha(alpha);
  }

  index_t in_features() const noexcept { return m_structured.in_features(); }
  index_t out_features() const noexcept { return m_structured.out_features(); }
  index_t param_count() const noexcept { return m_structured.param_count() + m_guide.param_count(); }
  /// FLOPs of what forward computes at the current a.
  index_t flops(index_t tokens) const noexcept {
    return (m_alpha < 1 ? m_structured.flops(tokens) : 0) + (m_alpha > 0 ? m_guide.flops(tokens) : 0);
  }
  std::vector<ParamInfo> parameters() const {
    std::vector<ParamInfo> out = m_structured.parameters();
    out.push_back({"guide", {out_features(), in_features()}});
    return out;
  }

  /// W_merged = a W + (1 - a) S_merged: (out, in).
  Matrix<scalar_type> to_dense() const {
    const scalar_type a(m_alpha);
    Matrix<scalar_type> w = m_structured.to_dense();
    as_eigen(w) = a * as_eigen(m_guide.weight()) + (scalar_type(1) - a) * as_eigen(w);
    return w;
  }

  /// Binds S's parameters, then the guide after them.
  void bind(scalar_type* data) noexcept {
    m_structured.bind(data);
    m_guide.bind(data ? data + m_structured.param_count() : nullptr);
  }
  bool is_bound() const noexcept { return m_structured.is_bound() && m_guide.is_bound(); }

  /// The guide's weight a in [0, 1].
  double alpha() const noexcept { return m_alpha; }
  void set_alpha(double alpha) {
    BONSAI_CHECK(alpha >= 0 && alpha <= 1, "SelfGuided: alpha = ", alpha, " is outside [0, 1]");
    m_alpha = alpha;
  }

  /// The structured map S, bound to the same storage; what the layer becomes when released.
  const S& structured() const noexcept { return m_structured; }
  /// The dense guide W (out, in) as a Dense map bound to its storage.
  const Dense<scalar_type>& guide() const noexcept { return m_guide; }

 private:
  S m_structured;
  Dense<scalar_type> m_guide;
  double m_alpha = 1.0;
};

template <class M>
inline constexpr bool is_self_guided = false;
template <class S>
inline constexpr bool is_self_guided<SelfGuided<S>> = true;

}  // namespace bonsai
