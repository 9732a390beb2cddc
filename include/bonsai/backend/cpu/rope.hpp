// bonsai/backend/cpu/rope.hpp — rotary position embeddings, non-interleaved ("rotate half",
// GPT-NeoX / Llama convention): in every query and key head, the pair (x_i, x_{i+hd/2}) at
// position p is rotated by the angle p · base^(−2i/hd): (x_i cos − x_{i+hd/2} sin,
// x_{i+hd/2} cos + x_i sin). Backward applies the inverse (transposed) rotation to the gradients.
#pragma once

#include <cmath>

#include "../../core/parallel.hpp"
#include "../../core/tensor.hpp"
#include "attention.hpp"

namespace bonsai::cpu {

/// cos and sin of every rotation angle, (max_T, hd/2) each: angle(p, i) = p · base^(−2i/hd),
/// computed in double and stored as T.
template <class T>
class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(index_t max_seq, index_t head_dim, double base = 10000.0)
      : m_head_dim(head_dim), m_base(base) {
    BONSAI_CHECK(max_seq > 0 && head_dim > 0 && head_dim % 2 == 0 && base > 0,
                 "RopeTable: needs max_seq > 0, an even head_dim > 0 and base > 0, got max_seq = ",
                 max_seq, ", head_dim = ", head_dim, ", base = ", base);
    const index_t half = head_dim / 2;
    m_cos = Tensor<T, 2>(max_seq, half);
    m_sin = Tensor<T, 2>(max_seq, half);
    for (index_t i = 0; i < half; ++i) {
      const double inv_freq = std::pow(base, -2.0 * double(i) / double(head_dim));
      for (index_t p = 0; p < max_seq; ++p) {
        const double angle = double(p) * inv_freq;
        m_cos(p, i) = T(std::cos(angle));
        m_sin(p, i) = T(std::sin(angle));
      }
    }
  }

  index_t max_seq() const noexcept { return m_cos.rows(); }
  index_t head_dim() const noexcept { return m_head_dim; }
  double base() const noexcept { return m_base; }
  /// cos / sin of the hd/2 angles at position p.
  const T* cos(index_t p) const noexcept { return m_cos.data() + p * m_cos.cols(); }  // (hd/2)
  const T* sin(index_t p) const noexcept { return m_sin.data() + p * m_sin.cols(); }  // (hd/2)

 private:
  Tensor<T, 2> m_cos, m_sin;  // (max_T, hd/2)
  index_t m_head_dim = 0;
  double m_base = 10000.0;
};

namespace detail {

/// The checks of rope_forward / rope_backward in every backend: qkv (rows, cols) with column
/// stride col_stride against the shape, and the table's head_dim and max_seq against the positions.
inline void check_rope(const char* who, const AttentionShape& s, index_t rows, index_t cols, index_t col_stride,
                       index_t table_head_dim, index_t table_max_seq, index_t pos) {
  s.validate();
  BONSAI_CHECK(rows == s.tokens() && cols == s.qkv_width() && col_stride == 1, who, ": qkv has shape ",
               shape{rows, cols}, " but ", s, " takes ", shape{s.tokens(), s.qkv_width()}, " with contiguous rows");
  BONSAI_CHECK(table_head_dim == s.head_dim, who, ": the RopeTable has head_dim ", table_head_dim, " but ", s);
  BONSAI_CHECK(pos >= 0 && pos + s.seq <= table_max_seq, who, ": positions [", pos, ", ", pos + s.seq,
               ") exceed the RopeTable's max_seq = ", table_max_seq);
}

/// Rotates the query and key heads of every row of x (B*T, A + 2KV) in place; `sign` = +1 is
/// the forward rotation, −1 its inverse.
template <class T>
void rope_apply(const char* who, const AttentionShape& s, const RopeTable<T>& table, const MatrixView<T>& x,
                index_t pos, T sign) {
  check_rope(who, s, x.rows(), x.cols(), x.stride(1), table.head_dim(), table.max_seq(), pos);
  const index_t Tn = s.seq, hd = s.head_dim, half = hd / 2, rotated = s.heads + s.kv_heads;
  parallel_for(
      s.tokens(),
      [&](index_t row) {
        const index_t p = pos + row % Tn;
        const T* c = table.cos(p);
        const T* sn = table.sin(p);
        T* base = x.data() + row * x.ld();
        // Query heads and key heads are adjacent: columns [0, (Hq + Hkv) hd).
        for (index_t head = 0; head < rotated; ++head) {
          T* a = base + head * hd;
          T* b = a + half;
          for (index_t i = 0; i < half; ++i) {
            const T x1 = a[i], x2 = b[i], si = sign * sn[i];
            a[i] = x1 * c[i] - x2 * si;
            b[i] = x2 * c[i] + x1 * si;
          }
        }
      },
      rotated * hd * 3);
}

}  // namespace detail

/// Rotates the queries and keys of qkv (B*T, A + 2KV) in place; row b*T + t is at position
/// pos + t (pos + T <= table.max_seq()). Values are untouched.
template <class T>
void rope_forward(const MatrixView<T>& qkv, const AttentionShape& shape,
                  const RopeTable<std::type_identity_t<T>>& table, index_t pos = 0) {
  detail::rope_apply<T>("rope_forward", shape, table, qkv, pos, T(1));
}

/// The transposed (inverse) rotation of rope_forward, applied in place to the query and key
/// gradients of dqkv (B*T, A + 2KV); value gradients are untouched.
template <class T>
void rope_backward(const MatrixView<T>& dqkv, const AttentionShape& shape,
                   const RopeTable<std::type_identity_t<T>>& table, index_t pos = 0) {
  detail::rope_apply<T>("rope_backward", shape, table, dqkv, pos, T(-1));
}

}  // namespace bonsai::cpu
