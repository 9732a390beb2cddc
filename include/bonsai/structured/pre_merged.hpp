// bonsai/structured/pre_merged.hpp — PreMerged<S>: pre-merged decoding (spec §7), y = S x
// computed either by S itself or by one GEMM with W_merged = S.to_dense() (out, in), multiplied
// out once after training. Calls with T <= max_merged_tokens() tokens take the dense GEMM (few
// tokens: decoding), larger T the structured chain; both give S x up to rounding. Parameters are
// S's under their own names followed by "merged" (out, in); merge() fills it from S. Params
// S + in*out; forward FLOPs those of the path T selects. For inference only: no backward.
#pragma once

#include "with_dense.hpp"

namespace bonsai {

template <LinearMap S>
class PreMerged : public detail::WithDense<S> {
  using Base = detail::WithDense<S>;

 public:
  using typename Base::scalar_type;

  explicit PreMerged(const S& structured, index_t max_merged_tokens = 0) : Base(structured, "merged") {
    set_max_merged_tokens(max_merged_tokens);
  }

  /// FLOPs of the path forward takes for this many tokens.
  index_t flops(index_t tokens) const noexcept {
    return uses_merged(tokens) ? this->m_dense.flops(tokens) : this->m_structured.flops(tokens);
  }

  /// W_merged as stored: (out, in); equals S.to_dense() once merged.
  Matrix<scalar_type> to_dense() const { return this->m_dense.to_dense(); }

  /// Calls with at most this many tokens use the merged GEMM; 0 (the default) never does.
  index_t max_merged_tokens() const noexcept { return m_max_merged_tokens; }
  void set_max_merged_tokens(index_t tokens) {
    BONSAI_CHECK(tokens >= 0, "PreMerged: max_merged_tokens = ", tokens, " is negative");
    m_max_merged_tokens = tokens;
  }
  bool uses_merged(index_t tokens) const noexcept { return tokens > 0 && tokens <= m_max_merged_tokens; }

  /// W_merged (out, in) as a Dense map bound to its storage.
  const Dense<scalar_type>& merged() const noexcept { return this->m_dense; }

 private:
  index_t m_max_merged_tokens = 0;
};

/// W_merged <- S.to_dense() (for BlockShuffle with both shuffles); call after S is trained.
template <class S>
void merge(const PreMerged<S>& f) {
  BONSAI_CHECK(f.is_bound(), "merge: the map's parameters are not bound to storage");
  as_eigen(f.merged().weight()) = as_eigen(f.structured().to_dense());
}

}  // namespace bonsai
