// bonsai/backend/lowering.hpp — the seam between what a map computes and how a backend runs it.
// Lowering<Map, Space> is specialised per node and per memory space (backend/cpu for Host,
// backend/cuda for Device); the free functions below check shapes once and dispatch on the
// space of the operands:
//   forward(map, x, y, ctx, epi):            y = epi(x W^T)        x (T, in), y (T, out)
//   backward(map, ctx, dy, dx, grads, epi):  dx = d(acc) W  (=),  grads += d(acc)-terms (+=)
// where grads is the same map bound to gradient storage and ctx keeps what forward saved (a
// view of x, intermediates, the pre-activation); x must stay alive and unchanged until backward.
#pragma once

#include <type_traits>

#include "../core/tensor.hpp"
#include "../structured/map.hpp"
#include "epilogue.hpp"

namespace bonsai {

template <class Map, class Space>
struct Lowering {
  static_assert(detail::dependent_false<Map, Space>,
                "no lowering of this linear map for this memory space: include "
                "<bonsai/bonsai.hpp> for Host tensors or <bonsai/cuda.hpp> for Device tensors");
};

/// What forward saves for backward, per map, memory space and scalar type (a map without
/// parameters, such as Shuffle, names T explicitly); reuse one across steps so the hot path
/// allocates nothing.
template <class Map, class Space = Host, class T = scalar_of<Map>>
using Context = typename Lowering<std::remove_cvref_t<Map>, Space>::template Context<T>;

namespace detail {

template <class T, class U>
bool overlaps(const MatrixView<T, Host>& a, const MatrixView<U, Host>& b) {
  if (a.empty() || b.empty()) return false;
  const auto* a0 = reinterpret_cast<const char*>(a.data());
  const auto* b0 = reinterpret_cast<const char*>(b.data());
  const auto* a1 = reinterpret_cast<const char*>(a.data() + (a.rows() - 1) * a.ld() + a.cols());
  const auto* b1 = reinterpret_cast<const char*>(b.data() + (b.rows() - 1) * b.ld() + b.cols());
  return a0 < b1 && b0 < a1;
}
template <class T, class U, class S>
bool overlaps(const MatrixView<T, S>&, const MatrixView<U, S>&) {
  return false;  // device pointers are not compared on the host
}

template <class T, class S>
void check_rows_contiguous(const MatrixView<T, S>& m, const char* who, const char* name) {
  BONSAI_CHECK(m.stride(1) == 1 && m.ld() >= m.cols(), who, ": ", name,
               " must have contiguous rows (column stride ", m.stride(1), ", leading dimension ",
               m.ld(), " for ", m.cols(), " columns)");
}

template <class E>
void check_epilogue(const E& epi, index_t out, const char* who) {
  if constexpr (epilogue::has_bias<E>) {
    BONSAI_CHECK(epi.bias.size() == out, who, ": bias has shape ", shape{epi.bias.size()},
                 " but the map has ", out, " output features");
    BONSAI_CHECK(epi.dbias.empty() || epi.dbias.size() == out, who, ": dbias has shape ",
                 shape{epi.dbias.size()}, " but the map has ", out, " output features");
  }
}

}  // namespace detail

/// y = epi(x W^T). x: (T, in), y: (T, out); y must not overlap x.
template <LinearMap Map, class XT, class YT, class Space, class Epi = epilogue::None>
void forward(const Map& f, const MatrixView<XT, Space>& x, const MatrixView<YT, Space>& y,
             Context<Map, Space, std::remove_const_t<XT>>& ctx, const Epi& epi = {}) {
  using T = std::remove_const_t<XT>;
  static_assert((std::is_void_v<scalar_of<Map>> || std::is_same_v<scalar_of<Map>, T>) &&
                    std::is_same_v<YT, T>,
                "forward: x and y must hold the map's scalar type, and y must be mutable");
  BONSAI_CHECK(f.is_bound(), "forward: the map's parameters are not bound to storage");
  BONSAI_CHECK(x.cols() == f.in_features(), "forward: x has shape ", shape{x.rows(), x.cols()},
               " but the map takes ", f.in_features(), " input features (weight shape ",
               shape{f.out_features(), f.in_features()}, ")");
  BONSAI_CHECK(y.rows() == x.rows() && y.cols() == f.out_features(), "forward: y has shape ",
               shape{y.rows(), y.cols()}, " but x of shape ", shape{x.rows(), x.cols()},
               " maps to ", shape{x.rows(), f.out_features()});
  detail::check_rows_contiguous(x, "forward", "x");
  detail::check_rows_contiguous(y, "forward", "y");
  BONSAI_CHECK(!detail::overlaps(x, y), "forward: y overlaps x; the output needs its own memory");
  detail::check_epilogue(epi, f.out_features(), "forward");
  Lowering<Map, Space>::forward(f, MatrixView<const T, Space>(x), y, ctx, epi);
}

/// Backward of the last forward with this ctx: dx = dL/dx (overwritten; pass an empty view when
/// not needed), grads += dL/dparameters, epi.dbias += dL/dbias.
template <LinearMap Map, class DYT, class DXT, class Space, class Epi = epilogue::None>
void backward(const Map& f, Context<Map, Space, std::remove_const_t<DYT>>& ctx,
              const MatrixView<DYT, Space>& dy, const MatrixView<DXT, Space>& dx,
              const Map& grads, const Epi& epi = {}) {
  using T = std::remove_const_t<DYT>;
  static_assert((std::is_void_v<scalar_of<Map>> || std::is_same_v<scalar_of<Map>, T>) &&
                    std::is_same_v<DXT, T>,
                "backward: dy and dx must hold the map's scalar type, and dx must be mutable");
  const index_t tokens = ctx.tokens();
  BONSAI_CHECK(tokens > 0, "backward: the context holds no forward pass");
  BONSAI_CHECK(dy.rows() == tokens && dy.cols() == f.out_features(), "backward: dy has shape ",
               shape{dy.rows(), dy.cols()}, " but the forward pass produced ",
               shape{tokens, f.out_features()});
  BONSAI_CHECK(dx.empty() || (dx.rows() == tokens && dx.cols() == f.in_features()),
               "backward: dx has shape ", shape{dx.rows(), dx.cols()}, " but x had shape ",
               shape{tokens, f.in_features()});
  BONSAI_CHECK(grads.is_bound() && grads.in_features() == f.in_features() &&
                   grads.out_features() == f.out_features() &&
                   grads.param_count() == f.param_count(),
               "backward: grads must be the same map bound to gradient storage");
  detail::check_rows_contiguous(dy, "backward", "dy");
  if (!dx.empty()) detail::check_rows_contiguous(dx, "backward", "dx");
  BONSAI_CHECK(!detail::overlaps(dx, dy), "backward: dx overlaps dy; dx needs its own memory");
  detail::check_epilogue(epi, f.out_features(), "backward");
  Lowering<Map, Space>::backward(f, ctx, MatrixView<const T, Space>(dy), dx, grads, epi);
}

}  // namespace bonsai
