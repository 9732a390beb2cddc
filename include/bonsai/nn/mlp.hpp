// bonsai/nn/mlp.hpp — Mlp<Up, Down>: the feed-forward block with structured linear maps.
//   gelu:    y = down(gelu_tanh(up(x) + b_up)) + b_down
//   swiglu:  y = down(silu(gate(x) + b_gate) * (up(x) + b_up)) + b_down,  silu(u) = u sigmoid(u)
// Up (d -> F, also the gate's type) and Down (F -> d) are any structured maps; their parameters
// live in the arena as "<prefix>up.<name>", "<prefix>up.bias", "<prefix>gate.*", "<prefix>down.*".
// An optional growth mask c (F) scales the activation's input: gelu(c (up(x) + b_up)), or
// silu(c (gate(x) + b_gate)) (nn/growth_mask.hpp).
#pragma once

#include <cmath>
#include <string>

#include "../backend/cpu.hpp"
#include "arena.hpp"
#include "config.hpp"
#include "ffn_structure.hpp"
#include "growth_mask.hpp"

namespace bonsai {

template <class Up, class Down>
class Mlp {
  static_assert(std::is_same_v<scalar_of<Up>, scalar_of<Down>>,
                "Mlp: the up and down maps must hold the same scalar type");

 public:
  using T = scalar_of<Up>;
  using UpMap = Up;
  using DownMap = Down;

  struct Context {
    bonsai::Context<Up, Host> up, gate;  // what the maps saved
    bonsai::Context<Down, Host> down;
    Workspace<T> u, g, h;  // (N, F): up(x) + b, gate(x) + b (swiglu), the activation
    Workspace<T> dh, du, dg, dx2;  // gradients: (N, F) x 3, (N, d)
    const T* mask = nullptr;       // (F) or null, the forward's mask
  };

  Mlp(const Up& up, const Down& down, ActKind act) : m_up(up), m_gate(up), m_down(down), m_act(act) {
    BONSAI_CHECK(up.out_features() == down.in_features(), "Mlp: up maps to ",
                 up.out_features(), " features but down takes ", down.in_features());
    BONSAI_CHECK(up.in_features() == down.out_features(), "Mlp: up takes ", up.in_features(),
                 " features but down returns ", down.out_features());
  }

  void declare(ParamArena<T>& arena, const std::string& prefix) {
    m_up_off = arena.add_map(prefix + "up.", m_up);
    m_up_bias = arena.add(prefix + "up.bias", {hidden()});
    if (m_act == ActKind::swiglu) {
      m_gate_off = arena.add_map(prefix + "gate.", m_gate);
      m_gate_bias = arena.add(prefix + "gate.bias", {hidden()});
    }
    m_down_off = arena.add_map(prefix + "down.", m_down);
    m_down_bias = arena.add(prefix + "down.bias", {width()});
  }

  /// Weights as the structure's default (dense: N(0, std^2), the down projection's std
  /// `down_std`); biases 0.
  void init(ParamArena<T>& arena, Rng& rng, double stddev, double down_std) const {
    init_ffn_map(arena.bind_values(m_up, m_up_off), rng, stddev);
    if (m_act == ActKind::swiglu) init_ffn_map(arena.bind_values(m_gate, m_gate_off), rng, stddev);
    init_ffn_map(arena.bind_values(m_down, m_down_off), rng, down_std);
  }

  /// y = mlp(x): x, y (N, d); `mask` (F) or null, kept for backward.
  void forward(ParamArena<T>& arena, Context& ctx, const MatrixView<const T, Host>& x,
               const MatrixView<T, Host>& y, const T* mask = nullptr) const {
    const index_t n = x.rows(), f = hidden();
    const auto h = ctx.h.matrix(n, f);  // (N, F)
    ctx.mask = mask;
    if (m_act == ActKind::gelu && mask) {  // unfused: u = c (up(x) + b) is kept for backward
      const auto u = ctx.u.matrix(n, f);  // (N, F)
      bonsai::forward(arena.bind_values(m_up, m_up_off), x, u, ctx.up,
                      epilogue::Bias<T>{bias(arena, m_up_bias, f)});
      detail::mask_columns(u, mask);
      parallel_for(n * f, [&](index_t i) { h.data()[i] = epilogue::gelu(u.data()[i]); });
    } else if (m_act == ActKind::gelu) {
      bonsai::forward(arena.bind_values(m_up, m_up_off), x, h, ctx.up,
                      epilogue::BiasGelu<T>{bias(arena, m_up_bias, f)});
    } else {
      const auto u = ctx.u.matrix(n, f), g = ctx.g.matrix(n, f);  // (N, F)
      bonsai::forward(arena.bind_values(m_up, m_up_off), x, u, ctx.up,
                      epilogue::Bias<T>{bias(arena, m_up_bias, f)});
      bonsai::forward(arena.bind_values(m_gate, m_gate_off), x, g, ctx.gate,
                      epilogue::Bias<T>{bias(arena, m_gate_bias, f)});
      if (mask) detail::mask_columns(g, mask);
      parallel_for(n * f, [&](index_t i) {
        const T a = g.data()[i];
        h.data()[i] = a / (T(1) + std::exp(-a)) * u.data()[i];
      });
    }
    bonsai::forward(arena.bind_values(m_down, m_down_off), MatrixView<const T, Host>(h), y,
                    ctx.down, epilogue::Bias<T>{bias(arena, m_down_bias, width())});
  }

