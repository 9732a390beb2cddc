// bonsai/backend/cpu/self_guided.hpp — CPU lowering of SelfGuided<S>, o = epi(a W x + (1 - a) S x).
// At a = 0 or a = 1 it is S's or the guide's own lowering. In between, S writes S x into the
// accumulator and one GEMM with beta = 1 - a blends the guide in (acc = a x W^T + (1 - a) acc),
// so the blend costs no extra pass; the epilogue follows. Backward, with g = d(acc):
//   S's backward on (1 - a) g,   dW += a g^T x,   dx = dx_S + a g W.
// The a of each forward is kept in the context, so the next micro-batch may draw another.
#pragma once

#include "../../structured/self_guided.hpp"
#include "../lowering.hpp"
#include "epilogue.hpp"
#include "gemm.hpp"
#include "linear.hpp"

namespace bonsai {

template <class S>
struct Lowering<SelfGuided<S>, Host> {
  using Map = SelfGuided<S>;
  using Guide = Dense<scalar_of<S>>;

  template <class T>
  struct Context {
    typename Lowering<S, Host>::template Context<T> structured;
    typename Lowering<Guide, Host>::template Context<T> guide;
    cpu::EpilogueState<T> epi;
    Workspace<T> gs;  // (T, out): (1 - a) d(acc), S's share of the output gradient
    MatrixView<const T, Host> x;  // (T, in), the caller's input
    double alpha = 0;
    index_t tokens() const noexcept { return x.rows(); }
  };

  template <class T, class Epi>
  static void forward(const Map& f, const MatrixView<const T, Host>& x, const MatrixView<T, Host>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.x = x;
    ctx.alpha = f.alpha();
    if (ctx.alpha == 0) return Lowering<S, Host>::forward(f.structured(), x, y, ctx.structured, epi);
    if (ctx.alpha == 1) return Lowering<Guide, Host>::forward(f.guide(), x, y, ctx.guide, epi);
    const T a(ctx.alpha);
    const auto acc = cpu::accumulator(epi, y, ctx.epi);  // (T, out)
    Lowering<S, Host>::forward(f.structured(), x, acc, ctx.structured, epilogue::None{});
    cpu::gemm(a, x, Op::N, f.guide().weight(), Op::T, T(1) - a, acc);
    cpu::epilogue_forward(epi, MatrixView<const T, Host>(acc), RowLayout::identity(), y, ctx.epi);
  }

  template <class T, class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Host>& dy,
                       const MatrixView<T, Host>& dx, const Map& grads, const Epi& epi) {
    if (ctx.alpha == 0)
      return Lowering<S, Host>::backward(f.structured(), ctx.structured, dy, dx, grads.structured(), epi);
    if (ctx.alpha == 1)
      return Lowering<Guide, Host>::backward(f.guide(), ctx.guide, dy, dx, grads.guide(), epi);
    const T a(ctx.alpha);
    const index_t tokens = dy.rows(), out = dy.cols();
    const auto g = cpu::epilogue_backward(epi, dy, RowLayout::identity(),
                                          cpu::dacc_target(epi, tokens, out, ctx.epi), ctx.epi);
    const auto gs = ctx.gs.matrix(tokens, out);  // (T, out)
    as_eigen(gs) = (T(1) - a) * as_eigen(g);
    Lowering<S, Host>::backward(f.structured(), ctx.structured, MatrixView<const T, Host>(gs), dx,
                                grads.structured(), epilogue::None{});
    cpu::gemm(a, g, Op::T, ctx.x, Op::N, T(1), grads.guide().weight());  // dW (out, in)
    if (!dx.empty()) cpu::gemm(a, g, Op::N, f.guide().weight(), Op::N, T(1), dx);
  }
};

}  // namespace bonsai
