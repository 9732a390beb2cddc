// bonsai/backend/cpu/linear.hpp — CPU lowering of the GEMM leaves. With acc the product before
// the epilogue and g = d(acc):
//   Dense      acc = x W^T;            dW += g^T x;              dx = g W
//   LowRank    h = x V^T, acc = h U^T; dU += g^T h, dh = g U,    dV += dh^T x, dx = dh V
//   BlockDiag  acc_i = x_i W_i^T;      dW_i += g_i^T x_i;        dx_i = g_i W_i
// Block slices are strided column views (leading dimension = full width), so a block-diagonal
// map is B GEMMs over views of one buffer with no copies.
#pragma once

#include "../../structured/block_diag.hpp"
#include "../../structured/dense.hpp"
#include "../../structured/low_rank.hpp"
#include "../lowering.hpp"
#include "epilogue.hpp"
#include "gemm.hpp"

namespace bonsai {

namespace cpu {

/// Where the GEMM writes: y itself, or the saved pre-activation when GELU follows.
template <class T, class Epi>
MatrixView<T, Host> accumulator(const Epi&, const MatrixView<T, Host>& y, EpilogueState<T>& st) {
  if constexpr (epilogue::has_gelu<Epi>) return st.pre.matrix(y.rows(), y.cols());
  else return y;
}

/// Where backward writes d(acc) when it is not dy itself.
template <class T, class Epi>
MatrixView<T, Host> dacc_target(const Epi&, index_t rows, index_t cols, EpilogueState<T>& st) {
  if constexpr (epilogue::has_gelu<Epi>) return st.dacc.matrix(rows, cols);
  else return {};
}

/// Context of a GEMM leaf: the saved input, the epilogue's scratch, and the leaf's own
/// intermediates.
template <class T, int Intermediates = 0>
struct LinearContext {
  MatrixView<const T, Host> x;  // (T, in), the caller's input
  EpilogueState<T> epi;
  Workspace<T> h[Intermediates > 0 ? Intermediates : 1];   // forward intermediates
  Workspace<T> dh[Intermediates > 0 ? Intermediates : 1];  // their gradients
  index_t tokens() const noexcept { return x.rows(); }
};

}  // namespace cpu

template <class T, index_t I, index_t O>
struct Lowering<Dense<T, I, O>, Host> {
  using Map = Dense<T, I, O>;
  template <class>
  using Context = cpu::LinearContext<T>;

  template <class Epi>
  static void forward(const Map& f, const MatrixView<const T, Host>& x, const MatrixView<T, Host>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.x = x;
    const auto acc = cpu::accumulator(epi, y, ctx.epi);  // (T, out)
    cpu::gemm(T(1), x, Op::N, f.weight(), Op::T, T(0), acc);
    cpu::epilogue_forward(epi, MatrixView<const T, Host>(acc), RowLayout::identity(), y, ctx.epi);
  }

  template <class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Host>& dy,
                       const MatrixView<T, Host>& dx, const Map& grads, const Epi& epi) {
    const auto g = cpu::epilogue_backward(epi, dy, RowLayout::identity(),
                                          cpu::dacc_target(epi, dy.rows(), dy.cols(), ctx.epi), ctx.epi);
    cpu::gemm(T(1), g, Op::T, ctx.x, Op::N, T(1), grads.weight());  // (out, in)
    if (!dx.empty()) cpu::gemm(T(1), g, Op::N, f.weight(), Op::N, T(0), dx);
  }
};

template <class T, index_t I, index_t O>
struct Lowering<LowRank<T, I, O>, Host> {
  using Map = LowRank<T, I, O>;
  template <class>
  using Context = cpu::LinearContext<T, 1>;

  template <class Epi>
  static void forward(const Map& f, const MatrixView<const T, Host>& x, const MatrixView<T, Host>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.x = x;
    const auto h = ctx.h[0].matrix(x.rows(), f.rank());  // (T, R)
    cpu::gemm(T(1), x, Op::N, f.v(), Op::T, T(0), h);
    const auto acc = cpu::accumulator(epi, y, ctx.epi);  // (T, out)
    cpu::gemm(T(1), h, Op::N, f.u(), Op::T, T(0), acc);
    cpu::epilogue_forward(epi, MatrixView<const T, Host>(acc), RowLayout::identity(), y, ctx.epi);
  }

  template <class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Host>& dy,
                       const MatrixView<T, Host>& dx, const Map& grads, const Epi& epi) {
    const index_t tokens = dy.rows();
    const auto g = cpu::epilogue_backward(epi, dy, RowLayout::identity(),
                                          cpu::dacc_target(epi, tokens, dy.cols(), ctx.epi), ctx.epi);
    const MatrixView<const T, Host> h(ctx.h[0].matrix(tokens, f.rank()));  // (T, R)
    cpu::gemm(T(1), g, Op::T, h, Op::N, T(1), grads.u());          // dU (out, R)
    const auto dh = ctx.dh[0].matrix(tokens, f.rank());                      // (T, R)
    cpu::gemm(T(1), g, Op::N, f.u(), Op::N, T(0), dh);
    cpu::gemm(T(1), dh, Op::T, ctx.x, Op::N, T(1), grads.v());  // dV (R, in)
    if (!dx.empty())
      cpu::gemm(T(1), dh, Op::N, f.v(), Op::N, T(0), dx);
  }
};

template <class T, index_t I, index_t O>
struct Lowering<BlockDiag<T, I, O>, Host> {
  using Map = BlockDiag<T, I, O>;
  template <class>
  using Context = cpu::LinearContext<T>;

  template <class Epi>
  static void forward(const Map& f, const MatrixView<const T, Host>& x, const MatrixView<T, Host>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.x = x;
    const auto acc = cpu::accumulator(epi, y, ctx.epi);  // (T, out)
    const index_t p = f.block_in(), s = f.block_out();
    for (index_t i = 0; i < f.blocks(); ++i)  // acc_i (T, s) = x_i (T, p) W_i^T
      cpu::gemm(T(1), columns(x, i * p, p), Op::N, f.block(i),
                Op::T, T(0), columns(acc, i * s, s));
    cpu::epilogue_forward(epi, MatrixView<const T, Host>(acc), RowLayout::identity(), y, ctx.epi);
  }

  template <class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Host>& dy,
                       const MatrixView<T, Host>& dx, const Map& grads, const Epi& epi) {
    const auto g = cpu::epilogue_backward(epi, dy, RowLayout::identity(),
                                          cpu::dacc_target(epi, dy.rows(), dy.cols(), ctx.epi), ctx.epi);
    const index_t p = f.block_in(), s = f.block_out();
    for (index_t i = 0; i < f.blocks(); ++i) {
      const auto gi = columns(g, i * s, s);  // (T, s)
      cpu::gemm(T(1), gi, Op::T, columns(ctx.x, i * p, p), Op::N, T(1), grads.block(i));
      if (!dx.empty())
        cpu::gemm(T(1), gi, Op::N, f.block(i), Op::N, T(0), columns(dx, i * p, p));
    }
  }
};

}  // namespace bonsai
