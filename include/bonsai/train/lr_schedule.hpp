// bonsai/train/lr_schedule.hpp — LrSchedule: the learning rate at each step. Warm-up is linear,
// lr(s) = peak (s + 1) / warmup for s < warmup (llm.c's convention: step 0 already moves); then
// either constant, or a cosine from peak down to floor = min_lr_fraction * peak at total_steps:
// lr(s) = floor + (peak - floor) (1 + cos(pi (s - warmup) / (total - warmup))) / 2, floor after.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

#include "../core/error.hpp"

namespace bonsai {

class LrSchedule {
 public:
  enum class Kind { constant, cosine };

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

  /// The learning rate of step `step` (0-based).
  double at(std::int64_t step) const {
    BONSAI_CHECK(step >= 0, "LrSchedule: step ", step, " is negative");
    if (step < m_warmup) return m_peak * double(step + 1) / double(m_warmup);
    if (m_kind == Kind::constant) return m_peak;
    const double floor = m_min_fraction * m_peak;
    if (step >= m_total) return floor;
    const double progress = double(step - m_warmup) / double(m_total - m_warmup);
    return floor + (m_peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }

  Kind kind() const noexcept { return m_kind; }
  double peak() const noexcept { return m_peak; }
  std::int64_t warmup_steps() const noexcept { return m_warmup; }
  /// The step the cosine reaches its floor (0 for a constant schedule).
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
};

}  // namespace bonsai
