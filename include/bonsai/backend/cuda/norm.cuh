// bonsai/backend/cuda/norm.cuh — row normalisations of activations x (N, C) on the GPU, the
// counterparts of backend/cpu/norm.hpp: LayerNorm y = (x - mean) * rstd * w + b with
// rstd = 1 / sqrt(var + eps), and RMSNorm y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps).
// Forward runs one warp per row (narrow rows) or one block per row and keeps mean and rstd (N) in
// float. Backward writes or adds dx row by row, and adds dw, db: column sums over the rows, taken
// per (32-column tile, chunk of rows) into float partials and then summed over the chunks in a
// fixed order, so results do not depend on scheduling. All arithmetic is in float.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "../../core/tensor.hpp"
#include "vector.cuh"
#include "error.cuh"
#include "memory.cuh"
#include "runtime.cuh"

namespace bonsai::cuda {

/// What a norm saves for backward.
template <class T>
struct NormState {
  Workspace<float, Device> mean;      // (N), LayerNorm only
  Workspace<float, Device> rstd;      // (N)
  Workspace<float, Device> partials;  // (2, chunks, C): dw, then db partial sums
  index_t rows = 0;                   // x's shape in the last forward
  index_t cols = 0;
};

namespace detail {

inline constexpr int rownorm_threads = 256;  // threads per block of every norm kernel
inline constexpr int rownorm_warp_units =
    256;  // a row of at most this many loads (of V elements) takes one warp
inline constexpr int rownorm_tile_cols = 32;  // column-sum kernel: 32 columns x 8 row lanes
inline constexpr int rownorm_tile_rows = rownorm_threads / rownorm_tile_cols;

/// a, b = their sums over the RowThreads threads of one row (a warp, or the whole block), added
/// in a fixed order; every thread of the row gets the same totals. The xor butterfly gives all
/// lanes bit-identical sums (each step adds the same two values, and float + commutes).
template <int RowThreads>
__device__ __forceinline__ void rownorm_row_sum(float& a, float& b, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  if constexpr (RowThreads > 32) {
    static_assert(RowThreads == rownorm_threads, "a row takes one warp or the whole block");
    constexpr int warps = RowThreads / 32;
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    if (lane == 0) {
      scratch[warp] = a;
      scratch[warps + warp] = b;
    }
    __syncthreads();
    a = 0.0f;
    b = 0.0f;
#pragma unroll
    for (int k = 0; k < warps; ++k) {
      a += scratch[k];
      b += scratch[warps + k];
    }
    __syncthreads();  // the next reduction overwrites scratch
  }
}

/// Forward of one row per RowThreads threads: x, y (N, C) with row strides ld_x, ld_y; w, b (C);
/// mean (N, LayerNorm only), rstd (N). Thread t of a row owns loads t, t + RowThreads, ... of V
/// elements each.
template <class T, int RowThreads, int V, bool Centered>
__global__ void __launch_bounds__(rownorm_threads)
    rownorm_forward_kernel(const T* x, index_t ld_x, const T* w, const T* b, T* y, index_t ld_y,
                           float* mean, float* rstd, index_t n, index_t c, float eps) {
  __shared__ float scratch[2 * (rownorm_threads / 32)];
  constexpr int rows_per_block = rownorm_threads / RowThreads;
  const int t = static_cast<int>(threadIdx.x) % RowThreads;
  const index_t r =
      blockIdx.x * index_t(rows_per_block) + static_cast<int>(threadIdx.x) / RowThreads;
  // Whole warps leave (RowThreads = 32), or none does (one block per row, grid = N): no thread
  // that skips a __syncthreads below.
  if (r >= n) return;
  const T* xr = x + r * ld_x;
  T* yr = y + r * ld_y;
  const index_t units = c / V;
  const float inv_c = 1.0f / static_cast<float>(c);

  float s = 0.0f, unused = 0.0f;
  for (index_t k = t; k < units; k += RowThreads) {
    float v[V];
    load_vec<T, V>(xr + k * V, v);
#pragma unroll
    for (int e = 0; e < V; ++e) s += Centered ? v[e] : v[e] * v[e];
  }
  rownorm_row_sum<RowThreads>(s, unused, scratch);

  float mu = 0.0f, rs;
  if constexpr (Centered) {
    mu = s * inv_c;
    float q = 0.0f;
    for (index_t k = t; k < units; k += RowThreads) {
      float v[V];
      load_vec<T, V>(xr + k * V, v);
#pragma unroll
      for (int e = 0; e < V; ++e) q += (v[e] - mu) * (v[e] - mu);
    }
    rownorm_row_sum<RowThreads>(q, unused, scratch);
    rs = 1.0f / sqrtf(q * inv_c + eps);
  } else {
    rs = 1.0f / sqrtf(s * inv_c + eps);
  }

  for (index_t k = t; k < units; k += RowThreads) {
    float v[V], wv[V], out[V];
    load_vec<T, V>(xr + k * V, v);
    load_vec<T, V>(w + k * V, wv);
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = (v[e] - mu) * rs * wv[e];
    if constexpr (Centered) {
      float bv[V];
      load_vec<T, V>(b + k * V, bv);
#pragma unroll
      for (int e = 0; e < V; ++e) out[e] += bv[e];
    }
    store_vec<T, V>(yr + k * V, out);
  }
  if (t == 0) {
    if constexpr (Centered) mean[r] = mu;
    rstd[r] = rs;
  }
}

/// dx of one row per RowThreads threads: with xhat = (x - mean) * rstd (mean = 0 for RMSNorm) and
/// gw = dy * w, dx = (or +=) rstd * (gw - mean(gw) [LayerNorm only] - xhat * mean(gw * xhat)).
template <class T, int RowThreads, int V, bool Centered>
__global__ void __launch_bounds__(rownorm_threads)
    rownorm_backward_dx_kernel(const T* dy, index_t ld_dy, const T* x, index_t ld_x, const T* w,
                               T* dx, index_t ld_dx, const float* mean, const float* rstd,
                               index_t n, index_t c, bool accumulate) {
  __shared__ float scratch[2 * (rownorm_threads / 32)];
  constexpr int rows_per_block = rownorm_threads / RowThreads;
  const int t = static_cast<int>(threadIdx.x) % RowThreads;
  const index_t r =
      blockIdx.x * index_t(rows_per_block) + static_cast<int>(threadIdx.x) / RowThreads;
  if (r >= n) return;  // whole warps, or none (see rownorm_forward_kernel)
  const T* gr = dy + r * ld_dy;
  const T* xr = x + r * ld_x;
  T* dr = dx + r * ld_dx;
  const index_t units = c / V;
  const float inv_c = 1.0f / static_cast<float>(c);
  const float mu = Centered ? mean[r] : 0.0f, rs = rstd[r];

  float sum_g = 0.0f, sum_gx = 0.0f;
  for (index_t k = t; k < units; k += RowThreads) {
    float g[V], xv[V], wv[V];
    load_vec<T, V>(gr + k * V, g);
    load_vec<T, V>(xr + k * V, xv);
    load_vec<T, V>(w + k * V, wv);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float gw = g[e] * wv[e];
      sum_g += gw;
      sum_gx += gw * ((xv[e] - mu) * rs);
    }
  }
  rownorm_row_sum<RowThreads>(sum_g, sum_gx, scratch);
  const float mean_g = Centered ? sum_g * inv_c : 0.0f, mean_gx = sum_gx * inv_c;

