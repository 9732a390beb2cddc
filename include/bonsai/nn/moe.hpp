// bonsai/nn/moe.hpp — Moe<Up, Down>: a Mixture-of-Experts FFN, E experts Mlp<Up, Down> behind a
// top-k router Wr (E, d) without bias. For tokens x (N, d):
//   z = x Wr^T (N, E),  p[t] = softmax(z[t]) over all E experts,
//   S_t = the k experts with the largest z[t, e] (= the largest p[t, e]; ties to the lower index),
//   topk_softmax (Mixtral):        w[t, e] = exp(z[t, e]) / sum_{e' in S_t} exp(z[t, e'])
//   softmax_topk (Switch, GShard): w[t, e] = p[t, e]  (not renormalised)
//   y[t] = sum_{e in S_t} w[t, e] expert_e(x[t]).
// The Switch Transformer's load-balancing loss aux = E sum_e f_e P_e, with f_e = |{(t, e) : e in
// S_t}| / (N k) the fraction of the N k assignments routed to e and P_e = mean_t p[t, e]; its
// gradient treats f_e as constant: d aux / d p[t, e] = E f_e / N.
// Backward: dw[t, e] = <dy[t], expert_e(x[t])> goes through the gating to dz (the softmax over
// S_t for topk_softmax; the full softmax, every expert included, for softmax_topk), then
// dWr += dz^T x and dx = sum_{e in S_t} w[t, e] expert_e'(x[t])^T dy[t] + dz Wr.
// Dispatch: per forward, the assignments are counted per expert, prefix-summed and laid out in
// one flat (N k, d) buffer, each expert's tokens a contiguous block in increasing token order;
// each expert runs once on its block, and the weighted outputs are summed back per token in the
// order of its choices, so results do not depend on the thread count. Parameters
// "<prefix>router.weight" (E, d) and "<prefix>experts.<e>.*" (nn/mlp.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include "../backend/cpu.hpp"
#include "../core/parallel.hpp"
#include "../core/rng.hpp"
#include "../structured/dense.hpp"
#include "../structured/init.hpp"
#include "arena.hpp"
#include "config.hpp"
#include "mlp.hpp"

namespace bonsai {

template <class Up, class Down>
class Moe {
 public:
  using Expert = Mlp<Up, Down>;
  using T = typename Expert::T;

  struct Context {
    std::vector<typename Expert::Context> experts;  // (E): what each expert saved
    bonsai::Context<Dense<T>, Host> router;         // the router GEMM's saved input
    Workspace<T> z, p;              // (N, E): the logits, the softmax over all experts
    Workspace<T> w;                 // (N, k): the chosen experts' weights
    std::vector<index_t> choice;    // (N k): token t's j-th expert at t k + j, best first
    std::vector<index_t> slot;      // (N k): the dispatch row of assignment t k + j
    std::vector<index_t> token;     // (N k): the token of each dispatch row
    std::vector<index_t> offset;    // (E + 1): expert e's rows are [offset[e], offset[e + 1])
    std::vector<index_t> fill;      // (E): next free row per expert while dispatching
    Workspace<T> xe, ye, dye, dxe;  // (N k, d): gathered inputs, expert outputs, gradients
    Workspace<T> dw, dz, aux_grad;  // (N, k), (N, E), (E): d aux / d p[t, e]
    index_t tokens = 0;             // N of the last forward (0: none yet)
    T aux = T(0);                   // the last forward's load-balancing loss

    /// Assignments routed to expert e by the last forward.
    index_t routed(index_t e) const { return offset[std::size_t(e + 1)] - offset[std::size_t(e)]; }
  };

  /// `experts` copies of the FFN (up, down, act), `top_k` chosen per token.
  Moe(const Up& up, const Down& down, ActKind act, index_t experts, index_t top_k,
      Gating gating = Gating::topk_softmax)
      : m_router(up.in_features(), checked_experts(experts, top_k)),
        m_experts(std::size_t(experts), Expert(up, down, act)),
        m_k(top_k),
        m_gating(gating) {}

  void declare(ParamArena<T>& arena, const std::string& prefix) {
    m_router_off = arena.add_map(prefix + "router.", m_router);
    for (index_t e = 0; e < experts(); ++e)
      expert(e).declare(arena, prefix + "experts." + std::to_string(e) + ".");
  }

