// bonsai/structured/shuffle.hpp — Shuffle: the stride permutation P_{a,b} between blocks, a
// layout rather than an index array. It views a vector of n = a*b features as a row-major
// (a, b) array and reads it out transposed: (P_{a,b} v)[j a + i] = v[i b + j]. P_{b,a} is its
// inverse. No parameters, no FLOPs (a memory move).
#pragma once

#include "map.hpp"

namespace bonsai {

template <index_t N = dynamic>
class Shuffle {
 public:
  using scalar_type = void;
  static constexpr index_t static_in = N;
  static constexpr index_t static_out = N;

  /// P_{a,b} on a*b features.
  Shuffle(index_t a, index_t b) : m_n(a * b), m_a(a), m_b(b) {
    detail::check_positive("Shuffle", "a", a);
    detail::check_positive("Shuffle", "b", b);
  }

  index_t in_features() const noexcept { return m_n; }
  index_t out_features() const noexcept { return m_n; }
  /// Rows of the (a, b) view of the input.
  index_t a() const noexcept { return m_a; }
  /// Columns of the (a, b) view of the input.
  index_t b() const noexcept { return m_b; }
  index_t param_count() const noexcept { return 0; }
  index_t flops(index_t) const noexcept { return 0; }
  std::vector<ParamInfo> parameters() const { return {}; }
  template <class T>
  void bind(T*) noexcept {}
  bool is_bound() const noexcept { return true; }

  /// The permutation matrix: P[destination(k), k] = 1.
  template <class T = float>
  Matrix<T> to_dense() const {
    Matrix<T> p(in_features(), in_features());
    for (index_t k = 0; k < in_features(); ++k) p(destination(k), k) = T(1);
    return p;
  }

  /// Output position of input feature k: k = i b + j goes to j a + i.
  index_t destination(index_t k) const noexcept { return (k % m_b) * m_a + k / m_b; }
  /// The inverse permutation P_{b,a}.
  Shuffle inverse() const { return Shuffle(m_b, m_a); }

 private:
  [[no_unique_address]] Extent<N> m_n;
  index_t m_a, m_b;
};

}  // namespace bonsai
