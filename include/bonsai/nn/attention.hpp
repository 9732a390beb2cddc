// bonsai/nn/attention.hpp — Attention<T>: causal multi-head self-attention with grouped-query
// heads and its own width A = n_head * head_dim:
//   [q | k | v] = x Wqkv^T + b   (N, A + 2 KV),  q, k rotated by RoPE when pos == rope,
//   o_h = softmax(q_h k_g^T / sqrt(hd) + causal mask) v_g,  g = h / (n_head / n_kv_head),
//   y = o Wproj^T + b_proj       (N, d).
// Parameters "<prefix>qkv.weight" (A + 2KV, d), "qkv.bias", "proj.weight" (d, A), "proj.bias".
// An optional growth mask (A + 2KV) scales the q, k, v columns (nn/growth_mask.hpp).
#pragma once

#include <string>

#include "../backend/cpu.hpp"
#include "../backend/cpu/attention.hpp"
#include "../backend/cpu/rope.hpp"
#include "../core/rng.hpp"
#include "../structured/init.hpp"
#include "arena.hpp"
#include "config.hpp"
#include "growth_mask.hpp"

namespace bonsai {

template <class T>
class Attention {
 public:
  struct Context {
    bonsai::Context<Dense<T>, Host> qkv_ctx, proj_ctx;
    Workspace<T> qkv;    // (N, A + 2KV), after RoPE
    Workspace<T> out;    // (N, A), heads side by side
    Workspace<T> probs;  // softmax probabilities, saved for backward
    Workspace<T> dqkv, dout;
    cpu::AttentionShape shape{};
    const T* mask = nullptr;  // (A + 2KV) or null, the forward's q, k, v mask
  };

  Attention(const GptConfig& c)
      : m_width(c.d_model), m_heads(c.n_head), m_kv_heads(c.kv_heads()), m_head_dim(c.head_dim()),
        m_rope(c.pos == PosKind::rope), m_qkv(c.d_model, c.attention_width() + 2 * c.kv_width()),
        m_proj(c.attention_width(), c.d_model) {
    if (m_rope) m_table = cpu::RopeTable<T>(c.max_seq_len, m_head_dim, c.rope_base);
  }

  void declare(ParamArena<T>& arena, const std::string& prefix) {
    m_qkv_off = arena.add_map(prefix + "qkv.", m_qkv);
    m_qkv_bias = arena.add(prefix + "qkv.bias", {m_qkv.out_features()});
    m_proj_off = arena.add_map(prefix + "proj.", m_proj);
    m_proj_bias = arena.add(prefix + "proj.bias", {m_width});
  }
  /// Weights N(0, std^2), the output projection N(0, proj_std^2); biases 0.
  void init(ParamArena<T>& arena, Rng& rng, double stddev, double proj_std) const {
    init_normal(arena.bind_values(m_qkv, m_qkv_off), rng, stddev);
    init_normal(arena.bind_values(m_proj, m_proj_off), rng, proj_std);
  }

  /// y (B*T, d) = attention(x (B*T, d)) over `batch` sequences of length `seq`; `mask`
  /// (A + 2KV) or null scales q, k and v.
  void forward(ParamArena<T>& arena, Context& ctx, const MatrixView<const T, Host>& x,
               const MatrixView<T, Host>& y, index_t batch, index_t seq,
               const T* mask = nullptr) const {
    const index_t n = x.rows();
    BONSAI_CHECK(n == batch * seq, "Attention: x has ", n, " rows but batch ", batch, " x seq ",
                 seq, " = ", batch * seq);
    ctx.shape = cpu::AttentionShape{batch, seq, m_heads, m_kv_heads, m_head_dim};
    const auto qkv = ctx.qkv.matrix(n, m_qkv.out_features());  // (N, A + 2KV)
    bonsai::forward(arena.bind_values(m_qkv, m_qkv_off), x, qkv, ctx.qkv_ctx,
                    epilogue::Bias<T>{vec(arena.values(), m_qkv_bias, m_qkv.out_features())});
    ctx.mask = mask;
    if (mask) detail::mask_columns(qkv, mask);
    if (m_rope) cpu::rope_forward(qkv, ctx.shape, m_table, index_t(0));
    const auto out = ctx.out.matrix(n, m_proj.in_features());  // (N, A)
    cpu::attention_forward(ctx.shape, MatrixView<const T, Host>(qkv), out, ctx.probs);
    bonsai::forward(arena.bind_values(m_proj, m_proj_off), MatrixView<const T, Host>(out), y,
                    ctx.proj_ctx, epilogue::Bias<T>{vec(arena.values(), m_proj_bias, m_width)});
  }

