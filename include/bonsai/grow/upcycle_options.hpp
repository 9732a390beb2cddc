// bonsai/grow/upcycle_options.hpp — what an upcycling (grow/upcycle.hpp) does: E experts, top
// k, the gating, the granularity G (shards per copy of the FFN), the router's start and where
// the experts' factor goes, with the query whether these keep the function (spec growth.md §9,
// §13.7), and the config of a model upcycled with them. Configuration only, so growth plans can
// carry it.
#pragma once

#include <cstdint>
#include <string_view>

#include "../core/error.hpp"
#include "../nn/config.hpp"

namespace bonsai {

/// How the upcycled router starts.
enum class RouterInit {
  random,  // rows N(0, router_std^2); the G experts of one copy share a row when G > 1
  zero,    // every logit 0: ties go to the lowest experts, every probability is 1 / E
};
/// Where the experts' output factor c goes (see the header comment).
enum class UpcycleScale {
  down,   // c on the down map, the down bias times c_b: exact for any activation
  split,  // sqrt(c) on up and its bias, sqrt(c) on down: exact for SwiGLU only
  none,   // plain copies, the original recipe: exact only where c = 1 (top-k then softmax, G 1)
};

inline const char* to_string(RouterInit r) { return r == RouterInit::random ? "random" : "zero"; }
inline RouterInit parse_router_init(std::string_view s) {
  return detail::parse_kind(s, "router init", {RouterInit::random, RouterInit::zero});
}
inline const char* to_string(UpcycleScale s) {
  return s == UpcycleScale::down ? "down" : s == UpcycleScale::split ? "split" : "none";
}
inline UpcycleScale parse_upcycle_scale(std::string_view s) {
  return detail::parse_kind(s, "upcycle scale",
                            {UpcycleScale::down, UpcycleScale::split, UpcycleScale::none});
}

struct UpcycleOptions {
  index_t experts = 8;  // E, a multiple of the granularity
  index_t top_k = 2;    // k; exact only when a multiple of the granularity
  Gating gating = Gating::topk_softmax;
  index_t granularity = 1;  // G shards per copy of the FFN (1: every expert is a whole copy)
  RouterInit router = RouterInit::random;
  /// G > 1: the G experts of one copy share their random router row (a virtual group), so a
  /// token picks whole copies; off, every row is drawn on its own.
  bool virtual_groups = true;
  UpcycleScale scale = UpcycleScale::down;
  double router_std = 0.02;
  std::uint64_t seed = 1;
  /// Whole models: every `every`-th layer becomes a MoE layer (2: every other one).
  index_t every = 2;

  /// Throws unless E, k and G fit together and with an FFN of `hidden` units.
  void check(index_t hidden) const {
    BONSAI_CHECK(granularity >= 1 && experts >= 1 && experts % granularity == 0,
                 "upcycle: ", experts, " experts cannot be made of whole copies cut into ",
                 granularity, " shards");
    BONSAI_CHECK(top_k >= 1 && top_k <= experts, "upcycle: top_k = ", top_k,
                 " must lie between 1 and the number of experts, ", experts);
    BONSAI_CHECK(hidden % granularity == 0, "upcycle: an FFN of ", hidden,
                 " hidden units cannot be cut into ", granularity, " equal shards");
    BONSAI_CHECK(router_std >= 0, "upcycle: router_std = ", router_std, " is negative");
  }

  /// The factor c on each expert's down map and c_b on its down bias that make the chosen
  /// experts sum to the FFN (before the scale policy places them).
  double down_factor() const {
    return gating == Gating::topk_softmax ? double(granularity)
                                          : double(experts) * double(granularity) / double(top_k);
  }
  double bias_factor() const {
    return gating == Gating::topk_softmax ? 1.0 : double(experts) / double(top_k);
  }

  /// Whether the upcycled layer computes the FFN exactly (spec growth.md §9): k whole copies
  /// per token, gates that count one copy once, and a scale that passes the activation.
  bool function_preserving(ActKind act) const {
    if (top_k % granularity != 0) return false;
    if (router == RouterInit::random && granularity > 1 && !virtual_groups) return false;
    // With k = E both gatings weigh every expert by its softmax probability.
    if (gating == Gating::softmax_topk && router != RouterInit::zero && top_k != experts)
      return false;
    if (scale == UpcycleScale::none) return down_factor() == 1.0 && bias_factor() == 1.0;
    if (scale == UpcycleScale::split) return down_factor() == 1.0 || act == ActKind::swiglu;
    return true;
  }
};

/// The config of `c` with every o.every-th FFN upcycled: E experts of F / G units, top k.
inline GptConfig upcycled_config(const GptConfig& c, const UpcycleOptions& o) {
  BONSAI_CHECK(c.moe_experts == 0, "upcycle: the model already has Mixture-of-Experts layers (",
               c.moe_experts, " experts)");
  o.check(c.ffn_width());
  GptConfig out = c;
  out.moe_experts = o.experts;
  out.moe_top_k = o.top_k;
  out.moe_gating = o.gating;
  out.moe_every = o.every;
  out.moe_ffn_dim = c.ffn_width() / o.granularity;
  out.validate();
  return out;
}

}  // namespace bonsai
