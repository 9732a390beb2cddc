// bonsai/nn/attention.hpp — Attention<T, Space>: causal multi-head self-attention with grouped-query
// heads and its own width A = n_head * head_dim:
//   [q | k | v] = x Wqkv^T + b   (N, A + 2 KV),  q, k rotated by RoPE when pos == rope,
//   o_h = softmax(q_h k_g^T / sqrt(hd) + causal mask) v_g,  g = h / (n_head / n_kv_head),
//   y = o Wproj^T + b_proj       (N, d).
// Parameters "<prefix>qkv.weight" (A + 2KV, d), "qkv.bias", "proj.weight" (d, A), "proj.bias".
// An optional growth mask (A + 2KV) scales the q, k, v columns (nn/growth_mask.hpp).
// An optional kept set S of query heads (sparsity-accelerated training) computes only those
// heads: y = sum_{h in S} Wproj[:, h] o_h + b_proj, forward and backward, through compact
// copies of their q, k, v rows and output columns; each kept head brings its own copy of its
// key/value head, so under GQA a group with several kept heads projects its k, v once per kept
// head (correct; the saving is in the heads that are left out).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "../backend/cpu.hpp"
#include "../core/rng.hpp"
#include "../structured/init.hpp"
#include "arena.hpp"
#include "config.hpp"
#include "growth_mask.hpp"
#include "../sparse/restrict.hpp"

namespace bonsai {

template <class T, class Space = Host>
class Attention {
 public:
  using Arena = ParamArena<T, Space>;
  struct Context {
    bonsai::Context<Dense<T>, Space> qkv_ctx, proj_ctx;
    Workspace<T, Space> qkv;    // (N, A + 2KV), after RoPE
    Workspace<T, Space> out;    // (N, A), heads side by side
    AttentionState<T, Space> state;  // what the attention kernel saves for backward
    Workspace<T, Space> dqkv, dout;
    AttentionShape shape{};
    const T* mask = nullptr;  // (A + 2KV) or null, the forward's q, k, v mask
    // Kept heads: the qkv rows they read, and compact weights, biases, gradients and mask.
    std::vector<index_t> kept, rows;  // (k), (3 k hd)
    Workspace<T, Space> kept_values, kept_grads, kept_mask;
  };

  Attention(const GptConfig& c)
      : m_width(c.d_model), m_heads(c.n_head), m_kv_heads(c.kv_heads()), m_head_dim(c.head_dim()),
        m_rope(c.pos == PosKind::rope), m_qkv(c.d_model, c.attention_width() + 2 * c.kv_width()),
        m_proj(c.attention_width(), c.d_model) {
    if (m_rope) m_table = RopeTable<T, Space>(c.max_seq_len, m_head_dim, c.rope_base);
  }

  void declare(Arena& arena, const std::string& prefix) {
    m_qkv_off = arena.add_map(prefix + "qkv.", m_qkv);
    m_qkv_bias = arena.add(prefix + "qkv.bias", {m_qkv.out_features()});
    m_proj_off = arena.add_map(prefix + "proj.", m_proj);
    m_proj_bias = arena.add(prefix + "proj.bias", {m_width});
  }
  /// Weights N(0, std^2), the output projection N(0, proj_std^2); biases 0.
  void init(Arena& arena, Rng& rng, double stddev, double proj_std) const {
    init_normal(arena.bind_values(m_qkv, m_qkv_off), rng, stddev);
    init_normal(arena.bind_values(m_proj, m_proj_off), rng, proj_std);
  }

