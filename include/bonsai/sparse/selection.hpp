// bonsai/sparse/selection.hpp — which neurons (FFN channels or attention heads) a step of
// sparsity-accelerated training keeps: k = N - round(rho N) of N at omission rate rho, chosen
// from importance scores s (N) by top-k (the k largest, ties to the lower index) or by sampling
// k distinct neurons without replacement, each draw in proportion to s among those not yet
// drawn (Efraimidis-Spirakis keys u^(1/s)). Both return the kept indices in increasing order,
// so gathers walk memory forwards.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"

namespace bonsai {

enum class Selection : std::uint8_t { topk, sample };

inline const char* to_string(Selection s) { return s == Selection::topk ? "topk" : "sample"; }

inline Selection parse_selection(std::string_view s) {
  if (s == "topk") return Selection::topk;
  if (s == "sample") return Selection::sample;
  detail::fail("selection: expected topk or sample, got '", s, "'");
}

/// Neurons kept of `n` at omission rate `rho` in [0, 1): n - round(rho n) (halves round away
/// from zero), at least 1, then rounded up to a multiple of `align` (capped at n) so the
/// kept GEMMs keep their vector or tensor-core shapes; the effective rate is 1 - k / n.
inline index_t keep_count(index_t n, double rho, index_t align = 1) {
  BONSAI_CHECK(n > 0, "keep_count: no neurons to choose from (n = ", n, ")");
  BONSAI_CHECK(rho >= 0.0 && rho < 1.0, "keep_count: the omission rate must lie in [0, 1), got ",
               rho);
  BONSAI_CHECK(align > 0, "keep_count: align must be positive, got ", align);
  index_t k = std::max<index_t>(1, n - index_t(std::lround(rho * double(n))));
  k = (k + align - 1) / align * align;
  return std::min(k, n);
}

namespace detail {

inline void check_selection(std::span<const double> scores, index_t k, const char* who) {
  BONSAI_CHECK(k >= 0 && k <= index_t(scores.size()), who, ": cannot keep ", k, " of ",
               scores.size(), " neurons");
  for (std::size_t i = 0; i < scores.size(); ++i)
    BONSAI_CHECK(std::isfinite(scores[i]) && scores[i] >= 0.0, who, ": score ", i, " is ",
                 scores[i], "; importance scores must be finite and non-negative");
}

}  // namespace detail

/// The k highest scores' indices, ties to the lower index, in increasing order.
inline std::vector<index_t> select_topk(std::span<const double> scores, index_t k) {
  detail::check_selection(scores, k, "select_topk");
  std::vector<index_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), index_t(0));
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](index_t a, index_t b) {
    const double sa = scores[std::size_t(a)], sb = scores[std::size_t(b)];
    return sa > sb || (sa == sb && a < b);
  });
  idx.resize(std::size_t(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

/// k distinct indices drawn without replacement, each draw choosing among the remaining
/// neurons in proportion to their scores; neurons with score 0 come last, uniformly. In
/// increasing order. The draw depends only on the scores and `rng`.
inline std::vector<index_t> select_sample(std::span<const double> scores, index_t k, Rng& rng) {
  detail::check_selection(scores, k, "select_sample");
  // Key log(u) / s (the log of u^(1/s)): the k largest keys are such a draw. Zero scores get
  // keys below every positive one, ordered by a uniform draw.
  struct Key {
    bool positive;
    double key;
    index_t i;
  };
  std::vector<Key> keys(scores.size());
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const double u = 1.0 - rng.uniform();  // (0, 1]
    keys[i] = scores[i] > 0.0 ? Key{true, std::log(u) / scores[i], index_t(i)}
                              : Key{false, u, index_t(i)};
  }
  std::partial_sort(keys.begin(), keys.begin() + k, keys.end(), [](const Key& a, const Key& b) {
    if (a.positive != b.positive) return a.positive;
    return a.key > b.key || (a.key == b.key && a.i < b.i);
  });
  std::vector<index_t> idx(static_cast<std::size_t>(k));
  for (index_t j = 0; j < k; ++j) idx[std::size_t(j)] = keys[std::size_t(j)].i;
  std::sort(idx.begin(), idx.end());
  return idx;
}

/// The neurons one transformer layer computes in a step of sparsity-accelerated training: its
/// kept query heads and FFN channels, each in increasing order; an empty list keeps them all.
struct LayerKept {
  std::vector<index_t> heads;     // (k_heads)
  std::vector<index_t> channels;  // (k_channels)
};

/// Either selection.
inline std::vector<index_t> select_neurons(Selection how, std::span<const double> scores, index_t k,
                                           Rng& rng) {
  return how == Selection::topk ? select_topk(scores, k) : select_sample(scores, k, rng);
}

}  // namespace bonsai
