// bonsai/backend/pre_merged.hpp — lowering of PreMerged<S> in any memory space: forward is S's
// own lowering or the merged Dense one (y = epi(x W_merged^T)), picked by the token count
// T = x.rows(), with the caller's epilogue either way. No backward: train S and merge afterwards.
#pragma once

#include "../structured/dense.hpp"
#include "../structured/pre_merged.hpp"
#include "lowering.hpp"

namespace bonsai {

template <class S, class Space>
struct Lowering<PreMerged<S>, Space> {
  using Map = PreMerged<S>;
  using Merged = Dense<scalar_of<S>>;

  template <class T>
  struct Context {
    typename Lowering<S, Space>::template Context<T> structured;
    typename Lowering<Merged, Space>::template Context<T> merged;
    index_t rows = 0;  // T of the last forward
    index_t tokens() const noexcept { return rows; }
  };

  template <class T, class Epi>
  static void forward(const Map& f, const MatrixView<const T, Space>& x, const MatrixView<T, Space>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.rows = x.rows();
    if (f.uses_merged(x.rows())) return Lowering<Merged, Space>::forward(f.merged(), x, y, ctx.merged, epi);
    Lowering<S, Space>::forward(f.structured(), x, y, ctx.structured, epi);
  }

  template <class T, class Epi>
  static void backward(const Map&, Context<T>&, const MatrixView<const T, Space>&, const MatrixView<T, Space>&,
                       const Map&, const Epi&) {
    static_assert(detail::dependent_false<T, Epi>,
                  "PreMerged is for inference: train the structured map and merge it afterwards");
  }
};

}  // namespace bonsai