  /// y (B*T, d) = attention(x (B*T, d)) over `batch` sequences of length `seq`; `mask`
  /// (A + 2KV) or null scales q, k and v; `kept` (increasing query heads; empty: all) limits
  /// the work, here and in backward, to those heads.
  void forward(Arena& arena, Context& ctx, const MatrixView<const T, Space>& x,
               const MatrixView<T, Space>& y, index_t batch, index_t seq, const T* mask = nullptr,
               std::span<const index_t> kept = {}) const {
    const index_t n = x.rows();
    BONSAI_CHECK(n == batch * seq, "Attention: x has ", n, " rows but batch ", batch, " x seq ",
                 seq, " = ", batch * seq);
    BONSAI_CHECK((std::is_same_v<Space, Host> || kept.empty()), "Attention: computing only the kept "
                 "heads (sparsity-accelerated training) has no ", Space::name, " kernels yet");
    ctx.mask = mask;
    ctx.kept.assign(kept.begin(), kept.end());
    if (kept.empty()) {
      ctx.shape = AttentionShape{batch, seq, m_heads, m_kv_heads, m_head_dim};
      return run_forward(full(arena.values()), ctx, x, y);
    }
    const index_t k = index_t(kept.size());
    ctx.shape = AttentionShape{batch, seq, k, k, m_head_dim};
    kept_rows(ctx);
    const Compact c = compact(k);
    T* v = ctx.kept_values.reserve(c.size);
    const index_t r = index_t(ctx.rows.size());
    const Wide w = wide(arena.values());
    Ops<Space>::template gather_rows<T>(w.qkv, ctx.rows, matrix_view<Space>(v + c.qkv, r, m_width));
    Ops<Space>::template gather_rows<T>(w.qkv_bias, ctx.rows, matrix_view<Space>(v + c.qkv_bias, r, 1));
    Ops<Space>::template gather_column_blocks<T>(w.proj, ctx.kept, m_head_dim,  // the kept heads' columns
                                       matrix_view<Space>(v + c.proj, m_width, k * m_head_dim));
    if (mask) {
      T* m = ctx.kept_mask.reserve(r);
      const index_t all = m_qkv.out_features();
      Ops<Space>::template gather_rows<T>(matrix_view<Space, const T>(mask, all, 1), ctx.rows, matrix_view<Space>(m, r, 1));
      ctx.mask = m;
    }
    run_forward(c.bind(v, arena.values() + m_proj_bias), ctx, x, y);
  }

  /// dx = dL/dx (assigned) from dy (N, d); parameter gradients +=, only on the forward's kept
  /// heads when it had a kept set.
  void backward(Arena& arena, Context& ctx, const MatrixView<const T, Space>& dy,
                const MatrixView<T, Space>& dx) const {
    if (ctx.kept.empty())
      return run_backward(full(arena.values()), full(arena.grads()), ctx, dy, dx);
    const index_t k = index_t(ctx.kept.size());
    const Compact c = compact(k);
    T* g = ctx.kept_grads.reserve(c.size);
    std::fill_n(g, c.size, T(0));
    run_backward(c.bind(ctx.kept_values.data(), arena.values() + m_proj_bias),
                 c.bind(g, arena.grads() + m_proj_bias), ctx, dy, dx);
    // Rows repeat under GQA (a key/value head per kept query head): scatter_add_rows adds them
    // one after another.
    const index_t r = index_t(ctx.rows.size());
    const auto cg = [&](index_t off, index_t rows, index_t cols) {
      return matrix_view<Space, const T>(g + off, rows, cols);
    };
    const Wide w = wide(arena.grads());
    Ops<Space>::template scatter_add_rows<T>(cg(c.qkv, r, m_width), ctx.rows, w.qkv);
    Ops<Space>::template scatter_add_rows<T>(cg(c.qkv_bias, r, 1), ctx.rows, w.qkv_bias);
    Ops<Space>::template scatter_add_column_blocks<T>(cg(c.proj, m_width, k * m_head_dim), ctx.kept, m_head_dim,
                                            w.proj);
  }

