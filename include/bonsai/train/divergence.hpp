// bonsai/train/divergence.hpp — what a trainer treats as a divergence and reports: a step gone
// non-finite (the first tensor of the arena, in arena order, whose values, or else whose
// gradients, hold a NaN or an infinity, and a sentence naming the step, the loss, the gradient
// norm and that tensor), and a loss spike (a finite loss above k times the running mean).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "../nn/arena.hpp"

namespace bonsai {

/// Where an arena stopped being finite.
struct NonFinite {
  std::string tensor;     // the slot's name, e.g. "h.3.mlp.up.U"
  bool gradient = false;  // in its gradient (true) or its values (false)
  index_t element = 0;    // the first bad element within the slot
  double value = 0;       // NaN or an infinity
};

/// The first non-finite element of `arena`: values are searched first (a parameter already
/// broken is the cause, a broken gradient its consequence), then gradients. Nothing when all
/// are finite.
template <class T>
std::optional<NonFinite> first_non_finite(const ParamArena<T>& arena) {
  if (!arena.allocated()) return std::nullopt;
  for (const bool gradient : {false, true}) {
    const T* base = gradient ? arena.grads() : arena.values();
    for (const ParamSlot& s : arena.slots()) {
      const T* x = base + s.offset;
      for (index_t i = 0, n = s.size(); i < n; ++i)
        if (!std::isfinite(double(x[i]))) return NonFinite{s.name, gradient, i, double(x[i])};
    }
  }
  return std::nullopt;
}

/// "step 12: the loss is nan and the gradient norm inf; the first non-finite tensor is the
/// gradient of h.0.attn.qkv.weight (element 5 is nan)".
inline std::string divergence_report(index_t step, double loss, double grad_norm,
                                     const std::optional<NonFinite>& where) {
  const auto number = [](double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.6g", v);
    return std::string(text);
  };
  std::string s = "step " + std::to_string(step) + ": the loss is " + number(loss) +
                  " and the gradient norm " + number(grad_norm) + "; ";
  if (!where) return s + "every parameter and gradient is finite";
  return s + "the first non-finite tensor is the " + (where->gradient ? "gradient" : "value") +
         " of " + where->tensor + " (element " + std::to_string(where->element) + " is " +
         number(where->value) + ")";
}

/// The loss-spike guard's settings.
struct LossSpikeConfig {
  double factor = 3.0;  // k
  index_t window = 50;  // w
  index_t warmup = 10;  // losses seen before the guard is armed
};

/// A loss spike: a finite loss L_t > k mean(L_{t-w}, ..., L_{t-1}), the mean of the last w
/// losses of steps that were taken, once at least `warmup` of them were seen. A trainer treats it
/// like a non-finite step (the update is not taken). k = 0 turns the guard off.
class LossSpikeGuard {
 public:
  using Config = LossSpikeConfig;

  LossSpikeGuard() : LossSpikeGuard(Config{}) {}
  explicit LossSpikeGuard(const Config& c) : m_config(c) {
    BONSAI_CHECK(c.factor == 0 || c.factor > 1, "--spike-factor ", c.factor,
                 " must be 0 (off) or above 1 (a loss that many times the running mean is a spike)");
    BONSAI_CHECK(c.window >= 1 && c.warmup >= 1, "--spike-window ", c.window,
                 " and the guard's warm-up ", c.warmup, " must be at least 1");
  }

  const Config& config() const noexcept { return m_config; }
  bool enabled() const noexcept { return m_config.factor > 0; }
  /// The mean of the losses held (NaN when none).
  double mean() const {
    if (m_losses.empty()) return std::nan("");
    return std::accumulate(m_losses.begin(), m_losses.end(), 0.0) / double(m_losses.size());
  }
  /// Whether `loss` is a spike against the losses seen so far.
  bool is_spike(double loss) const {
    return enabled() && index_t(m_losses.size()) >= std::min(m_config.warmup, m_config.window) &&
           loss > m_config.factor * mean();
  }
  /// A taken step's loss joins the window.
  void observe(double loss) {
    if (!enabled()) return;
    m_losses.push_back(loss);
    if (index_t(m_losses.size()) > m_config.window) m_losses.pop_front();
  }
  /// Forgets every loss (after the model changed, as at a growth stage).
  void reset() noexcept { m_losses.clear(); }
  /// The losses held, oldest first, to checkpoint; restore() takes them back.
  std::vector<double> state() const { return {m_losses.begin(), m_losses.end()}; }
  void restore(const std::vector<double>& losses) {
    m_losses.assign(losses.begin(), losses.end());
    while (index_t(m_losses.size()) > m_config.window) m_losses.pop_front();
  }
  /// "step 57: the loss 9.81 is 4.2 times the mean of the last 50 losses (2.34), above the
  /// spike factor 3".
  std::string report(index_t step, double loss) const {
    char text[200];
    std::snprintf(text, sizeof text, "step %lld: the loss %.6g is %.3g times the mean of the last "
                  "%zu losses (%.6g), above the spike factor %.3g", static_cast<long long>(step),
                  loss, loss / mean(), m_losses.size(), mean(), m_config.factor);
    return text;
  }

 private:
  Config m_config;
  std::deque<double> m_losses;
};

}  // namespace bonsai
