// bonsai/structured/with_dense.hpp — the storage SelfGuided and PreMerged share: a structured
// map S and one dense matrix of S's shape (out, in), bound right after S's parameters and named
// by the wrapper ("guide", "merged"). S keeps its own parameter names, so a model can change
// between S and a wrapper of S by copying parameters by name.
#pragma once

#include <vector>

#include "dense.hpp"
#include "map.hpp"

namespace bonsai::detail {

template <LinearMap S>
class WithDense {
 public:
  using scalar_type = scalar_of<S>;
  using Structured = S;
  static constexpr index_t static_in = S::static_in;
  static constexpr index_t static_out = S::static_out;

  index_t in_features() const noexcept { return m_structured.in_features(); }
  index_t out_features() const noexcept { return m_structured.out_features(); }
  index_t param_count() const noexcept { return m_structured.param_count() + m_dense.param_count(); }
  std::vector<ParamInfo> parameters() const {
    std::vector<ParamInfo> out = m_structured.parameters();
    out.push_back({m_dense_name, {out_features(), in_features()}});
    return out;
  }

  /// Binds S's parameters, then the dense matrix after them.
  void bind(scalar_type* data) noexcept {
    m_structured.bind(data);
    m_dense.bind(data ? data + m_structured.param_count() : nullptr);
  }
  bool is_bound() const noexcept { return m_structured.is_bound() && m_dense.is_bound(); }

  /// The structured map S, bound to the same storage.
  const S& structured() const noexcept { return m_structured; }

 protected:
  WithDense(const S& structured, const char* dense_name)
      : m_structured(structured), m_dense(structured.in_features(), structured.out_features()),
        m_dense_name(dense_name) {}

  S m_structured;
  Dense<scalar_type> m_dense;  // (out, in)
  const char* m_dense_name;
};

}  // namespace bonsai::detail