  /// Decoding: y (B*n, d) for n new tokens per sequence at positions [pos, pos + n), attending
  /// to the keys and values in `cache` (which grows by n). Nothing is saved for backward.
  void decode(Arena& arena, Context& ctx, const MatrixView<const T, Space>& x,
              const MatrixView<T, Space>& y, index_t batch, index_t n, index_t pos,
              KvCache<T, Space>& cache, const T* mask = nullptr) const {
    const AttentionShape shape{batch, n, m_heads, m_kv_heads, m_head_dim};
    const auto qkv = ctx.qkv.matrix(x.rows(), m_qkv.out_features());  // (B*n, A + 2KV)
    bonsai::forward(arena.bind_values(m_qkv, m_qkv_off), x, qkv, ctx.qkv_ctx,
                    epilogue::Bias<T, Space>{vec(arena.values(), m_qkv_bias, m_qkv.out_features())});
    if (mask) Ops<Space>::template scale_columns<T>(qkv, mask);
    if (m_rope) Ops<Space>::template rope_forward<T>(qkv, shape, m_table, pos);
    const auto out = ctx.out.matrix(x.rows(), m_proj.in_features());  // (B*n, A)
    Ops<Space>::template attention_decode<T>(shape, MatrixView<const T, Space>(qkv), pos, cache, out);
    bonsai::forward(arena.bind_values(m_proj, m_proj_off), MatrixView<const T, Space>(out), y,
                    ctx.proj_ctx, epilogue::Bias<T, Space>{vec(arena.values(), m_proj_bias, m_width)});
  }
  /// Forward FLOPs for `batch` sequences of `seq` tokens: the two projections plus the causal
  /// score and value products (each 2 A per attended key; on average (T + 1) / 2 keys).
  /// With `kept` query heads (0: all) the projections and products run on the compact shapes:
  /// q, k, v rows of 3 kept head_dim and k head_dim output columns.
  index_t flops(index_t batch, index_t seq, index_t kept = 0) const {
    const index_t n = batch * seq;
    if (kept == 0) return m_qkv.flops(n) + m_proj.flops(n) + 2 * n * m_proj.in_features() * (seq + 1);
    const index_t width = kept * m_head_dim;  // the kept heads' share of A
    return 2 * n * m_width * 3 * width + 2 * n * width * m_width + 2 * n * width * (seq + 1);
  }

  index_t heads() const noexcept { return m_heads; }
  index_t head_dim() const noexcept { return m_head_dim; }

  /// The head outputs (N, k head_dim) of the last forward, before the output projection: its
  /// kept heads (ctx.kept; all when it kept all) side by side, in that order.
  MatrixView<const T, Space> head_outputs(Context& ctx, index_t tokens) const {
    const index_t k = ctx.kept.empty() ? m_heads : index_t(ctx.kept.size());
    return MatrixView<const T, Space>(ctx.out.matrix(tokens, k * m_head_dim));
  }

  /// flags[e] = 1 (flags in the arena's layout) for every parameter the last forward computed
  /// with: all of the layer's, or the kept heads' q rows, their key/value heads' k and v rows
  /// (with biases), their output columns and the output bias. Others are left as they are.
  void mark_computed(const Context& ctx, std::uint8_t* flags) const {
    const index_t d = m_width, A = m_proj.in_features(), hd = m_head_dim;
    std::fill_n(flags + m_proj_bias, d, std::uint8_t(1));
    if (ctx.kept.empty()) {
      std::fill_n(flags + m_qkv_off, m_qkv.param_count(), std::uint8_t(1));
      std::fill_n(flags + m_qkv_bias, m_qkv.out_features(), std::uint8_t(1));
      std::fill_n(flags + m_proj_off, m_proj.param_count(), std::uint8_t(1));
      return;
    }
    for (index_t r : ctx.rows) {
      std::fill_n(flags + m_qkv_off + r * d, d, std::uint8_t(1));
      flags[m_qkv_bias + r] = 1;
    }
    for (index_t o = 0; o < d; ++o)
      for (index_t h : ctx.kept) std::fill_n(flags + m_proj_off + o * A + h * hd, hd, std::uint8_t(1));
  }

