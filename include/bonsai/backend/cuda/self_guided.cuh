// bonsai/backend/cuda/self_guided.cuh — CUDA lowering of SelfGuided<S>, o = epi(a W x + (1 - a) S x),
// the same scheme as the CPU reference: at a = 0 or a = 1 it is S's or the guide's own lowering;
// in between S writes S x into the accumulator and one GEMM with beta = 1 - a blends the guide
// in (acc = a x W^T + (1 - a) acc), then the epilogue kernel runs. Backward, with g = d(acc):
//   S's backward on (1 - a) g,   dW += a g^T x,   dx = dx_S + a g W.
#pragma once

#include "../../structured/self_guided.hpp"
#include "../lowering.hpp"
#include "epilogue.cuh"
#include "gemm.cuh"
#include "linear.cuh"

namespace bonsai {

namespace cuda::detail {

/// dst = s * src for contiguous (rows, cols) views with their own leading dimensions.
template <class T>
__global__ void scale_kernel(const T* src, index_t ld_src, T* dst, index_t ld_dst, index_t rows, index_t cols,
                             float s) {
  const index_t n = rows * cols;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / cols, c = i % cols;
    dst[r * ld_dst + c] = static_cast<T>(s * static_cast<float>(src[r * ld_src + c]));
  }
}

}  // namespace cuda::detail

template <class S>
struct Lowering<SelfGuided<S>, Device> {
  using Map = SelfGuided<S>;
  using Guide = Dense<scalar_of<S>>;

  template <class T>
  struct Context {
    typename Lowering<S, Device>::template Context<T> structured;
    typename Lowering<Guide, Device>::template Context<T> guide;
    cuda::EpilogueState<T> epi;
    Workspace<T, Device> gs;        // (T, out): (1 - a) d(acc), S's share of the output gradient
    MatrixView<const T, Device> x;  // (T, in), the caller's input
    double alpha = 0;
    index_t tokens() const noexcept { return x.rows(); }
  };

  template <class T, class Epi>
  static void forward(const Map& f, const MatrixView<const T, Device>& x, const MatrixView<T, Device>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.x = x;
    ctx.alpha = f.alpha();
    if (ctx.alpha == 0) return Lowering<S, Device>::forward(f.structured(), x, y, ctx.structured, epi);
    if (ctx.alpha == 1) return Lowering<Guide, Device>::forward(f.guide(), x, y, ctx.guide, epi);
    const float a = static_cast<float>(ctx.alpha);
    MatrixView<T, Device> acc = y;  // (T, out); the pre-activation buffer when GELU follows
    if constexpr (epilogue::has_gelu<Epi>) acc = ctx.epi.pre.matrix(y.rows(), y.cols());
    Lowering<S, Device>::forward(f.structured(), x, acc, ctx.structured, epilogue::None{});
    cuda::gemm<T>(a, x, Op::N, f.guide().template weight<Device>(), Op::T, 1.0f - a, acc);
    cuda::epilogue_forward(epi, MatrixView<const T, Device>(acc), RowLayout::identity(), y, ctx.epi);
  }

  template <class T, class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Device>& dy,
                       const MatrixView<T, Device>& dx, const Map& grads, const Epi& epi) {
    if (ctx.alpha == 0)
      return Lowering<S, Device>::backward(f.structured(), ctx.structured, dy, dx, grads.structured(), epi);
    if (ctx.alpha == 1)
      return Lowering<Guide, Device>::backward(f.guide(), ctx.guide, dy, dx, grads.guide(), epi);
    const float a = static_cast<float>(ctx.alpha);
    const index_t tokens = dy.rows(), out = dy.cols();
    const auto g = cuda::epilogue_backward(epi, dy, RowLayout::identity(),
                                           cuda::dacc_target(epi, tokens, out, ctx.epi), ctx.epi);
    const auto gs = ctx.gs.matrix(tokens, out);  // (T, out)
    if (tokens > 0 && out > 0) {
      cuda::detail::scale_kernel<<<std::min<index_t>((tokens * out + 255) / 256, 65535), 256, 0,
                                   cuda::runtime().stream()>>>(g.data(), g.ld(), gs.data(), gs.ld(), tokens, out,
                                                               1.0f - a);
      BONSAI_CUDA_CHECK_LAUNCH("scale_kernel");
    }
    Lowering<S, Device>::backward(f.structured(), ctx.structured, MatrixView<const T, Device>(gs), dx,
                                  grads.structured(), epilogue::None{});
    cuda::gemm<T>(a, g, Op::T, ctx.x, Op::N, 1.0f, grads.guide().template weight<Device>());  // dW
    if (!dx.empty()) cuda::gemm<T>(a, g, Op::N, f.guide().template weight<Device>(), Op::N, 1.0f, dx);
  }
};

}  // namespace bonsai
