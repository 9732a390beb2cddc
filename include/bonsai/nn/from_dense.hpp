// bonsai/nn/from_dense.hpp — fit_from_dense(dense, structured): a structured GPT started from a
// trained dense one of the same shape. Embeddings, norms, attention and any dense FFN (layer 0's,
// by default) are copied; every structured FFN map becomes the member of its structure nearest
// to the dense weight (structured/fit.hpp: truncated SVDs). The inverse of merged_dense
// (nn/premerge.hpp) up to that approximation: a LowRank model of full rank computes exactly
// what the dense one does.
#pragma once

#include <string>
#include <tuple>
#include <vector>

#include "../structured/fit.hpp"
#include "gpt.hpp"

namespace bonsai {

/// Sets `out` (bound, any FFN structure) to the fit of `dense`: same config but for the FFN
/// structure, no Mixture-of-Experts layers.
template <class T, class SU, class SD>
void fit_from_dense(Gpt<Dense<T>, Dense<T>>& dense, Gpt<SU, SD>& out) {
  static_assert(std::is_same_v<scalar_of<SU>, T>,
                "fit_from_dense: the dense and the structured model must share one scalar type");
  const GptConfig& want = out.config();
  const GptConfig& have = dense.config();
  BONSAI_CHECK(want.moe_experts == 0 && have.moe_experts == 0, "fit_from_dense: a "
               "Mixture-of-Experts model is grown from a dense one by upcycling (grow/upcycle.hpp), "
               "not fitted");
  BONSAI_CHECK(have.ffn == FfnKind::dense, "fit_from_dense: the source has ", to_string(have.ffn),
               " FFNs; it must be dense");
  const auto shape = [](const GptConfig& c) {
    return std::tuple{c.vocab_size, c.max_seq_len, c.n_layer, c.d_model, c.n_head, c.kv_heads(),
                      c.attention_width(), c.ffn_width(), c.norm, c.pos, c.act};
  };
  BONSAI_CHECK(shape(want) == shape(have), "fit_from_dense: the dense model (", have.n_layer,
               " layers, d_model ", have.d_model, ", FFN ", have.ffn_width(), ", vocabulary ",
               have.vocab_size, ", ", have.max_seq_len, " positions) and the structured one (",
               want.n_layer, " layers, d_model ", want.d_model, ", FFN ", want.ffn_width(),
               ", vocabulary ", want.vocab_size, ", ", want.max_seq_len,
               " positions) differ in more than the FFN structure");
  // Everything but the structured FFN maps' factors is copied (shapes checked).
  for (const std::string& name :
       copy_by_name(dense.arena(), dense.arena().values(), out.arena(), out.arena().values()))
    BONSAI_CHECK(name.find(".mlp.") != std::string::npos, "fit_from_dense: the dense model has no '",
                 name, "'");
  const std::size_t first = out.first_block().has_value() ? 1 : 0;
  for (std::size_t i = 0; i < out.blocks().size(); ++i) {
    std::vector<MatrixView<const T, Host>> weights;  // each (out, in) of the dense FFN, in order
    dense.blocks()[first + i].mlp().for_each_bound_map(dense.arena(), [&](const auto& map) {
      weights.push_back(MatrixView<const T, Host>(map.weight()));
    });
    std::size_t k = 0;
    out.blocks()[i].mlp().for_each_bound_map(out.arena(),
                                             [&](const auto& map) { fit_dense(map, weights[k++]); });
  }
}

}  // namespace bonsai
