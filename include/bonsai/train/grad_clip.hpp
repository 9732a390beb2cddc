// bonsai/train/grad_clip.hpp — gradient clipping by global norm: ||g|| = sqrt(sum g_i^2), summed
// in double over fixed-size chunks combined in chunk order (the same bits for any thread count),
// and the factor min(1, max_norm / (||g|| + 1e-6)) that the optimizer multiplies gradients by.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/view.hpp"

namespace bonsai {

namespace detail {

/// Elements per partial sum. Fixed, so the summation order depends only on the length.
inline constexpr index_t norm_chunk = index_t(1) << 14;

/// sum x_i^2 over [0, n) in double: eight interleaved accumulators (vectorisable without
/// reassociation), combined pairwise in a fixed order.
template <class T>
double sum_squares(const T* x, index_t n) {
  std::array<double, 8> acc{};
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += double(x[i + l]) * double(x[i + l]);
  for (; i < n; ++i) acc[i % 8] += double(x[i]) * double(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace detail

/// The L2 norm of all of `x` (a whole gradient arena). Non-finite gradients give a non-finite
/// norm, which is returned as is: the trainer decides whether to skip the step or stop.
template <class T, std::size_t E>
double global_norm(std::span<T, E> x) {
  const auto* data = x.data();
  const index_t n = index_t(x.size());
  const index_t chunks = (n + detail::norm_chunk - 1) / detail::norm_chunk;
  std::vector<double> partial(std::size_t(chunks), 0.0);
  parallel_for(
      chunks,
      [&](index_t c) {
        const index_t begin = c * detail::norm_chunk;
        partial[std::size_t(c)] =
            detail::sum_squares(data + begin, std::min(detail::norm_chunk, n - begin));
      },
      detail::norm_chunk);
  double total = 0.0;
  for (double p : partial) total += p;  // chunk order, whatever the threads did
  return std::sqrt(total);
}
/// The same for a contiguous host vector view (e.g. ParamArena::grads_view()).
template <class T>
double global_norm(const VectorView<T>& x) {
  BONSAI_CHECK(x.size() == 0 || x.stride(0) == 1, "global_norm: the view has stride ", x.stride(0),
               "; it needs a contiguous one");
  return global_norm(std::span<const std::remove_const_t<T>>(x.data(), std::size_t(x.size())));
}

/// The factor to scale gradients by so their norm is at most `max_norm`: min(1, max_norm /
/// (norm + 1e-6)); 1 when max_norm <= 0 (clipping off). Throws on a non-finite norm, which no
/// factor can repair; check it (or all_finite) first.
inline double clip_scale(double norm, double max_norm) {
  BONSAI_CHECK(std::isfinite(norm), "clip_scale: the gradient norm is ", norm,
               "; skip this step or stop instead of clipping");
  if (!(max_norm > 0)) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

/// True when no element of `x` is NaN or infinite.
template <class T, std::size_t E>
bool all_finite(std::span<T, E> x) {
  const auto* data = x.data();
  const index_t n = index_t(x.size());
  const index_t chunks = (n + detail::norm_chunk - 1) / detail::norm_chunk;
  std::vector<unsigned char> ok(std::size_t(chunks), 1);
  parallel_for(
      chunks,
      [&](index_t c) {
        const index_t begin = c * detail::norm_chunk;
        const index_t end = std::min(begin + detail::norm_chunk, n);
        bool fine = true;
        for (index_t i = begin; i < end; ++i) fine &= std::isfinite(double(data[i]));
        ok[std::size_t(c)] = fine;
      },
      detail::norm_chunk);
  for (unsigned char f : ok)
    if (!f) return false;
  return true;
}
template <class T>
bool all_finite(const VectorView<T>& x) {
  BONSAI_CHECK(x.size() == 0 || x.stride(0) == 1, "all_finite: the view has stride ", x.stride(0),
               "; it needs a contiguous one");
  return all_finite(std::span<const std::remove_const_t<T>>(x.data(), std::size_t(x.size())));
}

}  // namespace bonsai