  /// dx = dL/dx (assigned) from dy (N, d); parameter gradients +=.
  void backward(ParamArena<T>& arena, Context& ctx, const MatrixView<const T, Host>& dy,
                const MatrixView<T, Host>& dx) const {
    const index_t n = dy.rows(), f = hidden();
    const auto dh = ctx.dh.matrix(n, f);  // (N, F)
    bonsai::backward(arena.bind_values(m_down, m_down_off), ctx.down, dy, dh,
                     arena.bind_grads(m_down, m_down_off),
                     epilogue::Bias<T>{bias(arena, m_down_bias, width()),
                                       dbias(arena, m_down_bias, width())});
    if (m_act == ActKind::gelu && ctx.mask) {
      const auto u = ctx.u.matrix(n, f), du = ctx.du.matrix(n, f);  // (N, F)
      parallel_for(n * f, [&](index_t i) {
        du.data()[i] = dh.data()[i] * epilogue::gelu_grad(u.data()[i]);
      });
      detail::mask_columns(du, ctx.mask);
      bonsai::backward(arena.bind_values(m_up, m_up_off), ctx.up, MatrixView<const T, Host>(du),
                       dx, arena.bind_grads(m_up, m_up_off),
                       epilogue::Bias<T>{bias(arena, m_up_bias, f), dbias(arena, m_up_bias, f)});
      return;
    }
    if (m_act == ActKind::gelu) {
      bonsai::backward(arena.bind_values(m_up, m_up_off), ctx.up, MatrixView<const T, Host>(dh),
                       dx, arena.bind_grads(m_up, m_up_off),
                       epilogue::BiasGelu<T>{bias(arena, m_up_bias, f), dbias(arena, m_up_bias, f)});
      return;
    }
    const auto u = ctx.u.matrix(n, f), g = ctx.g.matrix(n, f);       // (N, F)
    const auto du = ctx.du.matrix(n, f), dg = ctx.dg.matrix(n, f);   // (N, F)
    parallel_for(n * f, [&](index_t i) {
      const T a = g.data()[i], s = T(1) / (T(1) + std::exp(-a)), d = dh.data()[i];
      du.data()[i] = d * a * s;
      dg.data()[i] = d * u.data()[i] * s * (T(1) + a * (T(1) - s));
    });
    if (ctx.mask) detail::mask_columns(dg, ctx.mask);
    bonsai::backward(arena.bind_values(m_up, m_up_off), ctx.up, MatrixView<const T, Host>(du), dx,
                     arena.bind_grads(m_up, m_up_off),
                     epilogue::Bias<T>{bias(arena, m_up_bias, f), dbias(arena, m_up_bias, f)});
    const auto dx2 = ctx.dx2.matrix(n, width());  // (N, d)
    bonsai::backward(arena.bind_values(m_gate, m_gate_off), ctx.gate, MatrixView<const T, Host>(dg),
                     dx2, arena.bind_grads(m_gate, m_gate_off),
                     epilogue::Bias<T>{bias(arena, m_gate_bias, f), dbias(arena, m_gate_bias, f)});
    as_eigen(dx) += as_eigen(dx2);
  }

  index_t width() const noexcept { return m_up.in_features(); }
  index_t hidden() const noexcept { return m_up.out_features(); }
  ActKind act() const noexcept { return m_act; }
  /// Forward FLOPs for `tokens` tokens (GEMMs only).
  index_t flops(index_t tokens) const {
    return m_up.flops(tokens) * (m_act == ActKind::swiglu ? 2 : 1) + m_down.flops(tokens);
  }
  /// Calls f(map) on the layer's own up, gate (swiglu) and down maps, to change what they carry
  /// besides parameters (a SelfGuided map's a).
  template <class F>
  void for_each_map(F&& f) {
    f(m_up);
    if (m_act == ActKind::swiglu) f(m_gate);
    f(m_down);
  }

  /// Calls f(map) with copies of the up, gate (swiglu) and down maps bound to the arena's values.
  template <class F>
  void for_each_bound_map(ParamArena<T>& arena, F&& f) const {
    f(arena.bind_values(m_up, m_up_off));
    if (m_act == ActKind::swiglu) f(arena.bind_values(m_gate, m_gate_off));
    f(arena.bind_values(m_down, m_down_off));
  }

  /// The maps bound to the arena's values (for inspection, merging and growth).
  Up up(ParamArena<T>& arena) const { return arena.bind_values(m_up, m_up_off); }
  Down down(ParamArena<T>& arena) const { return arena.bind_values(m_down, m_down_off); }

 private:
  static VectorView<const T> bias(ParamArena<T>& arena, index_t off, index_t n) {
    return VectorView<const T>(arena.values() + off, {n});
  }
  static VectorView<T> dbias(ParamArena<T>& arena, index_t off, index_t n) {
    return VectorView<T>(arena.grads() + off, {n});
  }

  Up m_up, m_gate;
  Down m_down;
  ActKind m_act = ActKind::gelu;
  index_t m_up_off = 0, m_up_bias = 0, m_gate_off = 0, m_gate_bias = 0, m_down_off = 0,
          m_down_bias = 0;
};

}  // namespace bonsai
