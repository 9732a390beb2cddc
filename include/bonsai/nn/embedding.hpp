// bonsai/nn/embedding.hpp — Embedding<T, Space>: x[b, t] = wte[token[b, t]] + wpe[t], with the token
// table "wte" (V, C) (tied with the output head in Gpt) and, for learned positions, "wpe"
// (T_max, C). Initialised N(0, std^2).
#pragma once

#include <cstdint>

#include "../backend/cpu.hpp"
#include "../core/rng.hpp"
#include "arena.hpp"

namespace bonsai {

template <class T, class Space = Host>
class Embedding {
 public:
  using Arena = ParamArena<T, Space>;

  Embedding() = default;
  Embedding(index_t vocab, index_t width, index_t max_seq, bool learned_positions)
      : m_vocab(vocab), m_width(width), m_max_seq(learned_positions ? max_seq : 0) {}

  void declare(Arena& arena) {
    m_wte = arena.add("wte", {m_vocab, m_width});
    if (m_max_seq) m_wpe = arena.add("wpe", {m_max_seq, m_width});
  }
  void init(Arena& arena, Rng& rng, double stddev) const {
    fill_normal(wte(arena), rng, 0.0, stddev);
    if (m_max_seq) fill_normal(wpe(arena), rng, 0.0, stddev);
  }

  /// y (B*T, C) = embedding of tokens (B*T, in Space's memory) at positions pos0 + t.
  void forward(Arena& arena, const std::int32_t* tokens, index_t batch, index_t seq,
               index_t pos0, const MatrixView<T, Space>& y, EmbeddingState<Space>& state) const {
    Ops<Space>::template embedding_forward<T>(tokens, batch, seq, pos0, wte(arena),
                                              m_max_seq ? wpe(arena) : MatrixView<T, Space>{}, y, state);
  }
  /// dwte, dwpe += scatter of dy (B*T, C).
  void backward(Arena& arena, const std::int32_t* tokens, index_t batch, index_t seq,
                const MatrixView<const T, Space>& dy, EmbeddingState<Space>& state) const {
    Ops<Space>::template embedding_backward<T>(
        tokens, batch, seq, dy, grad(arena, m_wte, m_vocab),
        m_max_seq ? grad(arena, m_wpe, m_max_seq) : MatrixView<T, Space>{}, state);
  }

  /// The token table (V, C), shared with the output head.
  MatrixView<T, Space> wte(Arena& arena) const {
    return matrix_view<Space>(arena.values() + m_wte, m_vocab, m_width);
  }
  MatrixView<T, Space> dwte(Arena& arena) const { return grad(arena, m_wte, m_vocab); }
  MatrixView<T, Space> wpe(Arena& arena) const {
    return matrix_view<Space>(arena.values() + m_wpe, m_max_seq, m_width);
  }
  index_t vocab() const noexcept { return m_vocab; }
  index_t max_seq() const noexcept { return m_max_seq; }

 private:
  MatrixView<T, Space> grad(Arena& arena, index_t off, index_t rows) const {
    return matrix_view<Space>(arena.grads() + off, rows, m_width);
  }
  index_t m_vocab = 0, m_width = 0, m_max_seq = 0;
  index_t m_wte = 0, m_wpe = 0;
};

}  // namespace bonsai