  for (index_t k = t; k < units; k += RowThreads) {
    float g[V], xv[V], wv[V], out[V];
    load_vec<T, V>(gr + k * V, g);
    load_vec<T, V>(xr + k * V, xv);
    load_vec<T, V>(w + k * V, wv);
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = rs * (g[e] * wv[e] - mean_g - (xv[e] - mu) * rs * mean_gx);
    if (accumulate) {
      float d[V];
      load_vec<T, V>(dr + k * V, d);
#pragma unroll
      for (int e = 0; e < V; ++e) out[e] += d[e];
    }
    store_vec<T, V>(dr + k * V, out);
  }
}

/// Column sums of one (32-column tile, chunk of rows) block: partials[chunk, j] = sum of
/// dy * xhat over the chunk's rows and, for LayerNorm, partials[chunks + chunk, j] = sum of dy.
/// Thread (tx, ty) takes column tile * 32 + tx and rows r0 + ty, r0 + ty + 8, ...; the 8 row
/// lanes are then added in order.
template <class T, bool Centered>
__global__ void __launch_bounds__(rownorm_threads)
    rownorm_backward_columns_kernel(const T* dy, index_t ld_dy, const T* x, index_t ld_x,
                                    const float* mean, const float* rstd, float* partials,
                                    index_t n, index_t c, index_t rows_per_chunk, index_t chunks) {
  __shared__ float sdw[rownorm_tile_rows][rownorm_tile_cols];
  __shared__ float sdb[rownorm_tile_rows][rownorm_tile_cols];
  const int tx = static_cast<int>(threadIdx.x) % rownorm_tile_cols;
  const int ty = static_cast<int>(threadIdx.x) / rownorm_tile_cols;
  const index_t j = blockIdx.x * index_t(rownorm_tile_cols) + tx;
  const index_t chunk = blockIdx.y;
  const index_t r0 = chunk * rows_per_chunk;
  const index_t r1 = r0 + rows_per_chunk < n ? r0 + rows_per_chunk : n;
  float pw = 0.0f, pb = 0.0f;
  if (j < c) {
    for (index_t r = r0 + ty; r < r1; r += rownorm_tile_rows) {
      const float g = static_cast<float>(dy[r * ld_dy + j]);
      const float mu = Centered ? mean[r] : 0.0f;
      pw += g * ((static_cast<float>(x[r * ld_x + j]) - mu) * rstd[r]);
      if constexpr (Centered) pb += g;
    }
  }
  sdw[ty][tx] = pw;
  sdb[ty][tx] = pb;
  __syncthreads();
  if (ty == 0 && j < c) {
    float a = 0.0f, bsum = 0.0f;
#pragma unroll
    for (int k = 0; k < rownorm_tile_rows; ++k) {
      a += sdw[k][tx];
      bsum += sdb[k][tx];
    }
    partials[chunk * c + j] = a;
    if constexpr (Centered) partials[(chunks + chunk) * c + j] = bsum;
  }
}

/// dw[j] += sum over chunks k (in order) of partials[k, j]; db likewise from partials[chunks + k,
/// j] when db is given.
template <class T>
__global__ void rownorm_reduce_kernel(const float* partials, index_t chunks, index_t c, T* dw,
                                      T* db) {
  const index_t j = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  if (j >= c) return;
  float s = 0.0f;
  for (index_t k = 0; k < chunks; ++k) s += partials[k * c + j];
  dw[j] = static_cast<T>(static_cast<float>(dw[j]) + s);
  if (db) {
    s = 0.0f;
    for (index_t k = 0; k < chunks; ++k) s += partials[(chunks + k) * c + j];
    db[j] = static_cast<T>(static_cast<float>(db[j]) + s);
  }
}

template <class T>
void rownorm_check_shapes(const char* who, const MatrixView<const T, Device>& x,
                          const MatrixView<T, Device>& y) {
  BONSAI_CHECK(y.rows() == x.rows() && y.cols() == x.cols(), who, ": x has shape ",
               shape{x.rows(), x.cols()}, " and y has shape ", shape{y.rows(), y.cols()},
               " but they must match");
  BONSAI_CHECK(x.stride(1) == 1 && y.stride(1) == 1, who, ": rows must be contiguous");
}

/// True when every row of every operand is whole 16-byte vectors: C a multiple of 16 / sizeof(T),
/// 16-byte aligned pointers and row strides (ld 0 for vectors; null pointers pass).
template <class T>
bool rownorm_vectorizable(index_t c,
                          std::initializer_list<std::pair<const void*, index_t>> operands) {
  if (c % Vec16<T>::size != 0) return false;
  for (auto [p, ld] : operands)
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0 || (ld * index_t(sizeof(T))) % 16 != 0)
      return false;
  return true;
}

