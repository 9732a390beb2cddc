// bonsai/core/extent.hpp — one dimension's size, known at run time (the default) or at
// compile time. Extent<dynamic> stores its value; Extent<768> stores nothing and checks that
// a run-time value agrees.
#pragma once

#include "error.hpp"

namespace bonsai {

/// Marks an extent known only at run time.
inline constexpr index_t dynamic = -1;

/// A size fixed at compile time: `Extent<768>` (zero bytes).
template <index_t N>
struct Extent {
  static_assert(N > 0, "a static extent must be positive");
  static constexpr bool is_static = true;
  constexpr Extent() = default;
  explicit Extent(index_t n) {
    BONSAI_CHECK(n == N, "extent ", n, " given where the type fixes it to ", N);
  }
  constexpr index_t value() const noexcept { return N; }
  constexpr operator index_t() const noexcept { return N; }
};

/// A size known at run time.
template <>
struct Extent<dynamic> {
  static constexpr bool is_static = false;
  constexpr Extent() = default;
  constexpr explicit Extent(index_t n) : m_value(n) {}
  constexpr index_t value() const noexcept { return m_value; }
  constexpr operator index_t() const noexcept { return m_value; }

 private:
  index_t m_value = 0;
};

/// True when both extents are static and differ: a mismatch the compiler can prove.
constexpr bool static_mismatch(index_t a, index_t b) { return a != dynamic && b != dynamic && a != b; }

}  // namespace bonsai
