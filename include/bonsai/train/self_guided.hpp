// bonsai/train/self_guided.hpp — self-guided training (SGT, spec §6) of a Gpt whose FFN maps
// are SelfGuided<S>: the schedule of the guide's weight a(t), which ticks once per optimizer
// step; setting a on every guided map before each micro-batch, with the stochastic reduce-flop
// variant; the FLOPs bookkeeping of the fixed-FLOPs budget; and the release of the guides when
// a reaches 0, after which the model is the plain Gpt<S, S> and the guides, their gradients and
// their optimizer moments no longer exist.
#pragma once

#include <cmath>
#include <numbers>
#include <string>
#include <string_view>

#include "../core/rng.hpp"
#include "../nn/gpt.hpp"
#include "../structured/self_guided.hpp"

namespace bonsai {

/// How a(t) falls from 1 to 0 over the guided steps.
enum class GuideDecay { cosine, linear };

inline GuideDecay parse_guide_decay(std::string_view s) {
  if (s == "cosine") return GuideDecay::cosine;
  if (s == "linear") return GuideDecay::linear;
  detail::fail("unknown SGT decay '", s, "' (expected cosine or linear)");
}
inline const char* to_string(GuideDecay d) { return d == GuideDecay::cosine ? "cosine" : "linear"; }

/// a(t) for optimizer step t (0-based) with T_g guided steps:
///   cosine: a(t) = (1 + cos(pi t / T_g)) / 2,   linear: a(t) = 1 - t / T_g,   for t < T_g;
///   a(t) = 0 for t >= T_g, when the guides are released.
/// a(0) = 1, so the structured maps get no gradient on the first step; a never increases.
struct GuideSchedule {
  GuideDecay decay = GuideDecay::cosine;
  index_t guided_steps = 0;  // T_g

  /// T_g = floor(ratio * total_steps): SGT over the first `ratio` of the optimizer steps.
  static GuideSchedule over_fraction(GuideDecay decay, double ratio, index_t total_steps) {
    BONSAI_CHECK(ratio >= 0 && ratio <= 1, "SGT: ratio ", ratio, " is outside [0, 1]");
    BONSAI_CHECK(total_steps >= 0, "SGT: total steps ", total_steps, " is negative");
    return {decay, index_t(std::floor(ratio * double(total_steps)))};
  }

  double alpha(index_t step) const {
    if (step >= guided_steps) return 0.0;
    const double x = double(std::max<index_t>(step, 0)) / double(guided_steps);
    return decay == GuideDecay::cosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * x)) : 1.0 - x;
  }
  /// Whether the guides are gone before step t runs.
  bool released(index_t step) const noexcept { return step >= guided_steps; }
};

/// A Gpt whose FFN maps carry dense guides.
template <class SU, class SD>
using GuidedGpt = Gpt<SelfGuided<SU>, SelfGuided<SD>>;

/// Sets a = alpha on every guided map of the model (a deterministic blend).
template <class SU, class SD>
void set_guides(GuidedGpt<SU, SD>& model, double alpha) {
  for (auto& block : model.blocks())
    block.mlp().for_each_map([&](auto& map) { map.set_alpha(alpha); });
}

/// Sets a for the next micro-batch. Without reduce_flop every map gets alpha. With it, each map
/// draws u ~ U(0, 1) and gets alpha when u < alpha, else 0: the pure structured path, the guide
/// not computed. The guide then runs on a fraction alpha of the (map, micro-batch) pairs, half a
/// dense FFN on average over a cosine or linear schedule. The draws are per FFN linear map.
template <class SU, class SD>
void set_guides(GuidedGpt<SU, SD>& model, double alpha, bool reduce_flop, Rng& rng) {
  if (!reduce_flop) return set_guides(model, alpha);
  for (auto& block : model.blocks())
    block.mlp().for_each_map([&](auto& map) { map.set_alpha(rng.uniform() < alpha ? alpha : 0.0); });
}

/// Forward FLOPs of every guide for `tokens` tokens: 2 tokens in out per guided map.
template <class SU, class SD>
index_t guide_flops(const GuidedGpt<SU, SD>& model, index_t tokens) {
  index_t total = 0;
  for (const auto& block : model.blocks()) {
    const auto& mlp = block.mlp();
    const index_t maps_in = mlp.act() == ActKind::swiglu ? 3 : 2;  // up (+ gate) + down
    total += 2 * tokens * mlp.width() * mlp.hidden() * maps_in;
  }
  return total;
}

/// The plain structured model with the guided model's parameters, the guides dropped. Carry
/// the optimizer with AdamW::carried_to(guided.arena(), plain.arena()).
template <class SU, class SD>
Gpt<SU, SD> release_guides(const GuidedGpt<SU, SD>& guided) {
  Gpt<SU, SD> plain(guided.config());
  const auto missing = copy_by_name(guided.arena(), guided.arena().values(), plain.arena(),
                                    plain.arena().values());
  BONSAI_CHECK(missing.empty(), "release_guides: the guided model has no parameter '",
               missing.front(), "'");
  return plain;
}

/// Guided steps T_g of the fixed-FLOPs budget (spec §6): a structured run of `base_steps` is
/// extended by T_g steps (which repeat the earliest data) so that its training FLOPs equal the
/// dense model's over base_steps:
///   (base + T_g) F_s + m T_g D = base F_d,  T_g = base (F_d - F_s) / (F_s + m D),
/// with F_d and F_s the training FLOPs per step of the dense and the structured model, D those
/// of the guides, and m the guides' mean activity over the guided phase (0.5 with reduce-flop,
/// 1 without). Rounded down, so the run never spends more than the dense budget.
inline index_t guided_steps_for_equal_flops(index_t base_steps, double dense_flops,
                                            double structured_flops, double guide_flops,
                                            double mean_active) {
  BONSAI_CHECK(structured_flops > 0 && dense_flops >= structured_flops && guide_flops >= 0,
               "SGT: the structured model (", structured_flops, " FLOPs per step) must be cheaper "
               "than the dense one (", dense_flops, ")");
  return index_t(std::floor(double(base_steps) * (dense_flops - structured_flops) /
                            (structured_flops + mean_active * guide_flops)));
}

}  // namespace bonsai
