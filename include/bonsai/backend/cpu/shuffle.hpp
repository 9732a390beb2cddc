// bonsai/backend/cpu/shuffle.hpp — CPU lowering of Shuffle(a, b): each token row, viewed as a
// row-major (a, b) array, is stored transposed; backward stores dy's rows through the inverse
// (b, a) transpose. The move is the epilogue pass itself, so a product ending in a Shuffle gets
// its bias and GELU in the same pass.
#pragma once

#include "../../structured/shuffle.hpp"
#include "../lowering.hpp"
#include "epilogue.hpp"

namespace bonsai {

template <index_t N>
struct Lowering<Shuffle<N>, Host> {
  using Map = Shuffle<N>;
  template <class T>
  struct Context {
    cpu::EpilogueState<T> epi;
    index_t tokens() const noexcept { return epi.tokens; }
  };

  static RowLayout layout(const Map& f) { return RowLayout::transposed(f.a(), f.b()); }

  template <class T, class Epi>
  static void forward(const Map& f, const MatrixView<const T, Host>& x, const MatrixView<T, Host>& y,
                      Context<T>& ctx, const Epi& epi) {
    cpu::epilogue_forward(epi, x, layout(f), y, ctx.epi);
  }

  template <class T, class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Host>& dy,
                       const MatrixView<T, Host>& dx, const Map&, const Epi& epi) {
    const auto g = cpu::epilogue_backward(epi, dy, layout(f), dx, ctx.epi);
    if (!dx.empty() && g.data() != dx.data())  // identity layout without GELU: a plain copy
      cpu::detail::for_row_ranges(dy.rows(), dy.cols(), [&](int, index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r)
          std::copy(g.data() + r * g.ld(), g.data() + r * g.ld() + g.cols(), dx.data() + r * dx.ld());
      });
  }
};

}  // namespace bonsai
