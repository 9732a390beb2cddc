// bonsai/backend/cuda/shuffle.cuh — CUDA lowering of Shuffle(a, b): each token row, viewed as a
// row-major (a, b) array, is stored transposed by the tiled epilogue kernel, so a product ending
// in a Shuffle gets its bias and GELU in the same pass; backward reads dy through the transpose.
#pragma once

#include "../../structured/shuffle.hpp"
#include "../lowering.hpp"
#include "epilogue.cuh"

namespace bonsai {

template <index_t N>
struct Lowering<Shuffle<N>, Device> {
  using Map = Shuffle<N>;
  template <class T>
  struct Context {
    cuda::EpilogueState<T> epi;
    index_t tokens() const noexcept { return epi.tokens; }
  };

  static RowLayout layout(const Map& f) { return RowLayout::transposed(f.a(), f.b()); }

  template <class T, class Epi>
  static void forward(const Map& f, const MatrixView<const T, Device>& x, const MatrixView<T, Device>& y,
                      Context<T>& ctx, const Epi& epi) {
    cuda::epilogue_forward(epi, x, layout(f), y, ctx.epi);
  }

  template <class T, class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Device>& dy,
                       const MatrixView<T, Device>& dx, const Map&, const Epi& epi) {
    const auto g = cuda::epilogue_backward(epi, dy, layout(f), dx, ctx.epi);
    if (!dx.empty() && g.data() != dx.data())  // identity layout without GELU: a plain copy
      BONSAI_CUDA_CHECK(cudaMemcpy2DAsync(dx.data(), sizeof(T) * dx.ld(), g.data(), sizeof(T) * g.ld(),
                                          sizeof(T) * g.cols(), g.rows(), cudaMemcpyDeviceToDevice,
                                          cuda::runtime().stream()));
  }
};

}  // namespace bonsai
