// bonsai/backend/cuda/elementwise.cuh — the memory-bound elementwise steps of a transformer layer
// on the GPU, computed in float and stored in T:
//   residual add   y = x + b
//   SwiGLU         h = silu(g) u,  silu(g) = g sigmoid(g)
//                  dg = dh u silu'(g),  du = dh silu(g),  silu'(g) = s (1 + g (1 - s)), s = sigmoid(g)
// Operands are (N, C) matrices with contiguous rows; they are visited row by row so any leading
// dimension works, with 16-byte vectors when every row allows them.
#pragma once

#include <initializer_list>
#include <utility>

#include "../../core/tensor.hpp"
#include "error.cuh"
#include "memory.cuh"
#include "runtime.cuh"
#include "vector.cuh"

namespace bonsai::cuda {

namespace detail {

inline constexpr int elementwise_threads = 256;

/// Whether every (pointer, leading dimension) pair allows 16-byte vectors over c columns.
template <class T>
bool elementwise_vectorizable(index_t c, std::initializer_list<std::pair<const void*, index_t>> operands) {
  if (c % Vec16<T>::size != 0) return false;
  for (auto [p, ld] : operands)
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0 || (ld * index_t(sizeof(T))) % 16 != 0) return false;
  return true;
}

/// Calls f(row, col) for every group of V consecutive elements of an (n, c) matrix, grid-stride.
template <int V, class F>
__device__ __forceinline__ void for_each_group(index_t n, index_t c, F&& f) {
  const index_t groups_per_row = c / V, total = n * groups_per_row;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / groups_per_row;
    f(r, (i - r * groups_per_row) * V);
  }
}

template <class T, int V>
__global__ void add_kernel(const T* x, index_t ldx, const T* b, index_t ldb, T* y, index_t ldy, index_t n,
                           index_t c) {
  for_each_group<V>(n, c, [&](index_t r, index_t j) {
    float xv[V], bv[V];
    load_vec<T, V>(x + r * ldx + j, xv);
    load_vec<T, V>(b + r * ldb + j, bv);
#pragma unroll
    for (int e = 0; e < V; ++e) xv[e] += bv[e];
    store_vec<T, V>(y + r * ldy + j, xv);
  });
}

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <class T, int V>
__global__ void swiglu_forward_kernel(const T* g, index_t ldg, const T* u, index_t ldu, T* h, index_t ldh,
                                      index_t n, index_t c) {
  for_each_group<V>(n, c, [&](index_t r, index_t j) {
    float gv[V], uv[V];
    load_vec<T, V>(g + r * ldg + j, gv);
    load_vec<T, V>(u + r * ldu + j, uv);
#pragma unroll
    for (int e = 0; e < V; ++e) gv[e] = gv[e] * sigmoid(gv[e]) * uv[e];
    store_vec<T, V>(h + r * ldh + j, gv);
  });
}

template <class T, int V>
__global__ void swiglu_backward_kernel(const T* dh, index_t ldd, const T* g, index_t ldg, const T* u,
                                       index_t ldu, T* dg, index_t lddg, T* du, index_t lddu, index_t n,
                                       index_t c) {
  for_each_group<V>(n, c, [&](index_t r, index_t j) {
    float dv[V], gv[V], uv[V], dgv[V], duv[V];
    load_vec<T, V>(dh + r * ldd + j, dv);
    load_vec<T, V>(g + r * ldg + j, gv);
    load_vec<T, V>(u + r * ldu + j, uv);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float s = sigmoid(gv[e]);
      duv[e] = dv[e] * gv[e] * s;
      dgv[e] = dv[e] * uv[e] * s * (1.0f + gv[e] * (1.0f - s));
    }
    store_vec<T, V>(dg + r * lddg + j, dgv);
    store_vec<T, V>(du + r * lddu + j, duv);
  });
}

inline unsigned elementwise_grid(index_t work) {
  const index_t cap = index_t(runtime().multiprocessors()) * 16;
  const index_t blocks = (work + elementwise_threads - 1) / elementwise_threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks < cap ? blocks : cap);
}

