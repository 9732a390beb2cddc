// bonsai/nn/mlp.hpp — Mlp<Up, Down, Space>: the feed-forward block with structured linear maps.
//   gelu:    y = down(gelu_tanh(up(x) + b_up)) + b_down
//   swiglu:  y = down(silu(gate(x) + b_gate) * (up(x) + b_up)) + b_down,  silu(u) = u sigmoid(u)
// Up (d -> F, also the gate's type) and Down (F -> d) are any structured maps; their parameters
// live in the arena as "<prefix>up.<name>", "<prefix>up.bias", "<prefix>gate.*", "<prefix>down.*".
// An optional growth mask c (F) scales the activation's input: gelu(c (up(x) + b_up)), or
// silu(c (gate(x) + b_gate)) (nn/growth_mask.hpp).
#pragma once

#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "../backend/cpu.hpp"
#include "arena.hpp"
#include "config.hpp"
#include "ffn_structure.hpp"
#include "growth_mask.hpp"
#include "../sparse/restrict.hpp"

namespace bonsai {

template <class Up, class Down, class Space = Host>
class Mlp {
  static_assert(std::is_same_v<scalar_of<Up>, scalar_of<Down>>,
                "Mlp: the up and down maps must hold the same scalar type");

 public:
  using T = scalar_of<Up>;
  using UpMap = Up;
  using DownMap = Down;
  using Arena = ParamArena<T, Space>;

  struct Context {
    bonsai::Context<Up, Space> up, gate;  // what the maps saved
    bonsai::Context<Down, Space> down;
    Workspace<T, Space> u, g, h;  // (N, F): up(x) + b, gate(x) + b (swiglu), the activation
    Workspace<T, Space> dh, du, dg, dx2;  // gradients: (N, F) x 3, (N, d)
    const T* mask = nullptr;       // (F) or null, the forward's mask
    std::vector<index_t> kept;     // the forward's kept channels (empty: all)
    Workspace<T, Space> kept_values, kept_grads, kept_mask;  // their compact parameters, gradients, mask
  };

  Mlp(const Up& up, const Down& down, ActKind act) : m_up(up), m_gate(up), m_down(down), m_act(act) {
    BONSAI_CHECK(up.out_features() == down.in_features(), "Mlp: up maps to ",
                 up.out_features(), " features but down takes ", down.in_features());
    BONSAI_CHECK(up.in_features() == down.out_features(), "Mlp: up takes ", up.in_features(),
                 " features but down returns ", down.out_features());
  }

