// bonsai/nn/config.hpp — GptConfig: everything that fixes a GPT-style model's shape. GPT-2 is
// the default (LayerNorm, learned positions, tanh-GELU FFN, dense everywhere); the Llama-style
// options (RMSNorm, rotary positions, SwiGLU), the structured FFNs and Mixture-of-Experts FFN
// layers are switches on it.
#pragma once

#include <algorithm>

#include <string>
#include <string_view>

#include "../core/error.hpp"

namespace bonsai {

enum class NormKind { layernorm, rmsnorm };
enum class PosKind { learned, rope };
enum class ActKind { gelu, swiglu };
enum class FfnKind { dense, lowrank, blockdense, blockshuffle };
/// How a Mixture-of-Experts router turns the logits of a token's chosen experts into weights.
enum class Gating {
  topk_softmax,  // choose the top k logits, softmax over them (Mixtral); weights sum to 1
  softmax_topk,  // softmax over all experts, keep the top k probabilities (Switch, GShard)
};

struct GptConfig {
  index_t vocab_size = 50257;
  index_t max_seq_len = 1024;
  index_t n_layer = 12;
  index_t d_model = 768;
  index_t n_head = 12;      // query heads
  index_t n_kv_head = 0;    // key/value heads (grouped-query attention); 0 means n_head
  index_t attn_dim = 0;     // n_head * head_dim; 0 means d_model
  index_t ffn_dim = 0;      // FFN hidden width; 0 means 4 * d_model
  NormKind norm = NormKind::layernorm;
  PosKind pos = PosKind::learned;
  ActKind act = ActKind::gelu;
  FfnKind ffn = FfnKind::dense;
  index_t rank = 0;          // LowRank / BlockDense rank
  index_t blocks = 0;        // BlockDense / BlockShuffle blocks
  bool dense_first_ffn = true;  // keep layer 0's FFN dense (the paper's default)
  // Mixture-of-Experts FFN layers (nn/moe.hpp): with moe_experts E > 0, every moe_every-th
  // layer (layers moe_every - 1, 2 moe_every - 1, ...) has E experts of moe_ffn_dim hidden
  // units, moe_top_k chosen per token, and the loss adds moe_aux_loss times each such layer's
  // load-balancing loss.
  index_t moe_experts = 0;     // 0: no MoE layers
  index_t moe_top_k = 2;
  index_t moe_every = 2;       // every other layer, as sparse upcycling and V-MoE do
  index_t moe_ffn_dim = 0;     // an expert's hidden width; 0 means the FFN width
  Gating moe_gating = Gating::topk_softmax;
  double moe_aux_loss = 0.01;  // Switch Transformer's coefficient
  double norm_eps = 1e-5;
  double rope_base = 10000.0;
  double init_std = 0.02;

  index_t kv_heads() const { return n_kv_head ? n_kv_head : n_head; }
  index_t attention_width() const { return attn_dim ? attn_dim : d_model; }
  index_t head_dim() const { return attention_width() / n_head; }
  index_t kv_width() const { return kv_heads() * head_dim(); }
  index_t ffn_width() const { return ffn_dim ? ffn_dim : 4 * d_model; }
  index_t moe_hidden() const { return moe_ffn_dim ? moe_ffn_dim : ffn_width(); }
  /// Whether layer `l`'s FFN is a Mixture-of-Experts layer.
  bool moe_layer(index_t l) const { return moe_experts > 0 && l % moe_every == moe_every - 1; }
  /// Whether layer `l`'s FFN uses the configured structure (else it is dense).
  bool structured_ffn(index_t l) const {
    return ffn != FfnKind::dense && !(dense_first_ffn && l == 0);
  }

  /// Throws bonsai::Error naming the first inconsistent field.
  /// No extent may exceed 2^24: a larger one is a typo or a corrupt file, not a model.
  static constexpr index_t max_extent = index_t(1) << 24;