/// Calls launch(std::integral_constant<int, RowThreads>, std::integral_constant<int, V>, grid):
/// one warp per row when a thread group has at most rownorm_warp_units loads per row, else one
/// block.
template <class T, class F>
void rownorm_dispatch(index_t n, index_t c, bool vec, F&& launch) {
  constexpr int V = Vec16<T>::size;
  const index_t units = vec ? c / V : c;
  const bool warp = units <= rownorm_warp_units;
  const unsigned rows_per_block = warp ? rownorm_threads / 32 : 1;
  const dim3 grid(static_cast<unsigned>((n + rows_per_block - 1) / rows_per_block));
  using Warp = std::integral_constant<int, 32>;
  using Block = std::integral_constant<int, rownorm_threads>;
  using Vec = std::integral_constant<int, V>;
  using Scalar = std::integral_constant<int, 1>;
  if (vec) {
    if (warp)
      launch(Warp{}, Vec{}, grid);
    else
      launch(Block{}, Vec{}, grid);
  } else {
    if (warp)
      launch(Warp{}, Scalar{}, grid);
    else
      launch(Block{}, Scalar{}, grid);
  }
}

template <class T, bool Centered>
void rownorm_forward(const char* who, const MatrixView<const T, Device>& x, const T* w, const T* b,
                     const MatrixView<T, Device>& y, float eps, NormState<T>& st) {
  rownorm_check_shapes(who, x, y);
  BONSAI_CHECK(w != nullptr && (!Centered || b != nullptr), who, ": the weights",
               Centered ? " and bias" : "", " must be given");
  const index_t n = x.rows(), c = x.cols();
  st.rows = n;
  st.cols = c;
  float* mean = Centered ? st.mean.reserve(n) : nullptr;
  float* rstd = st.rstd.reserve(n);
  if (n == 0 || c == 0) return;
  const bool vec =
      rownorm_vectorizable<T>(c, {{x.data(), x.ld()}, {y.data(), y.ld()}, {w, 0}, {b, 0}});
  rownorm_dispatch<T>(n, c, vec, [&](auto row_threads, auto v, dim3 grid) {
    rownorm_forward_kernel<T, decltype(row_threads)::value, decltype(v)::value, Centered>
        <<<grid, rownorm_threads, 0, runtime().stream()>>>(x.data(), x.ld(), w, b, y.data(), y.ld(),
                                                           mean, rstd, n, c, eps);
  });
  BONSAI_CUDA_CHECK_LAUNCH("rownorm_forward_kernel");
}

