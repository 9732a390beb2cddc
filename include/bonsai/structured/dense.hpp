// bonsai/structured/dense.hpp — Dense: y = W x with W of shape (out, in), stored row-major as
// in PyTorch's nn.Linear. Params out*in; forward FLOPs 2*out*in per token.
#pragma once

#include "map.hpp"

namespace bonsai {

template <class T, index_t In = dynamic, index_t Out = dynamic>
class Dense {
 public:
  using scalar_type = T;
  static constexpr index_t static_in = In;
  static constexpr index_t static_out = Out;

  Dense() requires(In != dynamic && Out != dynamic) = default;
  Dense(index_t in, index_t out) : m_in(in), m_out(out) {
    detail::check_positive("Dense", "in_features", in);
    detail::check_positive("Dense", "out_features", out);
  }

  index_t in_features() const noexcept { return m_in; }
  index_t out_features() const noexcept { return m_out; }
  index_t param_count() const noexcept { return m_in * m_out; }
  index_t flops(index_t tokens) const noexcept { return 2 * tokens * param_count(); }
  std::vector<ParamInfo> parameters() const { return {{"weight", {out_features(), in_features()}}}; }

  /// W_merged = W: (out, in).
  Matrix<T> to_dense() const { return to_matrix(as_eigen(weight())); }

  void bind(T* data) noexcept { m_weight = data; }
  bool is_bound() const noexcept { return m_weight != nullptr; }

  /// W: (out, in).
  template <class Space = Host>
  MatrixView<T, Space> weight() const noexcept {
    return matrix_view<Space>(m_weight, out_features(), in_features());
  }

 private:
  [[no_unique_address]] Extent<In> m_in;
  [[no_unique_address]] Extent<Out> m_out;
  T* m_weight = nullptr;
};

}  // namespace bonsai
