// bonsai/train/divergence.hpp — what a trainer reports when a step goes non-finite: the first
// tensor of the arena (in arena order) whose values, or else whose gradients, hold a NaN or an
// infinity, and a sentence naming the step, the loss, the gradient norm and that tensor.
#pragma once

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>

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

}  // namespace bonsai
