// bonsai/backend/product.hpp — lowering of Product<F0, ..., Fn> in any memory space, built from
// its factors' lowerings in that space: the factors run in application order (Fn first) through
// intermediates kept in the context; only the last factor (F0) gets the epilogue, so a product
// ending in a Shuffle fuses the output permutation with bias and GELU. Backward walks the
// factors in reverse with the same context.
#pragma once

#include <array>
#include <tuple>
#include <utility>

#include "../structured/product.hpp"
#include "lowering.hpp"

namespace bonsai {

template <class... Fs, class Space>
struct Lowering<Product<Fs...>, Space> {
  using Map = Product<Fs...>;
  static constexpr std::size_t n = sizeof...(Fs);

  template <class T>
  struct Context {
    std::tuple<typename Lowering<Fs, Space>::template Context<T>...> factors;
    std::array<Workspace<T, Space>, n - 1> h;   // h[s]: output of application step s, (T, width)
    std::array<Workspace<T, Space>, n - 1> dh;  // its gradient
    index_t token_count = 0;
    index_t tokens() const noexcept { return token_count; }
  };

  template <class T, class Epi>
  static void forward(const Map& f, const MatrixView<const T, Space>& x, const MatrixView<T, Space>& y,
                      Context<T>& ctx, const Epi& epi) {
    ctx.token_count = x.rows();
    forward_steps(f, x, y, ctx, epi, std::make_index_sequence<n>{});
  }

  template <class T, class Epi>
  static void backward(const Map& f, Context<T>& ctx, const MatrixView<const T, Space>& dy,
                       const MatrixView<T, Space>& dx, const Map& grads, const Epi& epi) {
    backward_steps(f, ctx, dy, dx, grads, epi, std::make_index_sequence<n>{});
  }

 private:
  /// Factor applied at step S (0 = first = rightmost).
  template <std::size_t S>
  static constexpr std::size_t factor_at = n - 1 - S;

  template <std::size_t S, class T, class Epi>
  static void forward_step(const Map& f, const MatrixView<const T, Space>& x,
                           const MatrixView<T, Space>& y, Context<T>& ctx, const Epi& epi) {
    const auto& fac = f.template factor<factor_at<S>>();
    using F = std::remove_cvref_t<decltype(fac)>;
    const index_t tokens = x.rows();
    MatrixView<const T, Space> in = x;  // (T, fac.in)
    if constexpr (S > 0) in = ctx.h[S - 1].matrix(tokens, fac.in_features());
    auto& fctx = std::get<factor_at<S>>(ctx.factors);
    if constexpr (S + 1 == n)
      Lowering<F, Space>::forward(fac, in, y, fctx, epi);
    else
      Lowering<F, Space>::forward(fac, in, ctx.h[S].matrix(tokens, fac.out_features()), fctx, epilogue::None{});
  }
  template <class T, class Epi, std::size_t... S>
  static void forward_steps(const Map& f, const MatrixView<const T, Space>& x, const MatrixView<T, Space>& y,
                            Context<T>& ctx, const Epi& epi, std::index_sequence<S...>) {
    (forward_step<S>(f, x, y, ctx, epi), ...);
  }

  template <std::size_t S, class T, class Epi>
  static void backward_step(const Map& f, Context<T>& ctx, const MatrixView<const T, Space>& dy,
                            const MatrixView<T, Space>& dx, const Map& grads, const Epi& epi) {
    const auto& fac = f.template factor<factor_at<S>>();
    const auto& gfac = grads.template factor<factor_at<S>>();
    using F = std::remove_cvref_t<decltype(fac)>;
    const index_t tokens = dy.rows();
    MatrixView<const T, Space> dout = dy;  // (T, fac.out)
    if constexpr (S + 1 < n) dout = ctx.dh[S].matrix(tokens, fac.out_features());
    MatrixView<T, Space> din = dx;  // (T, fac.in), empty when dx is not wanted
    if constexpr (S > 0) din = ctx.dh[S - 1].matrix(tokens, fac.in_features());
    auto& fctx = std::get<factor_at<S>>(ctx.factors);
    if constexpr (S + 1 == n)
      Lowering<F, Space>::backward(fac, fctx, dout, din, gfac, epi);
    else
      Lowering<F, Space>::backward(fac, fctx, dout, din, gfac, epilogue::None{});
  }
  template <class T, class Epi, std::size_t... S>
  static void backward_steps(const Map& f, Context<T>& ctx, const MatrixView<const T, Space>& dy,
                             const MatrixView<T, Space>& dx, const Map& grads, const Epi& epi,
                             std::index_sequence<S...>) {
    // Last step first: fold over the reversed sequence.
    (backward_step<n - 1 - S>(f, ctx, dy, dx, grads, epi), ...);
  }
};

}  // namespace bonsai
