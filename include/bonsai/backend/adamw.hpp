// bonsai/backend/adamw.hpp — what AdamW's update kernels of every backend and the optimizer of
// train/adamw.hpp share: AdamWConfig, the hyper-parameters, and AdamWRange, a run of an arena's
// elements updated alike.
#pragma once

#include "../config.hpp"
#include "../core/error.hpp"

namespace bonsai {

/// AdamW hyper-parameters; the learning rate is not here, the caller passes it to every step
/// (see LrSchedule). The defaults are the usual GPT-2 recipe (nanoGPT; llm.c with -c 0.1). The
/// Structured-FFN paper (Wei et al., 2024) trained with beta2 = 0.999 instead of 0.95.
struct AdamWConfig {
  double beta1 = 0.9;         // first-moment decay
  double beta2 = 0.95;        // second-moment decay (the Structured-FFN paper: 0.999)
  double eps = 1e-8;          // added to sqrt(v-hat)
  double weight_decay = 0.1;  // decoupled; applied only to slots whose decays() is true

  /// Throws, naming the field, unless 0 <= beta1, beta2 < 1, eps > 0 and weight_decay >= 0.
  void validate() const {
    BONSAI_CHECK(beta1 >= 0 && beta1 < 1, "AdamW: beta1 = ", beta1, " is outside [0, 1)");
    BONSAI_CHECK(beta2 >= 0 && beta2 < 1, "AdamW: beta2 = ", beta2, " is outside [0, 1)");
    BONSAI_CHECK(eps > 0, "AdamW: eps = ", eps, " must be positive");
    BONSAI_CHECK(weight_decay >= 0, "AdamW: weight_decay = ", weight_decay, " is negative");
  }
};

/// A run of consecutive arena elements [begin, end) that share a decay flag: the unit of an
/// AdamW kernel launch (a slice of it is the unit of parallel work on the host).
struct AdamWRange {
  index_t begin = 0, end = 0;
  bool decays = false;
};

}  // namespace bonsai