  void declare(Arena& arena, const std::string& prefix) {
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
  void init(Arena& arena, Rng& rng, double stddev, double down_std) const {
    init_ffn_map(arena.bind_values(m_up, m_up_off), rng, stddev);
    if (m_act == ActKind::swiglu) init_ffn_map(arena.bind_values(m_gate, m_gate_off), rng, stddev);
    init_ffn_map(arena.bind_values(m_down, m_down_off), rng, down_std);
  }

  /// y = mlp(x): x, y (N, d); `mask` (F) or null, kept for backward. With a kept set S
  /// (increasing channel indices; empty: all), only those channels are computed, here and in
  /// backward: y = down[:, S](act(up[S, :] x + b_up[S])) + b_down, the other channels' weights
  /// get exactly zero gradient, and the FLOPs shrink with |S| (sparsity-accelerated training;
  /// Dense and LowRank maps only).
  void forward(Arena& arena, Context& ctx, const MatrixView<const T, Space>& x,
               const MatrixView<T, Space>& y, const T* mask = nullptr,
               std::span<const index_t> kept = {}) const {
    BONSAI_CHECK((std::is_same_v<Space, Host> || kept.empty()), "Mlp: computing only the kept "
                 "channels (sparsity-accelerated training) has no ", Space::name, " kernels yet");
    ctx.kept.assign(kept.begin(), kept.end());
    ctx.mask = mask;
    if (kept.empty()) return run_forward(full(arena.values()), ctx, x, y);
    if constexpr (restrictable_v<Up> && restrictable_v<Down> && std::is_same_v<Space, Host>) {
      const Compact c = compact(index_t(kept.size()));
      T* v = ctx.kept_values.reserve(c.size);
      gather_params(m_up, Side::outputs, kept, arena.values() + m_up_off, v + c.up_at);
      if (m_act == ActKind::swiglu)
        gather_params(m_gate, Side::outputs, kept, arena.values() + m_gate_off, v + c.gate_at);
      gather_params(m_down, Side::inputs, kept, arena.values() + m_down_off, v + c.down_at);
      for (std::size_t i = 0; i < kept.size(); ++i) {
        v[c.b_up + index_t(i)] = arena.values()[m_up_bias + kept[i]];
        if (m_act == ActKind::swiglu)
          v[c.b_gate + index_t(i)] = arena.values()[m_gate_bias + kept[i]];
      }
      if (mask) {
        T* m = ctx.kept_mask.reserve(index_t(kept.size()));
        for (std::size_t i = 0; i < kept.size(); ++i) m[i] = mask[kept[i]];
        ctx.mask = m;
      }
      return run_forward(c.bind(v, arena.values() + m_down_bias, width()), ctx, x, y);
    } else {
      fail_unrestrictable();
    }
  }

  /// dx = dL/dx (assigned) from dy (N, d); parameter gradients +=, only on the forward's kept
  /// channels when it had a kept set.
  void backward(Arena& arena, Context& ctx, const MatrixView<const T, Space>& dy,
                const MatrixView<T, Space>& dx) const {
    if (ctx.kept.empty())
      return run_backward(full(arena.values()), full(arena.grads()), ctx, dy, dx);
    if constexpr (restrictable_v<Up> && restrictable_v<Down> && std::is_same_v<Space, Host>) {
      const std::span<const index_t> kept = ctx.kept;
      const Compact c = compact(index_t(kept.size()));
      T* g = ctx.kept_grads.reserve(c.size);
      std::fill_n(g, c.size, T(0));
      run_backward(c.bind(ctx.kept_values.data(), arena.values() + m_down_bias, width()),
                   c.bind(g, arena.grads() + m_down_bias, width()), ctx, dy, dx);
      scatter_add_params(m_up, Side::outputs, kept, g + c.up_at, arena.grads() + m_up_off);
      if (m_act == ActKind::swiglu)
        scatter_add_params(m_gate, Side::outputs, kept, g + c.gate_at, arena.grads() + m_gate_off);
      scatter_add_params(m_down, Side::inputs, kept, g + c.down_at, arena.grads() + m_down_off);
      for (std::size_t i = 0; i < kept.size(); ++i) {
        arena.grads()[m_up_bias + kept[i]] += g[c.b_up + index_t(i)];
        if (m_act == ActKind::swiglu)
          arena.grads()[m_gate_bias + kept[i]] += g[c.b_gate + index_t(i)];
      }
    } else {
      fail_unrestrictable();
    }
  }

  index_t width() const noexcept { return m_up.in_features(); }
  index_t hidden() const noexcept { return m_up.out_features(); }
  ActKind act() const noexcept { return m_act; }
  /// The unbound up (also the gate's shape) and down maps: shapes and parameter layout.
  const Up& up_map() const noexcept { return m_up; }
  const Down& down_map() const noexcept { return m_down; }
  /// Forward FLOPs for `tokens` tokens (GEMMs only), computing `kept` channels (0: all).
  index_t flops(index_t tokens, index_t kept = 0) const {
    const index_t gated = m_act == ActKind::swiglu ? 2 : 1;
    if (kept == 0) return m_up.flops(tokens) * gated + m_down.flops(tokens);
    if constexpr (restrictable_v<Up> && restrictable_v<Down>) {
      const Compact c = compact(kept);
      return c.up.flops(tokens) * gated + c.down.flops(tokens);
    } else {
      fail_unrestrictable();
    }
  }

  /// The activations (N, k) the last forward fed to the down map: act(up(x) + b) of its kept
  /// channels (ctx.kept; all F when it kept all), in that order.
  MatrixView<const T, Space> activations(Context& ctx, index_t tokens) const {
    const index_t k = ctx.kept.empty() ? hidden() : index_t(ctx.kept.size());
    return MatrixView<const T, Space>(ctx.h.matrix(tokens, k));
  }

  /// flags[e] = 1 (flags in the arena's layout) for every parameter the last forward computed
  /// with: all of the layer's, or the kept channels' slices, shared LowRank factors and the
  /// down bias. Others are left as they are.
  void mark_computed(const Context& ctx, std::uint8_t* flags) const {
    const bool gated = m_act == ActKind::swiglu;
    const std::span<const index_t> kept = ctx.kept;
    std::fill_n(flags + m_down_bias, width(), std::uint8_t(1));
    if (kept.empty()) {
      std::fill_n(flags + m_up_off, m_up.param_count(), std::uint8_t(1));
      std::fill_n(flags + m_up_bias, hidden(), std::uint8_t(1));
      if (gated) std::fill_n(flags + m_gate_off, m_gate.param_count(), std::uint8_t(1));
      if (gated) std::fill_n(flags + m_gate_bias, hidden(), std::uint8_t(1));
      std::fill_n(flags + m_down_off, m_down.param_count(), std::uint8_t(1));
      return;
    }
    if constexpr (restrictable_v<Up> && restrictable_v<Down>) {
      mark_kept_params(m_up, Side::outputs, kept, flags + m_up_off);
      if (gated) mark_kept_params(m_gate, Side::outputs, kept, flags + m_gate_off);
      mark_kept_params(m_down, Side::inputs, kept, flags + m_down_off);
      for (index_t i : kept) {
        flags[m_up_bias + i] = 1;
        if (gated) flags[m_gate_bias + i] = 1;
      }
    } else {
      fail_unrestrictable();
    }
  }

  /// Per-channel weight norms for importance scores: energy[i] += the squared norm of the
  /// parameters channel i owns (its up and gate rows and its down column; the magnitude score
  /// is the square root), reader_l1[i] += the L1 norm of its down column (Wanda's weight
  /// factor). For LowRank maps a channel owns its row of U and its column of V, the shared
  /// factors count for no channel.
  void add_channel_norms(const Arena& arena, std::span<double> energy,
                         std::span<double> reader_l1) const {
    if constexpr (restrictable_v<Up> && restrictable_v<Down>) {
      const T* v = arena.values();
      if (!energy.empty()) {
        add_owned_norms(m_up, Side::outputs, v + m_up_off, 2, energy);
        if (m_act == ActKind::swiglu) add_owned_norms(m_gate, Side::outputs, v + m_gate_off, 2, energy);
        add_owned_norms(m_down, Side::inputs, v + m_down_off, 2, energy);
      }
      if (!reader_l1.empty()) add_owned_norms(m_down, Side::inputs, v + m_down_off, 1, reader_l1);
    } else {
      fail_unrestrictable();
    }
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
  void for_each_bound_map(Arena& arena, F&& f) const {
    f(arena.bind_values(m_up, m_up_off));
    if (m_act == ActKind::swiglu) f(arena.bind_values(m_gate, m_gate_off));
    f(arena.bind_values(m_down, m_down_off));
  }

  /// The maps bound to the arena's values (for inspection, merging and growth).
  Up up(Arena& arena) const { return arena.bind_values(m_up, m_up_off); }
  Down down(Arena& arena) const { return arena.bind_values(m_down, m_down_off); }

 private:
  /// The maps and biases a pass runs on, bound to values or to gradients: the arena's (all
  /// channels) or the kept channels' compact copies.
  struct Bound {
    Up up, gate;
    Down down;
    VectorView<T, Space> b_up, b_gate, b_down;
  };

  /// The arena's maps and biases bound to `base` (its values or its gradients).
  Bound full(T* base) const {
    Bound b{m_up, m_gate, m_down, {}, {}, {}};
    b.up.bind(base + m_up_off);
    if (m_act == ActKind::swiglu) b.gate.bind(base + m_gate_off);
    b.down.bind(base + m_down_off);
    b.b_up = VectorView<T, Space>(base + m_up_bias, {hidden()});
    if (m_act == ActKind::swiglu) b.b_gate = VectorView<T, Space>(base + m_gate_bias, {hidden()});
    b.b_down = VectorView<T, Space>(base + m_down_bias, {width()});
    return b;
  }

  /// The kept channels' compact parameters, back to back in one buffer: up (k outputs) | gate |
  /// down (k inputs) | up bias (k) | gate bias (k); the down bias is shared whole.
  struct Compact {
    Up up, gate;
    Down down;
    index_t k = 0, up_at = 0, gate_at = 0, down_at = 0, b_up = 0, b_gate = 0, size = 0;

    /// Bound to the compact buffer `base` and the full down bias `b_down` (width).
    Bound bind(T* base, T* b_down, index_t width) const {
      Bound b{up, gate, down, {}, {}, {}};
      b.up.bind(base + up_at);
      b.gate.bind(base + gate_at);
      b.down.bind(base + down_at);
      b.b_up = VectorView<T, Space>(base + b_up, {k});
      b.b_gate = VectorView<T, Space>(base + b_gate, {k});
      b.b_down = VectorView<T, Space>(b_down, {width});
      return b;
    }
  };

  Compact compact(index_t k) const {
    Compact c{restricted(m_up, Side::outputs, k), restricted(m_gate, Side::outputs, k),
              restricted(m_down, Side::inputs, k)};
    c.k = k;
    const bool gated = m_act == ActKind::swiglu;
    c.gate_at = c.up_at + c.up.param_count();
    c.down_at = c.gate_at + (gated ? c.gate.param_count() : 0);
    c.b_up = c.down_at + c.down.param_count();
    c.b_gate = c.b_up + k;
    c.size = c.b_gate + (gated ? k : 0);
    return c;
  }

  [[noreturn]] static void fail_unrestrictable() {
    detail::fail("Mlp: only Dense and LowRank FFNs compute a subset of their channels (a kept set "
                 "would leave a block-diagonal map with blocks of unequal sizes)");
  }

  void run_forward(const Bound& b, Context& ctx, const MatrixView<const T, Space>& x,
                   const MatrixView<T, Space>& y) const {
    const index_t n = x.rows(), f = b.up.out_features();
    const auto h = ctx.h.matrix(n, f);  // (N, F)
    const T* mask = ctx.mask;
    const VectorView<const T, Space> b_up(b.b_up.data(), {f}), b_gate(b.b_gate.data(), {f}),
        b_down(b.b_down.data(), {width()});
    if (m_act == ActKind::gelu && mask) {  // unfused: u = c (up(x) + b) is kept for backward
      const auto u = ctx.u.matrix(n, f);  // (N, F)
      bonsai::forward(b.up, x, u, ctx.up, epilogue::Bias<T, Space>{b_up});
      Ops<Space>::template scale_columns<T>(u, mask);
      Ops<Space>::template gelu_forward<T>(u, h);
    } else if (m_act == ActKind::gelu) {
      bonsai::forward(b.up, x, h, ctx.up, epilogue::BiasGelu<T, Space>{b_up});
    } else {
      const auto u = ctx.u.matrix(n, f), g = ctx.g.matrix(n, f);  // (N, F)
      bonsai::forward(b.up, x, u, ctx.up, epilogue::Bias<T, Space>{b_up});
      bonsai::forward(b.gate, x, g, ctx.gate, epilogue::Bias<T, Space>{b_gate});
      if (mask) Ops<Space>::template scale_columns<T>(g, mask);
      Ops<Space>::template swiglu_forward<T>(g, u, h);
    }
    bonsai::forward(b.down, MatrixView<const T, Space>(h), y, ctx.down, epilogue::Bias<T, Space>{b_down});
  }

  void run_backward(const Bound& b, const Bound& g, Context& ctx,
                    const MatrixView<const T, Space>& dy, const MatrixView<T, Space>& dx) const {
    const index_t n = dy.rows(), f = b.up.out_features();
    const auto dh = ctx.dh.matrix(n, f);  // (N, F)
    const VectorView<const T, Space> b_up(b.b_up.data(), {f}), b_gate(b.b_gate.data(), {f}),
        b_down(b.b_down.data(), {width()});
    bonsai::backward(b.down, ctx.down, dy, dh, g.down, epilogue::Bias<T, Space>{b_down, g.b_down});
    if (m_act == ActKind::gelu && ctx.mask) {
      const auto u = ctx.u.matrix(n, f), du = ctx.du.matrix(n, f);  // (N, F)
      Ops<Space>::template gelu_backward<T>(dh, u, du);
      Ops<Space>::template scale_columns<T>(du, ctx.mask);
      bonsai::backward(b.up, ctx.up, MatrixView<const T, Space>(du), dx, g.up,
                       epilogue::Bias<T, Space>{b_up, g.b_up});
      return;
    }
    if (m_act == ActKind::gelu) {
      bonsai::backward(b.up, ctx.up, MatrixView<const T, Space>(dh), dx, g.up,
                       epilogue::BiasGelu<T, Space>{b_up, g.b_up});
      return;
    }
    const auto u = ctx.u.matrix(n, f), gt = ctx.g.matrix(n, f);     // (N, F)
    const auto du = ctx.du.matrix(n, f), dg = ctx.dg.matrix(n, f);  // (N, F)
    Ops<Space>::template swiglu_backward<T>(dh, gt, u, dg, du);
    if (ctx.mask) Ops<Space>::template scale_columns<T>(dg, ctx.mask);
    bonsai::backward(b.up, ctx.up, MatrixView<const T, Space>(du), dx, g.up,
                     epilogue::Bias<T, Space>{b_up, g.b_up});
    const auto dx2 = ctx.dx2.matrix(n, width());  // (N, d)
    bonsai::backward(b.gate, ctx.gate, MatrixView<const T, Space>(dg), dx2, g.gate,
                     epilogue::Bias<T, Space>{b_gate, g.b_gate});
    Ops<Space>::template add<T>(dx, dx2, dx);
  }


  Up m_up, m_gate;
  Down m_down;
  ActKind m_act = ActKind::gelu;
  index_t m_up_off = 0, m_up_bias = 0, m_gate_off = 0, m_gate_bias = 0, m_down_off = 0,
          m_down_bias = 0;
};

}  // namespace bonsai
