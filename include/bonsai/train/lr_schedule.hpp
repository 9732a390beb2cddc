// bonsai/train/lr_schedule.hpp — LrSchedule: the learning rate at each step. Warm-up is linear,
// lr(s) = peak (s + 1) / warmup for s < warmup (llm.c's convention: step 0 already moves); then
// either constant, or a cosine from peak down to floor = min_lr_fraction * peak at total_steps:
// lr(s) = floor + (peak - floor) (1 + cos(pi (s - warmup) / (total - warmup))) / 2, floor after;
// or warm-up, stable, decay (WSD): peak until the last D = round(decay_fraction * total) steps,
// then lr(s) = floor + (peak - floor) S(x), x = (s - (total - D)) / D, with the decay's shape
// S(x) = 1 - x (linear), 1 - sqrt(x) (sqrt) or (1 + cos(pi x)) / 2 (cosine), floor after.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <numbers>

#include "../core/error.hpp"

namespace bonsai {

class LrSchedule {
 public:
  enum class Kind { constant, cosine, wsd };
  /// The shape of WSD's decay (the cool-down).
  enum class Decay { linear, sqrt, cosine };

  /// `peak` after `warmup_steps` of linear warm-up, forever.
  static LrSchedule constant(double peak, std::int64_t warmup_steps = 0) {
    check_common(peak, warmup_steps);
    return LrSchedule(Kind::constant, peak, warmup_steps, 0, 1.0);
  }

  /// Warm-up to `peak`, then cosine decay to `min_lr_fraction * peak` at `total_steps` (0.1,
  /// the Structured-FFN paper's floor, by default); constant at the floor afterwards.
  static LrSchedule cosine(double peak, std::int64_t warmup_steps, std::int64_t total_steps,
                           double min_lr_fraction = 0.1) {
    check_common(peak, warmup_steps);
    BONSAI_CHECK(total_steps > warmup_steps, "LrSchedule: total_steps = ", total_steps,
                 " must exceed warmup_steps = ", warmup_steps);
    BONSAI_CHECK(min_lr_fraction >= 0 && min_lr_fraction <= 1,
                 "LrSchedule: min_lr_fraction = ", min_lr_fraction, " is outside [0, 1]");
    return LrSchedule(Kind::cosine, peak, warmup_steps, total_steps, min_lr_fraction);
  }

  /// Warm-up to `peak`, stable at `peak`, then the last round(decay_fraction * total_steps)
  /// steps decay with `shape` to `min_lr_fraction * peak`; constant at the floor afterwards.
  /// WSD's defaults follow Hägele et al. (2024), who matched a cosine's loss with a 20% cool-down
  /// of shape 1 - sqrt; MiniCPM (Hu et al., 2024) used about 10% and an exponential decay.
  static LrSchedule wsd(double peak, std::int64_t warmup_steps, std::int64_t total_steps,
                        double decay_fraction = 0.2, Decay shape = Decay::sqrt,
                        double min_lr_fraction = 0.1) {
    check_common(peak, warmup_steps);
    BONSAI_CHECK(decay_fraction > 0 && decay_fraction <= 1, "LrSchedule: the WSD decay fraction ",
                 decay_fraction, " must lie in (0, 1] (--wsd-decay-fraction)");
    BONSAI_CHECK(min_lr_fraction >= 0 && min_lr_fraction <= 1,
                 "LrSchedule: min_lr_fraction = ", min_lr_fraction, " is outside [0, 1]");
    const std::int64_t decay = std::max<std::int64_t>(1, std::llround(decay_fraction * double(total_steps)));
    BONSAI_CHECK(total_steps - decay >= warmup_steps, "LrSchedule: WSD's decay over the last ", decay,
                 " of ", total_steps, " steps would begin inside the ", warmup_steps,
                 " warm-up steps; lower --wsd-decay-fraction or --warmup");
    LrSchedule s(Kind::wsd, peak, warmup_steps, total_steps, min_lr_fraction);
    s.m_decay_steps = decay;
    s.m_shape = shape;
    return s;
  }

  /// The learning rate of step `step` (0-based).
  double at(std::int64_t step) const {
    BONSAI_CHECK(step >= 0, "LrSchedule: step ", step, " is negative");
    if (step < m_warmup) return m_peak * double(step + 1) / double(m_warmup);
    if (m_kind == Kind::constant) return m_peak;
    const double floor = m_min_fraction * m_peak;
    if (step >= m_total) return floor;
    if (m_kind == Kind::wsd) {
      const std::int64_t start = m_total - m_decay_steps;
      if (step < start) return m_peak;
      const double x = double(step - start) / double(m_decay_steps);
      const double left = m_shape == Decay::linear ? 1.0 - x
                          : m_shape == Decay::sqrt ? 1.0 - std::sqrt(x)
                                                   : 0.5 * (1.0 + std::cos(std::numbers::pi * x));
      return floor + (m_peak - floor) * left;
    }
    const double progress = double(step - m_warmup) / double(m_total - m_warmup);
    return floor + (m_peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }

  Kind kind() const noexcept { return m_kind; }
  double peak() const noexcept { return m_peak; }
  std::int64_t warmup_steps() const noexcept { return m_warmup; }
  /// WSD: the steps of the decay, at the end of total_steps (0 for the others).
  std::int64_t decay_steps() const noexcept { return m_decay_steps; }
  /// The step the schedule reaches its floor (0 for a constant schedule).
  std::int64_t total_steps() const noexcept { return m_total; }
  double min_lr_fraction() const noexcept { return m_min_fraction; }

 private:
  LrSchedule(Kind kind, double peak, std::int64_t warmup, std::int64_t total, double fraction)
      : m_kind(kind), m_peak(peak), m_warmup(warmup), m_total(total), m_min_fraction(fraction) {}

  static void check_common(double peak, std::int64_t warmup_steps) {
    BONSAI_CHECK(std::isfinite(peak) && peak >= 0, "LrSchedule: peak learning rate ", peak,
                 " must be finite and non-negative");
    BONSAI_CHECK(warmup_steps >= 0, "LrSchedule: warmup_steps = ", warmup_steps, " is negative");
  }

  Kind m_kind;
  double m_peak;
  std::int64_t m_warmup, m_total;
  double m_min_fraction;
  std::int64_t m_decay_steps = 0;
  Decay m_shape = Decay::sqrt;
};

/// "linear", "sqrt" or "cosine" (--wsd-shape).
inline LrSchedule::Decay parse_wsd_shape(std::string_view s) {
  if (s == "linear") return LrSchedule::Decay::linear;
  if (s == "sqrt") return LrSchedule::Decay::sqrt;
  if (s == "cosine") return LrSchedule::Decay::cosine;
  detail::fail("--wsd-shape: expected linear, sqrt or cosine, got '", s, "'");
}

}  // namespace bonsai