  /// Per-head weight norms for importance scores: energy[h] += the squared norm of head h's q
  /// rows, the k and v rows of its key/value head and its output-projection columns (the
  /// magnitude score is the square root); column_l1[c] += the L1 norm of output-projection
  /// column c (A entries; Wanda's weight factor).
  void add_head_norms(const ParamArena<T, Space>& arena, std::span<double> energy,
                      std::span<double> column_l1) const {
    const index_t A = m_proj.in_features(), hd = m_head_dim, group = m_heads / m_kv_heads,
                  KV = m_kv_heads * hd;
    const T* qkv = arena.values() + m_qkv_off;    // (A + 2KV, d)
    const T* proj = arena.values() + m_proj_off;  // (d, A)
    if (!energy.empty()) {
      std::vector<double> rows(static_cast<std::size_t>(A + 2 * KV)), cols(static_cast<std::size_t>(A));
      add_owned_norms(m_qkv, Side::outputs, qkv, 2, rows);
      add_owned_norms(m_proj, Side::inputs, proj, 2, cols);
      for (index_t h = 0; h < m_heads; ++h)
        for (index_t e = 0; e < hd; ++e) {
          const auto q = std::size_t(h * hd + e), kv = std::size_t((h / group) * hd + e);
          energy[std::size_t(h)] += rows[q] + rows[std::size_t(A) + kv] +
                                    rows[std::size_t(A + KV) + kv] + cols[q];
        }
    }
    if (!column_l1.empty()) add_owned_norms(m_proj, Side::inputs, proj, 1, column_l1);
  }

 private:
  static VectorView<T, Space> vec(T* base, index_t off, index_t n) { return VectorView<T, Space>(base + off, {n}); }

  /// The projections and biases a pass runs on, bound to values or gradients: the arena's
  /// (all heads) or the kept heads' compact copies.
  struct Bound {
    Dense<T> qkv, proj;
    VectorView<T, Space> qkv_bias, proj_bias;
  };

  Bound full(T* base) const {
    Bound b{m_qkv, m_proj, vec(base, m_qkv_bias, m_qkv.out_features()),
            vec(base, m_proj_bias, m_width)};
    b.qkv.bind(base + m_qkv_off);
    b.proj.bind(base + m_proj_off);
    return b;
  }

  /// The kept heads' compact parameters, back to back: qkv (3 k hd, d) | its bias (3 k hd) |
  /// proj (d, k hd); the output bias is shared whole.
  struct Compact {
    Dense<T> qkv_map, proj_map;
    index_t qkv = 0, qkv_bias = 0, proj = 0, size = 0, width = 0;

    /// Bound to the compact buffer `base` and the full output bias `proj_bias` (d).
    Bound bind(T* base, T* proj_bias) const {
      Bound b{qkv_map, proj_map, VectorView<T, Space>(base + qkv_bias, {qkv_map.out_features()}),
              VectorView<T, Space>(proj_bias, {width})};
      b.qkv.bind(base + qkv);
      b.proj.bind(base + proj);
      return b;
    }
  };

  /// The full qkv weight (A + 2KV, d), its bias as a column (A + 2KV, 1) and proj (d, A), over
  /// the arena's values or gradients `base`.
  struct Wide {
    MatrixView<T, Space> qkv, qkv_bias, proj;
  };
  Wide wide(T* base) const {
    const index_t all = m_qkv.out_features();
    return {matrix_view<Space>(base + m_qkv_off, all, m_width), matrix_view<Space>(base + m_qkv_bias, all, 1),
            matrix_view<Space>(base + m_proj_off, m_width, m_proj.in_features())};
  }

  Compact compact(index_t k) const {
    const index_t r = 3 * k * m_head_dim;
    Compact c{Dense<T>(m_width, r), Dense<T>(k * m_head_dim, m_width)};
    c.qkv_bias = r * m_width;
    c.proj = c.qkv_bias + r;
    c.size = c.proj + m_width * k * m_head_dim;
    c.width = m_width;
    return c;
  }