  /// Router N(0, stddev^2), drawn first; then each expert as Mlp::init, expert 0 first.
  void init(ParamArena<T>& arena, Rng& rng, double stddev, double down_std) const {
    init_normal(router(arena), rng, stddev);
    for (const Expert& e : m_experts) e.init(arena, rng, stddev, down_std);
  }

  /// y = moe(x): x, y (N, d), N >= 1. Returns the load-balancing loss aux (also in ctx.aux).
  /// x must stay alive and unchanged until backward.
  T forward(ParamArena<T>& arena, Context& ctx, const MatrixView<const T, Host>& x,
            const MatrixView<T, Host>& y) const {
    const index_t n = x.rows(), d = width(), E = experts(), k = m_k;
    BONSAI_CHECK(x.cols() == d, "Moe: x has shape ", shape{n, x.cols()}, " but the experts take ",
                 d, " features");
    BONSAI_CHECK(n > 0, "Moe: x has shape ", shape{n, x.cols()}, "; it needs at least one token");
    BONSAI_CHECK(y.rows() == n && y.cols() == d, "Moe: y has shape ", shape{y.rows(), y.cols()},
                 " but x has shape ", shape{n, d});
    detail::check_rows_contiguous(y, "Moe", "y");
    BONSAI_CHECK(!detail::overlaps(x, y), "Moe: y overlaps x; the output needs its own memory");
    ctx.tokens = 0;  // invalid until this forward completes
    ctx.experts.resize(std::size_t(E));

    // Routing, in parallel over tokens: logits, softmax, top k, weights.
    const auto z = ctx.z.matrix(n, E), p = ctx.p.matrix(n, E);  // (N, E)
    const auto w = ctx.w.matrix(n, k);                          // (N, k)
    bonsai::forward(router(arena), x, z, ctx.router);
    ctx.choice.resize(std::size_t(n * k));
    index_t* choice = ctx.choice.data();
    parallel_for(
        n,
        [&](index_t t) {
          route(z.data() + t * E, p.data() + t * E, choice + t * k, w.data() + t * k);
        },
        E * k);

    // Dispatch: count, prefix-sum, then give every assignment its row, token order per expert.
    ctx.offset.assign(std::size_t(E + 1), 0);
    index_t* offset = ctx.offset.data();
    for (index_t i = 0; i < n * k; ++i) ++offset[choice[i] + 1];
    for (index_t e = 0; e < E; ++e) offset[e + 1] += offset[e];
    ctx.fill.assign(ctx.offset.begin(), ctx.offset.end() - 1);
    ctx.slot.resize(std::size_t(n * k));
    ctx.token.resize(std::size_t(n * k));
    index_t *slot = ctx.slot.data(), *token = ctx.token.data(), *fill = ctx.fill.data();
    for (index_t i = 0; i < n * k; ++i) {
      const index_t r = fill[choice[i]]++;
      slot[i] = r;
      token[r] = i / k;
    }

    // Gather, run each expert on its block, combine in each token's order of choices.
    const auto xe = ctx.xe.matrix(n * k, d), ye = ctx.ye.matrix(n * k, d);  // (N k, d)
    parallel_for(
        n * k, [&](index_t r) { std::copy_n(x.data() + token[r] * x.ld(), d, xe.data() + r * d); },
        d);
    for (index_t e = 0; e < E; ++e) {
      const index_t begin = offset[e], rows = offset[e + 1] - begin;
      if (rows == 0) continue;
      expert(e).forward(arena, ctx.experts[std::size_t(e)],
                        MatrixView<const T, Host>(block(xe, begin, rows)), block(ye, begin, rows));
    }
    parallel_for(
        n,
        [&](index_t t) {
          T* yt = y.data() + t * y.ld();  // (d)
          const T* o = ye.data() + slot[t * k] * d;
          const T w0 = w(t, 0);
          for (index_t c = 0; c < d; ++c) yt[c] = w0 * o[c];
          for (index_t j = 1; j < k; ++j) {
            const T* oj = ye.data() + slot[t * k + j] * d;
            const T wj = w(t, j);
            for (index_t c = 0; c < d; ++c) yt[c] += wj * oj[c];
          }
        },
        k * d);

    // Load balance: aux = E sum_e f_e P_e; d aux / d p[t, e] = E f_e / N for backward.
    T* aux_grad = ctx.aux_grad.reserve(E);  // (E)
    T aux = T(0);
    for (index_t e = 0; e < E; ++e) {
      T mean = T(0);
      for (index_t t = 0; t < n; ++t) mean += p(t, e);
      mean /= T(n);
      const T f = T(ctx.routed(e)) / T(n * k);
      aux += f * mean;
      aux_grad[e] = T(E) * f / T(n);
    }
    ctx.aux = T(E) * aux;
    ctx.tokens = n;
    return ctx.aux;
  }

