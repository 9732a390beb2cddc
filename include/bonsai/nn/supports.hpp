// bonsai/nn/supports.hpp — supports<Space>(config): whether a memory space runs every part of a
// model, and unsupported<Space>(config), the sentence that says what it cannot run yet (ggml's
// supports_op). The one place that knows a backend's gaps: programs and models ask it before
// they allocate, and refuse with its sentence, instead of failing at the first step or computing
// something else.
#pragma once

#include <string>

#include "../core/error.hpp"
#include "../core/memory.hpp"
#include "config.hpp"

namespace bonsai {

/// What Space cannot run of model `c` yet, as one sentence; empty when it runs all of it.
template <class Space>
std::string unsupported(const GptConfig& c) {
  if constexpr (std::is_same_v<Space, Device>) {
    if (c.moe_experts > 0)
      return "Mixture-of-Experts layers (moe_experts = " + std::to_string(c.moe_experts) +
             ") have no CUDA kernels yet; train them on the CPU";
    const index_t hd = c.head_dim();
    if (hd != 32 && hd != 64 && hd != 128)
      return "the CUDA attention kernels take heads of width 32, 64 or 128, but this model's "
             "heads are " + std::to_string(hd) + " wide (attention width " +
             std::to_string(c.attention_width()) + " over " + std::to_string(c.n_head) + " heads)";
    return {};
  } else {
    static_assert(std::is_same_v<Space, Host>, "unsupported<Space>: Space is Host or Device");
    return {};  // the CPU backend is the reference: it runs every model bonsai describes
  }
}

/// Whether Space runs every part of model `c`.
template <class Space>
bool supports(const GptConfig& c) {
  return unsupported<Space>(c).empty();
}

/// Throws, naming `who` and the gap, unless Space runs every part of model `c`.
template <class Space>
void require_support(const GptConfig& c, std::string_view who) {
  const std::string gap = unsupported<Space>(c);
  BONSAI_CHECK(gap.empty(), who, ": ", gap);
}

}  // namespace bonsai
