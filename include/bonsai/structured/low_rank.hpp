// bonsai/structured/low_rank.hpp — LowRank: y = U (V x) with V (rank, in) and U (out, rank);
// W_merged = U V has rank <= R. Params R (in + out); forward FLOPs 2 R (in + out) per token.
#pragma once

#include <algorithm>

#include "map.hpp"

namespace bonsai {

template <class T, index_t In = dynamic, index_t Out = dynamic>
class LowRank {
 public:
  using scalar_type = T;
  static constexpr index_t static_in = In;
  static constexpr index_t static_out = Out;

  LowRank(index_t rank) requires(In != dynamic && Out != dynamic) : LowRank(In, Out, rank) {}
  LowRank(index_t in, index_t out, index_t rank) : m_in(in), m_out(out), m_rank(rank) {
    detail::check_positive("LowRank", "in_features", in);
    detail::check_positive("LowRank", "out_features", out);
    detail::check_positive("LowRank", "rank", rank);
    BONSAI_CHECK(rank <= std::min(in, out), "LowRank: rank = ", rank,
                 " exceeds min(in_features, out_features) = min(", in, ", ", out, ")");
  }

  index_t in_features() const noexcept { return m_in; }
  index_t out_features() const noexcept { return m_out; }
  index_t rank() const noexcept { return m_rank; }
  index_t param_count() const noexcept { return m_rank * (in_features() + out_features()); }
  index_t flops(index_t tokens) const noexcept { return 2 * tokens * param_count(); }
  std::vector<ParamInfo> parameters() const {
    return {{"V", {m_rank, in_features()}}, {"U", {out_features(), m_rank}}};
  }

  /// W_merged = U V: (out, in).
  Matrix<T> to_dense() const { return to_matrix(as_eigen(u()) * as_eigen(v())); }

  void bind(T* data) noexcept {
    m_v = data;
    m_u = data ? data + m_rank * in_features() : nullptr;
  }
  bool is_bound() const noexcept { return m_v != nullptr; }

  /// V: (rank, in), applied first.
  template <class Space = Host>
  MatrixView<T, Space> v() const noexcept { return matrix_view<Space>(m_v, m_rank, in_features()); }
  /// U: (out, rank).
  template <class Space = Host>
  MatrixView<T, Space> u() const noexcept { return matrix_view<Space>(m_u, out_features(), m_rank); }

 private:
  [[no_unique_address]] Extent<In> m_in;
  [[no_unique_address]] Extent<Out> m_out;
  index_t m_rank;
  T* m_v = nullptr;
  T* m_u = nullptr;
};

}  // namespace bonsai
