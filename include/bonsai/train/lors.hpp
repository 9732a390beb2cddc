// bonsai/train/lors.hpp — the Ladder Omission Rate Scheduler of sparsity-accelerated training:
// dense before step t_0 (0 by default; a later start lets SAT follow other phases of a run), the
// omission rate stays at rho_0 from t_0 until step t_1, then steps down a ladder of K stairs to 0
// (dense) at t_2. Stair j (1..K) starts at b_j = t_1 + (j - 1)(t_2 - t_1) / (K - 1) (b_1 = t_1 =
// t_2 for K = 1), and rho(t) = rho_0 (1 - j(t) / K) for t >= t_0 with j(t) the number of
// b_j <= t. The
// paper's exact ladder (rho_0, t_1, t_2, K) is not published in what we could check, so all
// four are options (spec sat.md §6).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "flag_parse.hpp"

namespace bonsai {

struct Lors {
  double rho0 = 0.0;   // the omission rate before the ladder, in [0, 1)
  index_t t1 = 0;      // the first stair's step
  index_t t2 = 0;      // the last stair's step: dense from here on
  index_t stairs = 1;  // K
  index_t t0 = 0;      // the first step that omits anything
  static constexpr index_t max_stairs = 1'000'000;

  /// Rejects, with a sentence, a ladder that cannot be run.
  void validate() const {
    BONSAI_CHECK(rho0 >= 0.0 && rho0 < 1.0, "LORS: the omission rate must lie in [0, 1), got ",
                 rho0);
    BONSAI_CHECK(stairs >= 1 && stairs <= max_stairs, "LORS: the ladder needs between 1 and ",
                 max_stairs, " stairs, got K = ", stairs);
    BONSAI_CHECK(t1 >= 0 && t2 >= t1, "LORS: the ladder must start (t1 = ", t1,
                 ") at or before it ends (t2 = ", t2, "), at step 0 or later");
    BONSAI_CHECK(t0 >= 0 && t0 <= t1, "LORS: SAT starts (--sat-start ", t0,
                 ") at step 0 or later and at or before the ladder's first stair (t1 = ", t1, ")");
    BONSAI_CHECK(stairs > 1 || t1 == t2,
                 "LORS: a one-stair ladder drops to dense at one step, "
                 "so t1 (",
                 t1, ") must equal t2 (", t2, ")");
  }

  /// Step at which stair j (1..K) begins.
  double boundary(index_t j) const {
    if (stairs == 1) return double(t1);
    return double(t1) + double(j - 1) * double(t2 - t1) / double(stairs - 1);
  }

  /// The omission rate of optimizer step t.
  double rate(index_t t) const {
    if (t < t0) return 0.0;
    index_t j = 0, hi = stairs;  // j: the stairs begun by step t (boundaries rise with j)
    while (j < hi) {
      const index_t mid = j + (hi - j + 1) / 2;
      if (boundary(mid) <= double(t)) j = mid;
      else hi = mid - 1;
    }
    return rho0 * (1.0 - double(j) / double(stairs));
  }

  /// The mean rate over steps [0, total): rho_0 (max(0, total - t_0) - sum_j max(0, total -
  /// ceil(b_j)) / K) / total, since the rate is rho_0 from t_0 on and stair j lowers it by
  /// rho_0 / K on the steps t >= b_j.
  double mean_rate(index_t total) const {
    BONSAI_CHECK(total > 0, "LORS: the mean rate needs at least one step");
    double lowered = 0;
    for (index_t j = 1; j <= stairs; ++j)
      lowered += std::max(0.0, double(total) - std::ceil(boundary(j)));
    const double omitting = std::max(0.0, double(total - t0));
    return rho0 * (omitting - lowered / double(stairs)) / double(total);
  }

  /// "t1,t2,K" with the rate given separately (--sat-rate, --sat-ladder).
  static Lors parse(double rho0, std::string_view ladder, index_t start = 0) {
    const auto f = detail::split(ladder, ',');
    BONSAI_CHECK(f.size() == 3, "--sat-ladder: expected t1,t2,K (e.g. 800,1000,4), got '", ladder,
                 "'");
    Lors l{rho0, detail::parse_size(f[0], "--sat-ladder", "t1"),
           detail::parse_size(f[1], "--sat-ladder", "t2"),
           detail::parse_size(f[2], "--sat-ladder", "K"), start};
    l.validate();
    return l;
  }

  std::string to_string() const {
    return std::to_string(t1) + "," + std::to_string(t2) + "," + std::to_string(stairs);
  }
};

}  // namespace bonsai
