// bonsai/backend/cpu/pre_merged.hpp — calibration of PreMerged<S> on the CPU: calibrate() times
// S and the merged GEMM at T = 1, 2, 4, ... and sets the largest T up to which the merged GEMM
// wins at every count. The lowering itself is backend/pre_merged.hpp.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

#include "../../core/rng.hpp"
#include "../../structured/pre_merged.hpp"
#include "../pre_merged.hpp"
#include "linear.hpp"

namespace bonsai {

/// What calibrate() measured: seconds per forward of each path at every token count.
struct PremergeCalibration {
  std::vector<index_t> tokens;  // 1, 2, 4, ..., up to max_tokens
  std::vector<double> structured_s, merged_s;
  index_t max_merged_tokens = 0;  // the threshold set on the map
};

/// Times S and the merged GEMM on random x (T, in) for T = 1, 2, 4, ... <= max_tokens: a warm-up
/// call each, then the fastest of a few repeats (more for small T, about flops_per_point merged
/// FLOPs per path), the two paths alternating so both see the same load. Sets
/// f.max_merged_tokens() to the largest T at which the merged path was faster, at it and at every
/// smaller T (0 when it loses at T = 1). Merge f first; the timings do not depend on the values.
template <class S>
PremergeCalibration calibrate(PreMerged<S>& f, index_t max_tokens = 1024, double flops_per_point = 5e7) {
  using T = scalar_of<S>;
  BONSAI_CHECK(f.is_bound(), "calibrate: the map's parameters are not bound to storage");
  BONSAI_CHECK(max_tokens >= 1, "calibrate: max_tokens = ", max_tokens, " must be positive");
  Matrix<T> x(max_tokens, f.in_features()), y(max_tokens, f.out_features());
  Rng rng(1005);
  fill_normal(x.view(), rng);
  Context<PreMerged<S>> ctx;
  PremergeCalibration cal;
  bool merged_wins = true;
  for (index_t tokens = 1; tokens <= max_tokens; tokens *= 2) {
    const auto xt = matrix_view(x.data(), tokens, f.in_features());  // the first T rows
    const auto yt = matrix_view(y.data(), tokens, f.out_features());
    auto seconds = [&](const auto& map, auto& c) {
      const auto t0 = std::chrono::steady_clock::now();
      forward(map, xt, yt, c);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    seconds(f.structured(), ctx.structured);  // warm-up: workspaces grow, caches fill
    seconds(f.merged(), ctx.merged);
    double s = seconds(f.structured(), ctx.structured), m = seconds(f.merged(), ctx.merged);
    const int repeats = int(std::clamp(flops_per_point / double(f.merged().flops(tokens)), 3.0, 50.0));
    for (int r = 1; r < repeats; ++r) {
      s = std::min(s, seconds(f.structured(), ctx.structured));
      m = std::min(m, seconds(f.merged(), ctx.merged));
    }
    cal.tokens.push_back(tokens);
    cal.structured_s.push_back(s);
    cal.merged_s.push_back(m);
    merged_wins = merged_wins && m < s;
    if (merged_wins) cal.max_merged_tokens = tokens;
  }
  f.set_max_merged_tokens(cal.max_merged_tokens);
  return cal;
}

}  // namespace bonsai
