// bonsai/nn/norm.hpp — Norm<T, Space>: the per-token normalisation of a block, LayerNorm
// (x - mean) * rstd * w + b or RMSNorm x * rstd * w, chosen per model (GptConfig::norm).
// Parameters "<prefix>weight" (C), initialised to 1, and "<prefix>bias" (C, LayerNorm only), 0.
// An optional growth mask c (C) weights the statistics and scales the output (nn/growth_mask.hpp).
#pragma once

#include <string>

#include "../backend/cpu.hpp"
#include "arena.hpp"
#include "config.hpp"

namespace bonsai {

template <class T, class Space = Host>
class Norm {
 public:
  using Arena = ParamArena<T, Space>;
  using Real = real_t<T>;
  struct Context {
    MatrixView<const T, Space> x;  // (N, C), the caller's input, kept for backward
    const T* mask = nullptr;       // (C) or null, the forward's mask
    NormState<T, Space> state;
  };

  Norm() = default;
  Norm(NormKind kind, index_t width, double eps) : m_kind(kind), m_width(width), m_eps(Real(eps)) {}

  void declare(Arena& arena, const std::string& prefix) {
    m_w = arena.add(prefix + "weight", {m_width});
    if (m_kind == NormKind::layernorm) m_b = arena.add(prefix + "bias", {m_width});
  }
  /// Sets the gains to 1 and the biases to 0.
  void init(Arena& arena) const {
    std::fill_n(arena.values() + m_w, m_width, T(1));
    if (m_kind == NormKind::layernorm) std::fill_n(arena.values() + m_b, m_width, T(0));
  }

  /// y = norm(x): x, y (N, C); `mask` (C) or null, kept for backward.
  void forward(Arena& arena, Context& ctx, const MatrixView<const T, Space>& x,
               const MatrixView<T, Space>& y, const T* mask = nullptr) const {
    ctx.x = x;
    ctx.mask = mask;
    const T* w = arena.values() + m_w;
    if (m_kind == NormKind::layernorm)
      Ops<Space>::template layernorm_forward<T>(x, w, arena.values() + m_b, y, m_eps, ctx.state, mask);
    else
      Ops<Space>::template rmsnorm_forward<T>(x, w, y, m_eps, ctx.state, mask);
  }

  /// dx += (or =) dL/dx from dy (N, C); parameter gradients +=.
  void backward(Arena& arena, Context& ctx, const MatrixView<const T, Space>& dy,
                const MatrixView<T, Space>& dx, bool accumulate) const {
    const T* w = arena.values() + m_w;
    T* dw = arena.grads() + m_w;
    if (m_kind == NormKind::layernorm)
      Ops<Space>::template layernorm_backward<T>(dy, ctx.x, w, dx, dw, arena.grads() + m_b, accumulate,
                                       ctx.state, ctx.mask);
    else
      Ops<Space>::template rmsnorm_backward<T>(dy, ctx.x, w, dx, dw, accumulate, ctx.state, ctx.mask);
  }

  index_t width() const noexcept { return m_width; }
  NormKind kind() const noexcept { return m_kind; }

 private:
  NormKind m_kind = NormKind::layernorm;
  index_t m_width = 0;
  Real m_eps = Real(1e-5);
  index_t m_w = 0, m_b = 0;  // arena offsets
};

}  // namespace bonsai
