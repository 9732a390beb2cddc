// bonsai/backend/cuda/linear.cuh — CUDA lowering of the GEMM leaves, the same equations as the
// CPU reference (backend/cpu/linear.hpp). With acc the product before the epilogue and g = d(acc):
//   Dense      acc = x W^T;            dW += g^T x;              dx = g W
//   LowRank    h = x V^T, acc = h U^T; dU += g^T h, dh = g U,    dV += dh^T x, dx = dh V
//   BlockDiag  acc_i = x_i W_i^T;      dW_i += g_i^T x_i;        dx_i = g_i W_i
// BlockDiag is one strided-batched GEMM per product: block i is a column view of x, acc, dx
// (batch stride p or s elements) and the i-th (s, p) slab of the weights.
#pragma once

#include "../../structured/block_diag.hpp"
#include "../../structured/dense.hpp"
#include "../../structured/low_rank.hpp"
#include "../lowering.hpp"
#include "epilogue.cuh"
#include "gemm.cuh"

namespace bonsai {

namespace cuda {

/// Context of a GEMM leaf on the device.
template <class T, int Intermediates = 0>
struct LinearContext {
  MatrixView<const T, Device> x;  // (T, in), the caller's input
  EpilogueState<T> epi;
  Workspace<T, Device> h[Intermediates > 0 ? Intermediates : 1];   // forward intermediates
  Workspace<T, Device> dh[Intermediates > 0 ? Intermediates : 1];  // their gradients
  index_t tokens() const noexcept { return x.rows(); }
};

/// Where backward writes d(acc) when it is not dy itself.
template <class T, class Epi>
MatrixView<T, Device> dacc_target(const Epi&, index_t rows, index_t cols, EpilogueState<T>& st) {
  if constexpr (epilogue::has_gelu<Epi>) return st.dacc.matrix(rows, cols);
  else return {};
}

}  // namespace cuda

template <class T, index_t I, index_t O>
struct Lowering<Dense<T, I, O>, Device> {
  using Map = Dense<T, I, O>;
  template <class>
  using Context = cuda::LinearContext<T>;

  template <class Epi>
  static void forward(const Map& f, const MatrixView<const T, Device>& x, const MatrixView<T, Device>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.x = x;
    const auto w = f.template weight<Device>();  // (out, in)
    cuda::gemm_with_epilogue(epi, y, ctx.epi, 0, [&](const MatrixView<T, Device>& acc, const cuda::GemmEpilogue& e) {
      return cuda::gemm<T>(1.0f, x, Op::N, w, Op::T, 0.0f, acc, {}, e);
    });
  }

  template <class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Device>& dy,
                       const MatrixView<T, Device>& dx, const Map& grads, const Epi& epi) {
    const auto g = cuda::epilogue_backward(epi, dy, RowLayout::identity(),
                                           cuda::dacc_target(epi, dy.rows(), dy.cols(), ctx.epi), ctx.epi);
    cuda::gemm<T>(1.0f, g, Op::T, ctx.x, Op::N, 1.0f, grads.template weight<Device>());  // (out, in)
    if (!dx.empty()) cuda::gemm<T>(1.0f, g, Op::N, f.template weight<Device>(), Op::N, 0.0f, dx);
  }
};

template <class T, index_t I, index_t O>
struct Lowering<LowRank<T, I, O>, Device> {
  using Map = LowRank<T, I, O>;
  template <class>
  using Context = cuda::LinearContext<T, 1>;

  template <class Epi>
  static void forward(const Map& f, const MatrixView<const T, Device>& x, const MatrixView<T, Device>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.x = x;
    const auto h = ctx.h[0].matrix(x.rows(), f.rank());  // (T, R)
    cuda::gemm<T>(1.0f, x, Op::N, f.template v<Device>(), Op::T, 0.0f, h);
    const auto u = f.template u<Device>();  // (out, R)
    cuda::gemm_with_epilogue(epi, y, ctx.epi, 0, [&](const MatrixView<T, Device>& acc, const cuda::GemmEpilogue& e) {
      return cuda::gemm<T>(1.0f, h, Op::N, u, Op::T, 0.0f, acc, {}, e);
    });
  }

  template <class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Device>& dy,
                       const MatrixView<T, Device>& dx, const Map& grads, const Epi& epi) {
    const index_t tokens = dy.rows();
    const auto g = cuda::epilogue_backward(epi, dy, RowLayout::identity(),
                                           cuda::dacc_target(epi, tokens, dy.cols(), ctx.epi), ctx.epi);
    const MatrixView<const T, Device> h(ctx.h[0].matrix(tokens, f.rank()));  // (T, R)
    cuda::gemm<T>(1.0f, g, Op::T, h, Op::N, 1.0f, grads.template u<Device>());  // dU (out, R)
    const auto dh = ctx.dh[0].matrix(tokens, f.rank());                                    // (T, R)
    cuda::gemm<T>(1.0f, g, Op::N, f.template u<Device>(), Op::N, 0.0f, dh);
    cuda::gemm<T>(1.0f, dh, Op::T, ctx.x, Op::N, 1.0f, grads.template v<Device>());  // dV (R, in)
    if (!dx.empty()) cuda::gemm<T>(1.0f, dh, Op::N, f.template v<Device>(), Op::N, 0.0f, dx);
  }
};

template <class T, index_t I, index_t O>
struct Lowering<BlockDiag<T, I, O>, Device> {
  using Map = BlockDiag<T, I, O>;
  template <class>
  using Context = cuda::LinearContext<T>;

  template <class Epi>
  static void forward(const Map& f, const MatrixView<const T, Device>& x, const MatrixView<T, Device>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.x = x;
    const index_t p = f.block_in(), s = f.block_out(), B = f.blocks();
    const auto w0 = f.template block<Device>(0);  // (s, p); block i at + i s p
    cuda::gemm_with_epilogue(epi, y, ctx.epi, s, [&](const MatrixView<T, Device>& acc, const cuda::GemmEpilogue& e) {
      return cuda::gemm<T>(1.0f, columns(x, 0, p), Op::N, w0, Op::T, 0.0f, columns(acc, 0, s),
                           cuda::Batch{B, p, s * p, s}, e);
    });
  }

  template <class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Device>& dy,
                       const MatrixView<T, Device>& dx, const Map& grads, const Epi& epi) {
    const auto g = cuda::epilogue_backward(epi, dy, RowLayout::identity(),
                                           cuda::dacc_target(epi, dy.rows(), dy.cols(), ctx.epi), ctx.epi);
    const index_t p = f.block_in(), s = f.block_out(), B = f.blocks();
    // dW_i (s, p) += g_i^T x_i
    cuda::gemm<T>(1.0f, columns(g, 0, s), Op::T, columns(ctx.x, 0, p), Op::N, 1.0f,
                  grads.template block<Device>(0), cuda::Batch{B, s, p, s * p});
    // dx_i (T, p) = g_i W_i
    if (!dx.empty())
      cuda::gemm<T>(1.0f, columns(g, 0, s), Op::N, f.template block<Device>(0), Op::N, 0.0f,
                    columns(dx, 0, p), cuda::Batch{B, s, s * p, p});
  }
};

}  // namespace bonsai