  void run_forward(const Bound& b, Context& ctx, const MatrixView<const T, Space>& x,
                   const MatrixView<T, Space>& y) const {
    const index_t n = x.rows();
    const auto qkv = ctx.qkv.matrix(n, b.qkv.out_features());  // (N, A + 2KV)
    bonsai::forward(b.qkv, x, qkv, ctx.qkv_ctx, epilogue::Bias<T, Space>{b.qkv_bias});
    if (ctx.mask) Ops<Space>::template scale_columns<T>(qkv, ctx.mask);
    if (m_rope) Ops<Space>::template rope_forward<T>(qkv, ctx.shape, m_table, index_t(0));
    const auto out = ctx.out.matrix(n, b.proj.in_features());  // (N, A)
    Ops<Space>::template attention_forward<T>(ctx.shape, MatrixView<const T, Space>(qkv), out, ctx.state);
    bonsai::forward(b.proj, MatrixView<const T, Space>(out), y, ctx.proj_ctx,
                    epilogue::Bias<T, Space>{b.proj_bias});
  }

  void run_backward(const Bound& b, const Bound& g, Context& ctx,
                    const MatrixView<const T, Space>& dy, const MatrixView<T, Space>& dx) const {
    const index_t n = dy.rows();
    const auto dout = ctx.dout.matrix(n, b.proj.in_features());  // (N, A)
    bonsai::backward(b.proj, ctx.proj_ctx, dy, dout, g.proj,
                     epilogue::Bias<T, Space>{b.proj_bias, g.proj_bias});
    const auto dqkv = ctx.dqkv.matrix(n, b.qkv.out_features());  // (N, A + 2KV)
    const auto qkv = ctx.qkv.matrix(n, b.qkv.out_features());
    Ops<Space>::template attention_backward<T>(ctx.shape, MatrixView<const T, Space>(qkv), ctx.state,
                                     MatrixView<const T, Space>(dout), dqkv);
    if (m_rope) Ops<Space>::template rope_backward<T>(dqkv, ctx.shape, m_table, index_t(0));
    if (ctx.mask) Ops<Space>::template scale_columns<T>(dqkv, ctx.mask);
    bonsai::backward(b.qkv, ctx.qkv_ctx, MatrixView<const T, Space>(dqkv), dx, g.qkv,
                     epilogue::Bias<T, Space>{b.qkv_bias, g.qkv_bias});
  }

  /// The qkv rows of the kept heads: their q rows, then the k rows and the v rows of each kept
  /// head's key/value head (a copy per kept head).
  void kept_rows(Context& ctx) const {
    const index_t hd = m_head_dim, A = m_proj.in_features(), KV = m_kv_heads * hd,
                  group = m_heads / m_kv_heads;
    for (std::size_t i = 0; i < ctx.kept.size(); ++i)
      BONSAI_CHECK(
          ctx.kept[i] >= 0 && ctx.kept[i] < m_heads && (i == 0 || ctx.kept[i - 1] < ctx.kept[i]),
          "Attention: kept heads must be increasing indices below ", m_heads, ", got ", ctx.kept[i],
          " at position ", i);
    ctx.rows.clear();
    for (index_t part = 0; part < 3; ++part)
      for (index_t h : ctx.kept) {
        const index_t base = part == 0 ? h * hd : A + (part - 1) * KV + (h / group) * hd;
        for (index_t e = 0; e < hd; ++e) ctx.rows.push_back(base + e);
      }
  }

  index_t m_width, m_heads, m_kv_heads, m_head_dim;
  bool m_rope;
  Dense<T> m_qkv, m_proj;
  RopeTable<T, Space> m_table;
  index_t m_qkv_off = 0, m_qkv_bias = 0, m_proj_off = 0, m_proj_bias = 0;
};

}  // namespace bonsai
