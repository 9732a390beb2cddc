// bonsai/structured/block_diag.hpp — BlockDiag: y = blockdiag(W_0, ..., W_{B-1}) x. Block i
// maps input slice x[i p : (i+1) p] to output slice y[i s : (i+1) s] with W_i of shape (s, p),
// p = in/B, s = out/B; stored as one (B, s, p) tensor. Params out*in/B; FLOPs 2 out in / B per
// token.
#pragma once

#include "map.hpp"

namespace bonsai {

template <class T, index_t In = dynamic, index_t Out = dynamic>
class BlockDiag {
 public:
  using scalar_type = T;
  static constexpr index_t static_in = In;
  static constexpr index_t static_out = Out;

  BlockDiag(index_t blocks) requires(In != dynamic && Out != dynamic) : BlockDiag(In, Out, blocks) {}
  BlockDiag(index_t in, index_t out, index_t blocks) : m_in(in), m_out(out), m_blocks(blocks) {
    detail::check_positive("BlockDiag", "in_features", in);
    detail::check_positive("BlockDiag", "out_features", out);
    detail::check_positive("BlockDiag", "blocks", blocks);
    detail::check_divisible("BlockDiag", "in_features", in, blocks);
    detail::check_divisible("BlockDiag", "out_features", out, blocks);
  }

  index_t in_features() const noexcept { return m_in; }
  index_t out_features() const noexcept { return m_out; }
  index_t blocks() const noexcept { return m_blocks; }
  /// p = in / B.
  index_t block_in() const noexcept { return in_features() / m_blocks; }
  /// s = out / B.
  index_t block_out() const noexcept { return out_features() / m_blocks; }
  index_t param_count() const noexcept { return m_blocks * block_out() * block_in(); }
  index_t flops(index_t tokens) const noexcept { return 2 * tokens * param_count(); }
  std::vector<ParamInfo> parameters() const {
    return {{"blocks", {m_blocks, block_out(), block_in()}}};
  }

  /// W_merged = blockdiag(W_0, ..., W_{B-1}): (out, in).
  Matrix<T> to_dense() const {
    Matrix<T> w(out_features(), in_features());
    for (index_t i = 0; i < m_blocks; ++i)
      as_eigen(w).block(i * block_out(), i * block_in(), block_out(), block_in()) = as_eigen(block(i));
    return w;
  }

  void bind(T* data) noexcept { m_data = data; }
  bool is_bound() const noexcept { return m_data != nullptr; }

  /// All blocks: (B, s, p).
  template <class Space = Host>
  TensorView<T, 3, Space> weights() const noexcept {
    return TensorView<T, 3, Space>(m_data, {m_blocks, block_out(), block_in()});
  }
  /// W_i: (s, p).
  template <class Space = Host>
  MatrixView<T, Space> block(index_t i) const noexcept {
    return matrix_view<Space>(m_data + i * block_out() * block_in(), block_out(), block_in());
  }

 private:
  [[no_unique_address]] Extent<In> m_in;
  [[no_unique_address]] Extent<Out> m_out;
  index_t m_blocks;
  T* m_data = nullptr;
};

}  // namespace bonsai