  void validate() const {
    auto positive = [](const char* what, index_t v) {
      BONSAI_CHECK(v > 0, "GptConfig: ", what, " must be positive, got ", v);
      BONSAI_CHECK(v <= max_extent, "GptConfig: ", what, " = ", v, " exceeds the limit of ",
                   max_extent, " on any extent");
    };
    positive("vocab_size", vocab_size);
    positive("max_seq_len", max_seq_len);
    positive("n_layer", n_layer);
    positive("d_model", d_model);
    positive("n_head", n_head);
    BONSAI_CHECK(n_kv_head >= 0 && attn_dim >= 0 && ffn_dim >= 0,
                 "GptConfig: n_kv_head, attn_dim and ffn_dim must be >= 0 (0 = default)");
    if (n_kv_head) positive("n_kv_head", n_kv_head);
    if (attn_dim) positive("attn_dim", attn_dim);
    if (ffn_dim) positive("ffn_dim", ffn_dim);
    BONSAI_CHECK(attention_width() % n_head == 0, "GptConfig: attention width ",
                 attention_width(), " is not divisible by n_head = ", n_head);
    BONSAI_CHECK(n_head % kv_heads() == 0, "GptConfig: n_head = ", n_head,
                 " is not a multiple of n_kv_head = ", kv_heads());
    BONSAI_CHECK(pos != PosKind::rope || head_dim() % 2 == 0,
                 "GptConfig: rotary embeddings need an even head dimension, got ", head_dim());
    if (ffn == FfnKind::lowrank || ffn == FfnKind::blockdense) {
      positive("rank", rank);
      BONSAI_CHECK(rank <= std::min(d_model, ffn_width()), "GptConfig: rank ", rank,
                   " exceeds min(d_model, FFN width) = min(", d_model, ", ", ffn_width(), ")");
    }
    if (ffn == FfnKind::blockdense || ffn == FfnKind::blockshuffle) positive("blocks", blocks);
    BONSAI_CHECK(moe_experts >= 0 && moe_ffn_dim >= 0,
                 "GptConfig: moe_experts and moe_ffn_dim must be >= 0 (0 = none, default)");
    if (moe_experts) positive("moe_experts", moe_experts);
    if (moe_ffn_dim) positive("moe_ffn_dim", moe_ffn_dim);
    if (moe_experts > 0) {
      BONSAI_CHECK(moe_top_k >= 1 && moe_top_k <= moe_experts, "GptConfig: moe_top_k = ",
                   moe_top_k, " must lie between 1 and moe_experts = ", moe_experts);
      BONSAI_CHECK(moe_every >= 1 && moe_every <= n_layer, "GptConfig: moe_every = ", moe_every,
                   " must lie between 1 and n_layer = ", n_layer);
      BONSAI_CHECK(moe_aux_loss >= 0, "GptConfig: moe_aux_loss = ", moe_aux_loss,
                   " must not be negative");
    }
  }
};

inline const char* to_string(NormKind k) { return k == NormKind::layernorm ? "layernorm" : "rmsnorm"; }
inline const char* to_string(PosKind k) { return k == PosKind::learned ? "learned" : "rope"; }
inline const char* to_string(ActKind k) { return k == ActKind::gelu ? "gelu" : "swiglu"; }
inline const char* to_string(FfnKind k) {
  switch (k) {
    case FfnKind::dense: return "dense";
    case FfnKind::lowrank: return "lowrank";
    case FfnKind::blockdense: return "blockdense";
    case FfnKind::blockshuffle: return "blockshuffle";
  }
  return "?";
}

namespace detail {
template <class E, std::size_t N>
E parse_kind(std::string_view s, const char* what, const E (&values)[N]) {
  std::string options;
  for (E v : values) {
    if (s == to_string(v)) return v;
    options += options.empty() ? "" : "|";
    options += to_string(v);
  }
  fail("unknown ", what, " '", s, "' (expected ", options, ")");
}
}  // namespace detail

inline NormKind parse_norm(std::string_view s) {
  return detail::parse_kind(s, "norm", {NormKind::layernorm, NormKind::rmsnorm});
}
inline PosKind parse_pos(std::string_view s) {
  return detail::parse_kind(s, "position embedding", {PosKind::learned, PosKind::rope});
}
inline ActKind parse_act(std::string_view s) {
  return detail::parse_kind(s, "activation", {ActKind::gelu, ActKind::swiglu});
}
inline const char* to_string(Gating g) {
  return g == Gating::topk_softmax ? "topk_softmax" : "softmax_topk";
}
inline Gating parse_gating(std::string_view s) {
  return detail::parse_kind(s, "gating", {Gating::topk_softmax, Gating::softmax_topk});
}
inline FfnKind parse_ffn(std::string_view s) {
  return detail::parse_kind(
      s, "FFN structure",
      {FfnKind::dense, FfnKind::lowrank, FfnKind::blockdense, FfnKind::blockshuffle});
}

}  // namespace bonsai
