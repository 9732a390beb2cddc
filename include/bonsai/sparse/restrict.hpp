// bonsai/sparse/restrict.hpp — a structured map restricted to some of its outputs (the kept FFN
// channels an up or gate map produces) or inputs (the kept channels a down map reads), with
// compact parameters of its own: W_S = W[S, :] or W[:, S] for a kept set S of k indices.
// gather_params fills the compact parameters from the full ones; scatter_add_params adds
// compact gradients into the full gradients, leaving every other slice untouched. Dense and
// LowRank restrict (LowRank: the rows of U or the columns of V; the other factor is shared
// whole); block-diagonal maps do not, because a kept set would leave blocks of unequal sizes.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../structured/dense.hpp"
#include "../structured/low_rank.hpp"

namespace bonsai {

/// Which features of a map a kept set selects.
enum class Side : std::uint8_t { outputs, inputs };

namespace detail {

/// What the rows and the columns of each parameter (in parameters() order) index.
enum class Axis : std::uint8_t { out, in, other };
using AxisPair = std::pair<Axis, Axis>;

template <class T>
std::array<AxisPair, 1> param_axes(const Dense<T>&) {
  return {{{Axis::out, Axis::in}}};  // weight (out, in)
}
template <class T>
std::array<AxisPair, 2> param_axes(const LowRank<T>&) {
  return {{{Axis::other, Axis::in}, {Axis::out, Axis::other}}};  // V (R, in), U (out, R)
}

inline void check_kept(std::span<const index_t> kept, index_t n, const char* who) {
  BONSAI_CHECK(!kept.empty() && index_t(kept.size()) <= n, who, ": ", kept.size(),
               " kept features of ", n);
  for (std::size_t i = 0; i < kept.size(); ++i)
    BONSAI_CHECK(kept[i] >= 0 && kept[i] < n && (i == 0 || kept[i - 1] < kept[i]), who,
                 ": kept features must be increasing indices below ", n, ", got ", kept[i],
                 " at position ", i);
}

/// Walks the parameters of `full` and of its restriction side by side: f(rows, cols, axes,
/// full offset, compact offset, compact rows, compact cols).
template <class M, class F>
void for_each_restricted_param(const M& full, Side side, index_t k, F&& f) {
  const Axis target = side == Side::outputs ? Axis::out : Axis::in;
  index_t off = 0, coff = 0;
  std::size_t p = 0;
  const auto axes = param_axes(full);
  for (const ParamInfo& info : full.parameters()) {
    const index_t rows = info.shape[0], cols = info.shape[1];
    const AxisPair a = axes[p++];
    const index_t crows = a.first == target ? k : rows, ccols = a.second == target ? k : cols;
    f(rows, cols, a, target, off, coff, crows, ccols);
    off += rows * cols;
    coff += crows * ccols;
  }
}

}  // namespace detail

/// Whether a map type can be restricted to a kept set.
template <class M>
inline constexpr bool restrictable_v = false;
template <class T>
inline constexpr bool restrictable_v<Dense<T>> = true;
template <class T>
inline constexpr bool restrictable_v<LowRank<T>> = true;

/// The same map with k outputs or k inputs (unbound).
template <class T>
Dense<T> restricted(const Dense<T>& m, Side side, index_t k) {
  return side == Side::outputs ? Dense<T>(m.in_features(), k) : Dense<T>(k, m.out_features());
}
/// LowRank keeps its rank, so it needs k >= R.
template <class T>
LowRank<T> restricted(const LowRank<T>& m, Side side, index_t k) {
  BONSAI_CHECK(k >= m.rank(), "restricted: a LowRank map of rank ", m.rank(), " keeps at least ",
               m.rank(), " features, not ", k, " (raise the kept count or lower the rank)");
  return side == Side::outputs ? LowRank<T>(m.in_features(), k, m.rank())
                               : LowRank<T>(k, m.out_features(), m.rank());
}

/// acc[i] += sum of |w|^p (p = 1 or 2) over the parameters that feature i of `side` owns alone:
/// its row or column of each parameter indexed by that side (shared factors do not count).
/// With p = 2 this is the squared norm of what a kept set gathers for the feature.
template <class M, class T = scalar_of<M>>
void add_owned_norms(const M& map, Side side, const T* params, int p, std::span<double> acc) {
  static_assert(restrictable_v<M>, "add_owned_norms: only Dense and LowRank maps restrict");
  const index_t n = side == Side::outputs ? map.out_features() : map.in_features();
  BONSAI_CHECK(index_t(acc.size()) == n && (p == 1 || p == 2), "add_owned_norms: ", acc.size(),
               " accumulators for ", n, " features (p = ", p, ")");
  const auto term = [p](T w) { return p == 1 ? std::abs(double(w)) : double(w) * double(w); };
  detail::for_each_restricted_param(
      map, side, n,
      [&](index_t rows, index_t cols, detail::AxisPair a, detail::Axis target, index_t off,
          index_t, index_t, index_t) {
        const T* w = params + off;
        if (a.first == target) {
          parallel_for(rows, [&](index_t r) {
            double s = 0;
            for (index_t c = 0; c < cols; ++c) s += term(w[r * cols + c]);
            acc[std::size_t(r)] += s;
          }, cols);
        } else if (a.second == target) {  // 64-column panels, each walked row by row
          constexpr index_t panel = 64;
          parallel_for((cols + panel - 1) / panel, [&](index_t q) {
            const index_t c0 = q * panel, c1 = std::min(cols, c0 + panel);
            double s[panel] = {};
            for (index_t r = 0; r < rows; ++r)
              for (index_t c = c0; c < c1; ++c) s[c - c0] += term(w[r * cols + c]);
            for (index_t c = c0; c < c1; ++c) acc[std::size_t(c)] += s[c - c0];
          }, rows * panel);
        }
      });
}

/// flags[e] = 1 for every element of the parameters (laid out as `map`) that the restriction to
/// `kept` reads: the kept rows or columns, and shared factors whole; other flags are left as
/// they are.
template <class M>
void mark_kept_params(const M& map, Side side, std::span<const index_t> kept, std::uint8_t* flags) {
  static_assert(restrictable_v<M>, "mark_kept_params: only Dense and LowRank maps restrict");
  const index_t n = side == Side::outputs ? map.out_features() : map.in_features();
  detail::check_kept(kept, n, "mark_kept_params");
  detail::for_each_restricted_param(
      map, side, index_t(kept.size()),
      [&](index_t rows, index_t cols, detail::AxisPair a, detail::Axis target, index_t off,
          index_t, index_t, index_t) {
        std::uint8_t* f = flags + off;
        if (a.first == target) {
          for (index_t r : kept) std::fill_n(f + r * cols, cols, std::uint8_t(1));
        } else if (a.second == target) {
          for (index_t r = 0; r < rows; ++r)
            for (index_t c : kept) f[r * cols + c] = 1;
        } else {
          std::fill_n(f, rows * cols, std::uint8_t(1));
        }
      });
}

/// compact = the parameters `full` (laid out as `map`) restricted to `kept` (increasing).
template <class M, class T = scalar_of<M>>
void gather_params(const M& map, Side side, std::span<const index_t> kept, const T* full,
                   T* compact) {
  static_assert(restrictable_v<M>, "gather_params: only Dense and LowRank maps restrict");
  const index_t n = side == Side::outputs ? map.out_features() : map.in_features();
  detail::check_kept(kept, n, "gather_params");
  const index_t k = index_t(kept.size());
  detail::for_each_restricted_param(
      map, side, k,
      [&](index_t rows, index_t cols, detail::AxisPair a, detail::Axis target, index_t off,
          index_t coff, index_t crows, index_t ccols) {
        const T* src = full + off;
        T* dst = compact + coff;
        if (a.first == target) {
          parallel_for(crows, [&](index_t i) {
            std::copy_n(src + kept[std::size_t(i)] * cols, cols, dst + i * cols);
          });
        } else if (a.second == target) {
          parallel_for(rows, [&](index_t r) {
            for (index_t i = 0; i < ccols; ++i)
              dst[r * ccols + i] = src[r * cols + kept[std::size_t(i)]];
          });
        } else {
          std::copy_n(src, rows * cols, dst);
        }
      });
}

/// full += the compact gradients scattered back to `kept`'s rows or columns (shared factors
/// are added whole).
template <class M, class T = scalar_of<M>>
void scatter_add_params(const M& map, Side side, std::span<const index_t> kept, const T* compact,
                        T* full) {
  static_assert(restrictable_v<M>, "scatter_add_params: only Dense and LowRank maps restrict");
  const index_t n = side == Side::outputs ? map.out_features() : map.in_features();
  detail::check_kept(kept, n, "scatter_add_params");
  const index_t k = index_t(kept.size());
  detail::for_each_restricted_param(
      map, side, k,
      [&](index_t rows, index_t cols, detail::AxisPair a, detail::Axis target, index_t off,
          index_t coff, index_t crows, index_t ccols) {
        T* dst = full + off;
        const T* src = compact + coff;
        if (a.first == target) {
          parallel_for(crows, [&](index_t i) {
            T* row = dst + kept[std::size_t(i)] * cols;
            for (index_t c = 0; c < cols; ++c) row[c] += src[i * cols + c];
          });
        } else if (a.second == target) {
          parallel_for(rows, [&](index_t r) {
            for (index_t i = 0; i < ccols; ++i)
              dst[r * cols + kept[std::size_t(i)]] += src[r * ccols + i];
          });
        } else {
          parallel_for(rows * cols, [&](index_t i) { dst[i] += src[i]; });
        }
      });
}

}  // namespace bonsai