template <class T, bool Centered>
void rownorm_backward(const char* who, const MatrixView<const T, Device>& dy,
                      const MatrixView<const T, Device>& x, const T* w,
                      const MatrixView<T, Device>& dx, T* dw, T* db, bool accumulate_dx,
                      NormState<T>& st) {
  const index_t n = x.rows(), c = x.cols();
  BONSAI_CHECK(dy.rows() == n && dy.cols() == c && dx.rows() == n && dx.cols() == c, who,
               ": dy has shape ", shape{dy.rows(), dy.cols()}, ", x has shape ", shape{n, c},
               " and dx has shape ", shape{dx.rows(), dx.cols()}, " but they must match");
  BONSAI_CHECK(st.rows == n && st.cols == c, who, ": forward saved statistics for x of shape ",
               shape{st.rows, st.cols}, " but x has shape ", shape{n, c});
  BONSAI_CHECK(dy.stride(1) == 1 && x.stride(1) == 1 && dx.stride(1) == 1, who,
               ": rows must be contiguous");
  BONSAI_CHECK(w != nullptr && dw != nullptr, who,
               ": the weights and their gradient must be given");
  if (n == 0 || c == 0) return;
  const float* mean = Centered ? st.mean.data() : nullptr;
  const float* rstd = st.rstd.data();
  const cudaStream_t stream = runtime().stream();

  // dw, db first: they read dy and x, so dx may be dy (as on the CPU, which reads a row before
  // writing it).
  const index_t tiles = (c + rownorm_tile_cols - 1) / rownorm_tile_cols;
  const index_t target = index_t(runtime().multiprocessors()) * 8;
  index_t chunks = std::clamp<index_t>((target + tiles - 1) / tiles, 1,
                                       (n + rownorm_tile_rows - 1) / rownorm_tile_rows);
  const index_t rows_per_chunk = (n + chunks - 1) / chunks;
  chunks = (n + rows_per_chunk - 1) / rows_per_chunk;
  float* partials = st.partials.reserve((Centered ? 2 : 1) * chunks * c);
  const dim3 col_grid(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
  rownorm_backward_columns_kernel<T, Centered><<<col_grid, rownorm_threads, 0, stream>>>(
      dy.data(), dy.ld(), x.data(), x.ld(), mean, rstd, partials, n, c, rows_per_chunk, chunks);
  BONSAI_CUDA_CHECK_LAUNCH("rownorm_backward_columns_kernel");
  rownorm_reduce_kernel<T>
      <<<static_cast<unsigned>((c + rownorm_threads - 1) / rownorm_threads), rownorm_threads, 0,
         stream>>>(partials, chunks, c, dw, Centered ? db : nullptr);
  BONSAI_CUDA_CHECK_LAUNCH("rownorm_reduce_kernel");

  const bool vec = rownorm_vectorizable<T>(
      c, {{dy.data(), dy.ld()}, {x.data(), x.ld()}, {dx.data(), dx.ld()}, {w, 0}});
  rownorm_dispatch<T>(n, c, vec, [&](auto row_threads, auto v, dim3 grid) {
    rownorm_backward_dx_kernel<T, decltype(row_threads)::value, decltype(v)::value, Centered>
        <<<grid, rownorm_threads, 0, stream>>>(dy.data(), dy.ld(), x.data(), x.ld(), w, dx.data(),
                                               dx.ld(), mean, rstd, n, c, accumulate_dx);
  });
  BONSAI_CUDA_CHECK_LAUNCH("rownorm_backward_dx_kernel");
}

}  // namespace detail

