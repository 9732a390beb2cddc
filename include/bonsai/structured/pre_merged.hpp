// bonsai/structured/pre_merged.hpp — PreMerged<S>: pre-merged decoding (spec §7), y = S x
// computed either by S itself or by one GEMM with W_merged = S.to_dense() (out, in), multiplied
// out once after training. Calls with T <= max_merged_tokens() tokens take the dense GEMM (few
// tokens: decoding), larger T the structured chain; both give S x up to rounding. Parameters are
// S's under their own names followed by "merged" (out, in); merge() fills it from S. Params
// S + in*out; forward FLOPs those of the path T selects. For inference only: no backward.
#pragma once

#include <string>

#include "dense.hpp"
#include "map.hpp"

namespace bonsai {

template <LinearMap S>
class PreMerged {
 public:
  using scalar_type = scalar_of<S>;
  using Structured = S;
  static constexpr index_t static_in = S::static_in;
  static constexpr index_t static_out = S::static_out;

  explicit PreMerged(const S& structured, index_t max_merged_tokens = 0)
      : m_structured(structured), m_merged(structured.in_features(), structured.out_features()) {
    set_max_merged_tokens(max_merged_tokens);
  }

  index_t in_features() const noexcept { return m_structured.in_features(); }
  index_t out_features() const noexcept { return m_structured.out_features(); }
  index_t param_count() const noexcept { return m_structured.param_count() + m_merged.param_count(); }
  /// FLOPs of the path forward takes for this many tokens.
  index_t flops(index_t tokens) const noexcept {
    return uses_merged(tokens) ? m_merged.flops(tokens) : m_structured.flops(tokens);
  }
  std::vector<ParamInfo> parameters() const {
    std::vector<ParamInfo> out = m_structured.parameters();
    out.push_back({"merged", {out_features(), in_features()}});
    return out;
  }

  /// W_merged as stored: (out, in); equals S.to_dense() once merged.
  Matrix<scalar_type> to_dense() const { return m_merged.to_dense(); }

  /// Binds S's parameters, then the merged matrix after them.
  void bind(scalar_type* data) noexcept {
    m_structured.bind(data);
    m_merged.bind(data ? data + m_structured.param_count() : nullptr);
  }
  bool is_bound() const noexcept { return m_structured.is_bound() && m_merged.is_bound(); }

  /// Calls with at most this many tokens use the merged GEMM; 0 (the default) never does.
  index_t max_merged_tokens() const noexcept { return m_max_merged_tokens; }
  void set_max_merged_tokens(index_t tokens) {
    BONSAI_CHECK(tokens >= 0, "PreMerged: max_merged_tokens = ", tokens, " is negative");
    m_max_merged_tokens = tokens;
  }
  bool uses_merged(index_t tokens) const noexcept { return tokens > 0 && tokens <= m_max_merged_tokens; }

  /// The structured map S, bound to the same storage.
  const S& structured() const noexcept { return m_structured; }
  /// W_merged (out, in) as a Dense map bound to its storage.
  const Dense<scalar_type>& merged() const noexcept { return m_merged; }

 private:
  S m_structured;
  Dense<scalar_type> m_merged;
  index_t m_max_merged_tokens = 0;
};

template <class M>
inline constexpr bool is_pre_merged = false;
template <class S>
inline constexpr bool is_pre_merged<PreMerged<S>> = true;

/// W_merged <- S.to_dense() (for BlockShuffle with both shuffles); call after S is trained.
template <class S>
void merge(const PreMerged<S>& f) {
  BONSAI_CHECK(f.is_bound(), "merge: the map's parameters are not bound to storage");
  as_eigen(f.merged().weight()) = as_eigen(f.structured().to_dense());
}

}  // namespace bonsai
