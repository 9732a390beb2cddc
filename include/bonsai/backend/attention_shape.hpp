// bonsai/backend/attention_shape.hpp — AttentionShape: the sizes of one causal self-attention
// call, shared by every backend's attention, RoPE and decoding kernels.
#pragma once

#include <ostream>

#include "../core/error.hpp"
#include "../config.hpp"

namespace bonsai {

/// Sizes of one causal self-attention call: batch B, sequence length T, query heads Hq,
/// key/value heads Hkv (Hq % Hkv == 0; Hkv == Hq is multi-head attention), head width hd.
struct AttentionShape {
  index_t batch = 0, seq = 0, heads = 0, kv_heads = 0, head_dim = 0;

  index_t tokens() const noexcept { return batch * seq; }               // B*T
  index_t q_width() const noexcept { return heads * head_dim; }         // A
  index_t kv_width() const noexcept { return kv_heads * head_dim; }     // KV
  index_t qkv_width() const noexcept { return q_width() + 2 * kv_width(); }  // A + 2KV
  /// Query heads per kv head, Hq / Hkv.
  index_t group() const noexcept { return heads / kv_heads; }
  /// Elements of the saved probabilities (B, Hq, T, T).
  index_t probs_size() const noexcept { return batch * heads * seq * seq; }

  /// Throws bonsai::Error unless every size is positive and Hkv divides Hq.
  void validate() const {
    BONSAI_CHECK(batch > 0 && seq > 0 && heads > 0 && kv_heads > 0 && head_dim > 0,
                 "attention: every size must be positive, got ", *this);
    BONSAI_CHECK(heads % kv_heads == 0, "attention: heads = ", heads,
                 " is not divisible by kv_heads = ", kv_heads, " in ", *this);
  }

  friend std::ostream& operator<<(std::ostream& os, const AttentionShape& s) {
    return os << "AttentionShape{batch " << s.batch << ", seq " << s.seq << ", heads " << s.heads
              << ", kv_heads " << s.kv_heads << ", head_dim " << s.head_dim << '}';
  }
};

}  // namespace bonsai