/// Launches kernel<V> over (n, c): V = 16 bytes of T when `vec`, else 1.
template <class T, class Launch>
void launch_elementwise(index_t n, index_t c, bool vec, Launch&& launch) {
  if (n == 0 || c == 0) return;
  constexpr int V = Vec16<T>::size;
  if (vec) launch(std::integral_constant<int, V>{}, elementwise_grid(n * (c / V)));
  else launch(std::integral_constant<int, 1>{}, elementwise_grid(n * c));
}

template <class T, class... Views>
void check_elementwise(const char* who, const MatrixView<const T, Device>& first, const Views&... rest) {
  auto one = [&](const auto& m) {
    BONSAI_CHECK(m.rows() == first.rows() && m.cols() == first.cols(), who, ": operands of shape ",
                 shape{first.rows(), first.cols()}, " and ", shape{m.rows(), m.cols()}, " differ");
    BONSAI_CHECK(m.stride(1) == 1, who, ": operands need contiguous rows");
  };
  one(first);
  (one(rest), ...);
}

}  // namespace detail

/// y = x + b, all (N, C). y may be x or b.
template <class T>
void add(const MatrixView<const std::type_identity_t<T>, Device>& x,
         const MatrixView<const std::type_identity_t<T>, Device>& b, const MatrixView<T, Device>& y) {
  detail::check_elementwise<T>("cuda::add", x, b, y);
  const bool vec = detail::elementwise_vectorizable<T>(x.cols(), {{x.data(), x.ld()}, {b.data(), b.ld()}, {y.data(), y.ld()}});
  detail::launch_elementwise<T>(x.rows(), x.cols(), vec, [&](auto v, unsigned blocks) {
    detail::add_kernel<T, decltype(v)::value><<<blocks, detail::elementwise_threads, 0, runtime().stream()>>>(
        x.data(), x.ld(), b.data(), b.ld(), y.data(), y.ld(), x.rows(), x.cols());
  });
  BONSAI_CUDA_CHECK_LAUNCH("add_kernel");
}

/// h = silu(g) u, all (N, F); h must not overlap g or u.
template <class T>
void swiglu_forward(const MatrixView<const std::type_identity_t<T>, Device>& g,
                    const MatrixView<const std::type_identity_t<T>, Device>& u, const MatrixView<T, Device>& h) {
  detail::check_elementwise<T>("cuda::swiglu_forward", g, u, h);
  const bool vec = detail::elementwise_vectorizable<T>(g.cols(), {{g.data(), g.ld()}, {u.data(), u.ld()}, {h.data(), h.ld()}});
  detail::launch_elementwise<T>(g.rows(), g.cols(), vec, [&](auto v, unsigned blocks) {
    detail::swiglu_forward_kernel<T, decltype(v)::value><<<blocks, detail::elementwise_threads, 0, runtime().stream()>>>(
        g.data(), g.ld(), u.data(), u.ld(), h.data(), h.ld(), g.rows(), g.cols());
  });
  BONSAI_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

/// dg = dh u silu'(g), du = dh silu(g) (both =), all (N, F).
template <class T>
void swiglu_backward(const MatrixView<const std::type_identity_t<T>, Device>& dh,
                     const MatrixView<const std::type_identity_t<T>, Device>& g,
                     const MatrixView<const std::type_identity_t<T>, Device>& u, const MatrixView<T, Device>& dg,
                     const MatrixView<T, Device>& du) {
  detail::check_elementwise<T>("cuda::swiglu_backward", dh, g, u, dg, du);
  const bool vec = detail::elementwise_vectorizable<T>(
      g.cols(), {{dh.data(), dh.ld()}, {g.data(), g.ld()}, {u.data(), u.ld()}, {dg.data(), dg.ld()}, {du.data(), du.ld()}});
  detail::launch_elementwise<T>(g.rows(), g.cols(), vec, [&](auto v, unsigned blocks) {
    detail::swiglu_backward_kernel<T, decltype(v)::value><<<blocks, detail::elementwise_threads, 0, runtime().stream()>>>(
        dh.data(), dh.ld(), g.data(), g.ld(), u.data(), u.ld(), dg.data(), dg.ld(), du.data(), du.ld(), g.rows(),
        g.cols());
  });
  BONSAI_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace bonsai::cuda