  /// dx = dL/dx (assigned) from dy (N, d); parameter gradients +=.
  void backward(ParamArena<T>& arena, Context& ctx, const MatrixView<const T, Host>& dy,
                const MatrixView<T, Host>& dx) const {
    const index_t n = dy.rows();
    const auto dout = ctx.dout.matrix(n, m_proj.in_features());  // (N, A)
    bonsai::backward(arena.bind_values(m_proj, m_proj_off), ctx.proj_ctx, dy, dout,
                     arena.bind_grads(m_proj, m_proj_off),
                     epilogue::Bias<T>{vec(arena.values(), m_proj_bias, m_width),
                                       vec(arena.grads(), m_proj_bias, m_width)});
    const auto dqkv = ctx.dqkv.matrix(n, m_qkv.out_features());  // (N, A + 2KV)
    const auto qkv = ctx.qkv.matrix(n, m_qkv.out_features());
    cpu::attention_backward(ctx.shape, MatrixView<const T, Host>(qkv), ctx.probs,
                            MatrixView<const T, Host>(dout), dqkv);
    if (m_rope) cpu::rope_backward(dqkv, ctx.shape, m_table, index_t(0));
    if (ctx.mask) detail::mask_columns(dqkv, ctx.mask);
    bonsai::backward(arena.bind_values(m_qkv, m_qkv_off), ctx.qkv_ctx,
                     MatrixView<const T, Host>(dqkv), dx, arena.bind_grads(m_qkv, m_qkv_off),
                     epilogue::Bias<T>{vec(arena.values(), m_qkv_bias, m_qkv.out_features()),
                                       vec(arena.grads(), m_qkv_bias, m_qkv.out_features())});
  }

  /// Decoding: y (B*n, d) for n new tokens per sequence at positions [pos, pos + n), attending
  /// to the keys and values in `cache` (which grows by n). Nothing is saved for backward.
  void decode(ParamArena<T>& arena, Context& ctx, const MatrixView<const T, Host>& x,
              const MatrixView<T, Host>& y, index_t batch, index_t n, index_t pos,
              cpu::KvCache<T>& cache, const T* mask = nullptr) const {
    const cpu::AttentionShape shape{batch, n, m_heads, m_kv_heads, m_head_dim};
    const auto qkv = ctx.qkv.matrix(x.rows(), m_qkv.out_features());  // (B*n, A + 2KV)
    bonsai::forward(arena.bind_values(m_qkv, m_qkv_off), x, qkv, ctx.qkv_ctx,
                    epilogue::Bias<T>{vec(arena.values(), m_qkv_bias, m_qkv.out_features())});
    if (mask) detail::mask_columns(qkv, mask);
    if (m_rope) cpu::rope_forward(qkv, shape, m_table, pos);
    const auto out = ctx.out.matrix(x.rows(), m_proj.in_features());  // (B*n, A)
    cpu::attention_decode(shape, MatrixView<const T, Host>(qkv), pos, cache, out);
    bonsai::forward(arena.bind_values(m_proj, m_proj_off), MatrixView<const T, Host>(out), y,
                    ctx.proj_ctx, epilogue::Bias<T>{vec(arena.values(), m_proj_bias, m_width)});
  }
  /// Forward FLOPs for `batch` sequences of `seq` tokens: the two projections plus the causal
  /// score and value products (each 2 A per attended key; on average (T + 1) / 2 keys).
  index_t flops(index_t batch, index_t seq) const {
    const index_t n = batch * seq;
    return m_qkv.flops(n) + m_proj.flops(n) + 2 * n * m_proj.in_features() * (seq + 1);
  }

 private:
  static VectorView<T> vec(T* base, index_t off, index_t n) { return VectorView<T>(base + off, {n}); }

  index_t m_width, m_heads, m_kv_heads, m_head_dim;
  bool m_rope;
  Dense<T> m_qkv, m_proj;
  cpu::RopeTable<T> m_table;
  index_t m_qkv_off = 0, m_qkv_bias = 0, m_proj_off = 0, m_proj_bias = 0;
};

}  // namespace bonsai