/// LayerNorm forward: y = (x - mean) * rstd * w + b per row, rstd = 1 / sqrt(var + eps); x, y
/// (N, C); w, b (C) device pointers. Saves mean, rstd (N, float) in st. y may not alias x.
template <class T>
void layernorm_forward(const MatrixView<const T, Device>& x, const T* w, const T* b,
                       const MatrixView<T, Device>& y, float eps, NormState<T>& st) {
  detail::rownorm_forward<T, true>("layernorm_forward", x, w, b, y, eps, st);
}

/// LayerNorm backward: with xhat = (x - mean) * rstd and g = dy * w,
/// dx = (or += when accumulate_dx) rstd * (g - mean(g) - xhat * mean(g * xhat)); dw += sum over
/// rows of dy * xhat and db += sum over rows of dy (db may be null). dy, x, dx (N, C); w, dw, db
/// (C).
template <class T>
void layernorm_backward(const MatrixView<const T, Device>& dy, const MatrixView<const T, Device>& x,
                        const T* w, const MatrixView<T, Device>& dx, T* dw, T* db,
                        bool accumulate_dx, NormState<T>& st) {
  detail::rownorm_backward<T, true>("layernorm_backward", dy, x, w, dx, dw, db, accumulate_dx, st);
}

/// RMSNorm forward: y = x * rstd * w per row, rstd = 1 / sqrt(mean(x^2) + eps); x, y (N, C); w (C)
/// a device pointer. Saves rstd (N, float) in st. y may not alias x.
template <class T>
void rmsnorm_forward(const MatrixView<const T, Device>& x, const T* w,
                     const MatrixView<T, Device>& y, float eps, NormState<T>& st) {
  detail::rownorm_forward<T, false>("rmsnorm_forward", x, w, static_cast<const T*>(nullptr), y, eps,
                                    st);
}

/// RMSNorm backward: with xhat = x * rstd and g = dy * w, dx = (or += when accumulate_dx)
/// rstd * (g - xhat * mean(g * xhat)); dw += sum over rows of dy * xhat. dy, x, dx (N, C); w, dw
/// (C).
template <class T>
void rmsnorm_backward(const MatrixView<const T, Device>& dy, const MatrixView<const T, Device>& x,
                      const T* w, const MatrixView<T, Device>& dx, T* dw, bool accumulate_dx,
                      NormState<T>& st) {
  detail::rownorm_backward<T, false>("rmsnorm_backward", dy, x, w, dx, dw, static_cast<T*>(nullptr),
                                     accumulate_dx, st);
}

}  // namespace bonsai::cuda