  /// dx = dL/dx (assigned) from dy = dL/dy (N, d) for a loss L that adds aux_weight * aux
  /// (f_e held constant); parameter gradients += (the router and every expert that took tokens).
  void backward(ParamArena<T>& arena, Context& ctx, const MatrixView<const T, Host>& dy,
                const MatrixView<T, Host>& dx, T aux_weight = T(0)) const {
    const index_t n = ctx.tokens, d = width(), E = experts(), k = m_k;
    BONSAI_CHECK(n > 0, "Moe: backward needs a completed forward pass on this context");
    BONSAI_CHECK(dy.rows() == n && dy.cols() == d, "Moe: dy has shape ",
                 shape{dy.rows(), dy.cols()}, " but the forward pass produced ", shape{n, d});
    BONSAI_CHECK(dx.rows() == n && dx.cols() == d, "Moe: dx has shape ",
                 shape{dx.rows(), dx.cols()}, " but x had shape ", shape{n, d});
    detail::check_rows_contiguous(dy, "Moe", "dy");
    detail::check_rows_contiguous(dx, "Moe", "dx");
    BONSAI_CHECK(!detail::overlaps(dx, dy), "Moe: dx overlaps dy; dx needs its own memory");
    const auto p = ctx.p.matrix(n, E), w = ctx.w.matrix(n, k);                  // (N, E), (N, k)
    const auto ye = ctx.ye.matrix(n * k, d);                                    // (N k, d)
    const auto dye = ctx.dye.matrix(n * k, d), dxe = ctx.dxe.matrix(n * k, d);  // (N k, d)
    const auto dw = ctx.dw.matrix(n, k);                                        // (N, k)
    const auto dz = ctx.dz.matrix(n, E);                                        // (N, E)
    const index_t *choice = ctx.choice.data(), *slot = ctx.slot.data(), *offset = ctx.offset.data();

    // d(expert outputs) = w dy, and dw = <dy, expert output>, per assignment.
    parallel_for(
        n,
        [&](index_t t) {
          const T* g = dy.data() + t * dy.ld();  // (d)
          for (index_t j = 0; j < k; ++j) {
            const index_t r = slot[t * k + j];
            const T* o = ye.data() + r * d;
            T* go = dye.data() + r * d;
            const T wj = w(t, j);
            T s = T(0);
            for (index_t c = 0; c < d; ++c) {
              go[c] = wj * g[c];
              s += g[c] * o[c];
            }
            dw(t, j) = s;
          }
        },
        k * d);

    for (index_t e = 0; e < E; ++e) {
      const index_t begin = offset[e], rows = offset[e + 1] - begin;
      if (rows == 0) continue;
      expert(e).backward(arena, ctx.experts[std::size_t(e)],
                         MatrixView<const T, Host>(block(dye, begin, rows)),
                         block(dxe, begin, rows));
    }

    // dx = sum over the token's choices of the experts' dx, in the order of the choices; and
    // the router's dz through the gating (and the load-balancing loss).
    const T* aux_grad = ctx.aux_grad.data();
    parallel_for(
        n,
        [&](index_t t) {
          T* dxt = dx.data() + t * dx.ld();  // (d)
          const T* first = dxe.data() + slot[t * k] * d;
          std::copy_n(first, d, dxt);
          for (index_t j = 1; j < k; ++j) {
            const T* src = dxe.data() + slot[t * k + j] * d;
            for (index_t c = 0; c < d; ++c) dxt[c] += src[c];
          }
          const index_t* ct = choice + t * k;
          const T* pt = p.data() + t * E;  // (E)
          T* dzt = dz.data() + t * E;      // (E)
          T s = T(0);                      // sum_j w_j dw_j
          for (index_t j = 0; j < k; ++j) s += w(t, j) * dw(t, j);
          if (m_gating == Gating::topk_softmax) {
            std::fill_n(dzt, E, T(0));
            for (index_t j = 0; j < k; ++j) dzt[ct[j]] = w(t, j) * (dw(t, j) - s);
          } else {
            for (index_t e = 0; e < E; ++e) dzt[e] = -pt[e] * s;
            for (index_t j = 0; j < k; ++j) dzt[ct[j]] += w(t, j) * dw(t, j);
          }
          if (aux_weight != T(0)) {
            T q = T(0);  // sum_e p_e d aux / d p_e
            for (index_t e = 0; e < E; ++e) q += pt[e] * aux_grad[e];
            for (index_t e = 0; e < E; ++e) dzt[e] += aux_weight * pt[e] * (aux_grad[e] - q);
          }
        },
        k * d + E);

    // Router: dWr += dz^T x, dx += dz Wr.
    const Dense<T> rv = router(arena), rg = arena.bind_grads(m_router, m_router_off);
    const MatrixView<const T, Host> dzc(dz);
    bonsai::backward(rv, ctx.router, dzc, MatrixView<T, Host>{}, rg);
    Ops<Host>::gemm<T>(T(1), dzc, Op::N, MatrixView<const T, Host>(rv.weight()), Op::N, T(1), dx);
  }

