// bonsai/nn/premerge.hpp — pre-merged decoding of a trained model (spec §7): premerge() turns
// Gpt<SU, SD> into Gpt<PreMerged<SU>, PreMerged<SD>>, in which every structured FFN map keeps
// its factors beside W_merged = S.to_dense() and each call takes the dense GEMM for at most
// max_merged_tokens tokens and the structured chain above. The thresholds are calibrated once,
// by timing one up and one down map of the model (every layer has the same shapes), or given.
// The result is for decoding and evaluation; its outputs equal the trained model's up to
// rounding at every token count. merged_dense() multiplies every map out for good, giving the
// dense model of the same function (for export to GPT-2 formats).
#pragma once

#include <optional>

#include "../backend/cpu/pre_merged.hpp"
#include "gpt.hpp"

namespace bonsai {

template <class SU, class SD>
using PremergedGpt = Gpt<PreMerged<SU>, PreMerged<SD>>;

/// The thresholds premerge() chose: calls with at most this many tokens use W_merged.
struct PremergeThresholds {
  index_t up = 0;    // up (and gate) maps, d -> F
  index_t down = 0;  // down maps, F -> d
};

/// The pre-merged decoder of `trained`, with thresholds `given` or, when empty, calibrated for
/// token counts 1, 2, 4, ..., max_tokens on this machine.
template <class SU, class SD>
PremergedGpt<SU, SD> premerge(Gpt<SU, SD>& trained, std::optional<PremergeThresholds> given = {},
                              index_t max_tokens = 256) {
  BONSAI_CHECK(trained.config().moe_experts == 0, "premerge: a model with Mixture-of-Experts "
               "layers is not pre-merged (its experts run on a few tokens each)");
  PremergedGpt<SU, SD> merged(trained.config());
  auto& arena = merged.arena();
  for (const std::string& name : copy_by_name(trained.arena(), trained.arena().values(), arena, arena.values()))
    BONSAI_CHECK(name.ends_with(".merged"), "premerge: the trained model has no parameter '", name, "'");
  for (auto& block : merged.blocks())
    block.mlp().for_each_bound_map(arena, [](const auto& map) { merge(map); });

  PremergeThresholds t = given.value_or(PremergeThresholds{});
  if (!given && !merged.blocks().empty()) {
    auto& mlp = merged.blocks().front().mlp();
    bool have_up = false;
    mlp.for_each_bound_map(arena, [&](auto map) {
      const bool is_up = map.in_features() == mlp.width();
      if (is_up && have_up) return;  // the gate has the up map's shape and threshold
      (is_up ? t.up : t.down) = calibrate(map, max_tokens).max_merged_tokens;
      have_up = have_up || is_up;
    });
  }
  for (auto& block : merged.blocks()) {
    const index_t width = block.mlp().width();
    block.mlp().for_each_map([&](auto& map) {
      map.set_max_merged_tokens(map.in_features() == width ? t.up : t.down);
    });
  }
  return merged;
}

/// The dense model that computes what `trained` does: every structured FFN map multiplied out
/// (W = S.to_dense(), BlockShuffle's shuffles included), everything else copied. It is an
/// ordinary dense GPT, so it exports to the GPT-2 formats (train/gpt2_io.hpp).
template <class SU, class SD>
Gpt<Dense<scalar_of<SU>>, Dense<scalar_of<SU>>> merged_dense(Gpt<SU, SD>& trained) {
  using T = scalar_of<SU>;
  BONSAI_CHECK(trained.config().moe_experts == 0, "merged_dense: a model with Mixture-of-Experts "
               "layers has no dense equivalent");
  GptConfig config = trained.config();
  config.ffn = FfnKind::dense;
  config.rank = config.blocks = 0;
  Gpt<Dense<T>, Dense<T>> dense(config);
  auto& arena = dense.arena();
  copy_by_name(trained.arena(), trained.arena().values(), arena, arena.values());
  const std::size_t first = trained.first_block().has_value() ? 1 : 0;
  for (std::size_t i = 0; i < trained.blocks().size(); ++i) {
    std::vector<Matrix<T>> merged;
    trained.blocks()[i].mlp().for_each_bound_map(trained.arena(),
                                                 [&](const auto& map) { merged.push_back(map.to_dense()); });
    std::size_t k = 0;
    dense.blocks()[first + i].mlp().for_each_bound_map(arena, [&](const auto& map) {
      as_eigen(map.weight()) = as_eigen(merged[k++]);
    });
  }
  return dense;
}

/// The thresholds a pre-merged model uses (those of its first structured layer).
template <class SU, class SD>
PremergeThresholds premerge_thresholds(PremergedGpt<SU, SD>& model) {
  PremergeThresholds t;
  if (model.blocks().empty()) return t;
  auto& mlp = model.blocks().front().mlp();
  mlp.for_each_map([&](const auto& map) {
    (map.in_features() == mlp.width() ? t.up : t.down) = map.max_merged_tokens();
  });
  return t;
}

}  // namespace bonsai