  index_t width() const noexcept { return m_router.in_features(); }
  index_t hidden() const noexcept { return m_experts.front().hidden(); }
  index_t experts() const noexcept { return index_t(m_experts.size()); }
  index_t top_k() const noexcept { return m_k; }
  Gating gating() const noexcept { return m_gating; }
  ActKind act() const noexcept { return m_experts.front().act(); }

  /// Forward FLOPs for `tokens` tokens (GEMMs only): the router plus k expert FFNs per token.
  index_t flops(index_t tokens) const {
    return m_router.flops(tokens) + m_k * m_experts.front().flops(tokens);
  }

  /// Expert e, whose parameters live under "<prefix>experts.<e>.".
  Expert& expert(index_t e) {
    check_expert(e);
    return m_experts[std::size_t(e)];
  }
  const Expert& expert(index_t e) const {
    check_expert(e);
    return m_experts[std::size_t(e)];
  }

  /// The router Wr (E, d) bound to the arena's values.
  Dense<T> router(ParamArena<T>& arena) const { return arena.bind_values(m_router, m_router_off); }

 private:
  static index_t checked_experts(index_t experts, index_t top_k) {
    BONSAI_CHECK(experts >= 1, "Moe: needs at least one expert, got ", experts);
    BONSAI_CHECK(top_k >= 1 && top_k <= experts, "Moe: top_k = ", top_k,
                 " must lie between 1 and the number of experts, ", experts);
    return experts;
  }

  void check_expert(index_t e) const {
    BONSAI_CHECK(e >= 0 && e < experts(), "Moe: expert ", e, " does not exist among ", experts(),
                 " experts");
  }

  /// Rows [begin, begin + rows) of a contiguous (., d) buffer.
  static MatrixView<T, Host> block(const MatrixView<T, Host>& m, index_t begin, index_t rows) {
    return matrix_view(m.data() + begin * m.cols(), rows, m.cols());
  }

  /// One token: p = softmax(z) (E), its k best experts (largest logit first, ties to the lower
  /// index) and their weights (k).
  void route(const T* z, T* p, index_t* choice, T* w) const {
    const index_t E = experts(), k = m_k;
    const T top = *std::max_element(z, z + E);
    T sum = T(0);
    for (index_t e = 0; e < E; ++e) sum += p[e] = std::exp(z[e] - top);
    for (index_t e = 0; e < E; ++e) p[e] /= sum;
    for (index_t j = 0; j < k; ++j) {
      index_t best = -1;
      for (index_t e = 0; e < E; ++e) {
        if (std::find(choice, choice + j, e) != choice + j) continue;
        if (best < 0 || z[e] > z[best]) best = e;
      }
      choice[j] = best;
    }
    if (m_gating == Gating::softmax_topk) {
      for (index_t j = 0; j < k; ++j) w[j] = p[choice[j]];
      return;
    }
    T s = T(0);
    for (index_t j = 0; j < k; ++j) s += w[j] = std::exp(z[choice[j]] - z[choice[0]]);
    for (index_t j = 0; j < k; ++j) w[j] /= s;
  }

  Dense<T> m_router;
  std::vector<Expert> m_experts;
  index_t m_k = 1;
  Gating m_gating = Gating::topk_softmax;
  index_t m_router_off = 0;
};

}  // namespace bonsai
