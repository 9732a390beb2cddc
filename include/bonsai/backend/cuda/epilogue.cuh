// bonsai/backend/cuda/epilogue.cuh — the output stage on the GPU. When a GEMM produces the
// output, cuBLASLt's own epilogue adds the bias and applies tanh-GELU (keeping acc + b for
// backward); otherwise — after a Shuffle, or when cuBLASLt offers no algorithm — one kernel
// reads the accumulator through the row layout (identity, or the transpose of a row-major (a, b)
// view as Shuffle(a, b) does), adds the bias, applies GELU and writes y in one pass: with 16-byte
// vectors when one side of the view has at most 4 elements (the identity included), else through
// shared-memory tiles of 1024 elements, so reads and writes stay coalesced under the transpose.
// Backward is the mirror pass: d(acc) = layout^-1(dy * gelu'(pre)), with dbias summed
// per (tile, row chunk) and reduced in a fixed order, so results do not depend on scheduling.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "../../core/tensor.hpp"
#include "../epilogue.hpp"
#include "gemm.cuh"
#include "vector.cuh"

namespace bonsai::cuda {

/// Scratch an epilogue keeps between forward and backward.
template <class T>
struct EpilogueState {
  Workspace<T, Device> pre;         // (T, out) acc + b, when GELU follows
  Workspace<T, Device> dacc;        // (T, out) d(acc), when it differs from dy
  Workspace<float, Device> partials;  // (row chunks, out) dbias partial sums
  index_t tokens = 0;
  index_t width = 0;
};

namespace detail {

inline constexpr int epilogue_threads = 256;
inline constexpr int tile_elements = 1024;  // 4 per thread

template <class T>
__device__ __forceinline__ float load_float(const T* p) {
  return static_cast<float>(*p);
}
template <class T>
__device__ __forceinline__ void store_float(T* p, float v) {
  *p = static_cast<T>(v);
}

__device__ __forceinline__ float gelu_f(float u) {
  return 0.5f * u * (1.0f + tanhf(float(epilogue::gelu_k0) * (u + float(epilogue::gelu_k1) * u * u * u)));
}
__device__ __forceinline__ float gelu_grad_f(float u) {
  const float th = tanhf(float(epilogue::gelu_k0) * (u + float(epilogue::gelu_k1) * u * u * u));
  return 0.5f * (1.0f + th) +
         0.5f * u * (1.0f - th * th) * float(epilogue::gelu_k0) * (1.0f + float(3 * epilogue::gelu_k1) * u * u);
}

/// A launch over a row of n = a b features viewed as (a, b): tiles of I x J (I J ≤ 1024), one
/// block per (tile, chunk of rows).
struct TileGrid {
  index_t a, b;
  int I, J;
  index_t tiles_j, tiles, rows_per_chunk, chunks;

  TileGrid(RowLayout layout, index_t n, index_t rows, int sms) {
    if (layout.is_identity()) {
      a = 1;
      b = n;
    } else {
      a = layout.a;
      b = layout.b;
    }
    if (a == 1) {
      I = 1;
      J = static_cast<int>(std::min<index_t>(b, tile_elements));
    } else if (a >= 32 && b >= 32) {
      I = J = 32;
    } else if (a < 32) {
      I = static_cast<int>(a);
      J = static_cast<int>(std::min<index_t>(b, tile_elements / a));
    } else {
      J = static_cast<int>(b);
      I = static_cast<int>(std::min<index_t>(a, tile_elements / b));
    }
    tiles_j = (b + J - 1) / J;
    tiles = tiles_j * ((a + I - 1) / I);
    const index_t target = index_t(sms) * 8;
    chunks = std::clamp<index_t>((target + tiles - 1) / tiles, 1, std::max<index_t>(rows, 1));
    rows_per_chunk = (rows + chunks - 1) / chunks;
    chunks = rows > 0 ? (rows + rows_per_chunk - 1) / rows_per_chunk : 0;
  }
  std::size_t shared_bytes() const { return sizeof(float) * std::size_t(I) * std::size_t(J + 1); }
};

/// y[r, L(k)] = act(acc[r, k] + bias[L(k)]), pre[r, L(k)] = acc[r, k] + bias[L(k)] (GELU only),
/// with L(i b + j) = j a + i. acc may be pre itself (in place under the identity layout).
template <class T, bool Gelu, bool HasBias>
__global__ void __launch_bounds__(epilogue_threads)
    epilogue_forward_kernel(const T* acc, index_t ld_acc, T* y, index_t ld_y, T* pre, const T* bias,
                            index_t rows, TileGrid g) {
  extern __shared__ float tile[];
  const index_t ti = blockIdx.x / g.tiles_j, tj = blockIdx.x % g.tiles_j;
  const index_t i0 = ti * g.I, j0 = tj * g.J, n = g.a * g.b;
  const int elems = g.I * g.J, stride = g.J + 1;
  const index_t r0 = blockIdx.y * g.rows_per_chunk;
  const index_t r1 = r0 + g.rows_per_chunk < rows ? r0 + g.rows_per_chunk : rows;
  for (index_t r = r0; r < r1; ++r) {
    for (int e = threadIdx.x; e < elems; e += blockDim.x) {  // read along j: contiguous input
      const int i = e / g.J, j = e % g.J;
      const index_t gi = i0 + i, gj = j0 + j;
      if (gi < g.a && gj < g.b) tile[i * stride + j] = load_float(acc + r * ld_acc + gi * g.b + gj);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < elems; e += blockDim.x) {  // write along i: contiguous output
      const int j = e / g.I, i = e % g.I;
      const index_t gi = i0 + i, gj = j0 + j;
      if (gi < g.a && gj < g.b) {
        const index_t o = gj * g.a + gi;
        float v = tile[i * stride + j];
        if constexpr (HasBias) v += load_float(bias + o);
        if constexpr (Gelu) {
          store_float(pre + r * n + o, v);
          v = gelu_f(v);
        }
        store_float(y + r * ld_y + o, v);
      }
    }
    __syncthreads();
  }
}

/// dx[r, k] = dy[r, L(k)] * gelu'(pre[r, L(k)]) (dx may be null: dbias only), and
/// partials[chunk, o] = sum over the chunk's rows of that gradient.
template <class T, bool Gelu, bool DBias>
__global__ void __launch_bounds__(epilogue_threads)
    epilogue_backward_kernel(const T* dy, index_t ld_dy, const T* pre, T* dx, index_t ld_dx,
                             float* partials, index_t rows, TileGrid g) {
  extern __shared__ float tile[];
  constexpr int per_thread = tile_elements / epilogue_threads;
  const index_t ti = blockIdx.x / g.tiles_j, tj = blockIdx.x % g.tiles_j;
  const index_t i0 = ti * g.I, j0 = tj * g.J, n = g.a * g.b;
  const int elems = g.I * g.J, stride = g.J + 1;
  const index_t r0 = blockIdx.y * g.rows_per_chunk;
  const index_t r1 = r0 + g.rows_per_chunk < rows ? r0 + g.rows_per_chunk : rows;
  float part[per_thread] = {};
  for (index_t r = r0; r < r1; ++r) {
#pragma unroll
    for (int u = 0; u < per_thread; ++u) {  // read along i: contiguous dy
      const int e = threadIdx.x + u * epilogue_threads;
      if (e >= elems) break;
      const int j = e / g.I, i = e % g.I;
      const index_t gi = i0 + i, gj = j0 + j;
      if (gi < g.a && gj < g.b) {
        const index_t o = gj * g.a + gi;
        float v = load_float(dy + r * ld_dy + o);
        if constexpr (Gelu) v *= gelu_grad_f(load_float(pre + r * n + o));
        if constexpr (DBias) part[u] += v;
        tile[i * stride + j] = v;
      }
    }
    if (dx) {
      __syncthreads();
      for (int e = threadIdx.x; e < elems; e += blockDim.x) {  // write along j: contiguous dx
        const int i = e / g.J, j = e % g.J;
        const index_t gi = i0 + i, gj = j0 + j;
        if (gi < g.a && gj < g.b) store_float(dx + r * ld_dx + gi * g.b + gj, tile[i * stride + j]);
      }
    }
    __syncthreads();
  }
  if constexpr (DBias) {
#pragma unroll
    for (int u = 0; u < per_thread; ++u) {
      const int e = threadIdx.x + u * epilogue_threads;
      if (e >= elems) break;
      const int j = e / g.I, i = e % g.I;
      const index_t gi = i0 + i, gj = j0 + j;
      if (gi < g.a && gj < g.b) partials[blockIdx.y * n + gj * g.a + gi] = part[u];
    }
  }
}

/// The fast path when one side of the (a, b) view has S ≤ 4 elements (S = 1: the identity).
/// Each thread owns V = 16 / sizeof(T) consecutive positions g0..g0+V-1 of the long side (length
/// L) and all S of the short side: S*V elements, which are one contiguous run on the "grouped"
/// side ((g0 + v) S + s) and S runs of V on the "strided" side (s L + g0 + v); both are 16-byte
/// vectors. For Shuffle(a, b) with a = S the output is grouped, with b = S the input is.
struct VecGrid {
  index_t L, rows_per_chunk, chunks, groups;
};

template <class T, int S>
__device__ __forceinline__ void load_grouped(const T* p, float (&val)[S][Vec16<T>::size]) {
  constexpr int V = Vec16<T>::size;
#pragma unroll
  for (int q = 0; q < S; ++q) {
    const Vec16<T> w = reinterpret_cast<const Vec16<T>*>(p)[q];
#pragma unroll
    for (int e = 0; e < V; ++e) val[(q * V + e) % S][(q * V + e) / S] = static_cast<float>(w.v[e]);
  }
}
template <class T, int S>
__device__ __forceinline__ void load_strided(const T* p, index_t L, float (&val)[S][Vec16<T>::size]) {
  constexpr int V = Vec16<T>::size;
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const Vec16<T> w = *reinterpret_cast<const Vec16<T>*>(p + s * L);
#pragma unroll
    for (int e = 0; e < V; ++e) val[s][e] = static_cast<float>(w.v[e]);
  }
}
template <class T, int S>
__device__ __forceinline__ void store_grouped(T* p, const float (&val)[S][Vec16<T>::size]) {
  constexpr int V = Vec16<T>::size;
#pragma unroll
  for (int q = 0; q < S; ++q) {
    Vec16<T> w;
#pragma unroll
    for (int e = 0; e < V; ++e) w.v[e] = static_cast<T>(val[(q * V + e) % S][(q * V + e) / S]);
    reinterpret_cast<Vec16<T>*>(p)[q] = w;
  }
}
template <class T, int S>
__device__ __forceinline__ void store_strided(T* p, index_t L, const float (&val)[S][Vec16<T>::size]) {
  constexpr int V = Vec16<T>::size;
#pragma unroll
  for (int s = 0; s < S; ++s) {
    Vec16<T> w;
#pragma unroll
    for (int e = 0; e < V; ++e) w.v[e] = static_cast<T>(val[s][e]);
    *reinterpret_cast<Vec16<T>*>(p + s * L) = w;
  }
}

/// Output position of element (s, v) of the thread whose long-side run starts at g0.
template <int S, bool OutGrouped>
__device__ __forceinline__ index_t out_index(index_t g0, index_t L, int s, int v) {
  return OutGrouped ? (g0 + v) * S + s : s * L + g0 + v;
}

template <class T, int S, bool OutGrouped, bool Gelu, bool HasBias>
__global__ void __launch_bounds__(epilogue_threads)
    epilogue_forward_vec_kernel(const T* acc, index_t ld_acc, T* y, index_t ld_y, T* pre, const T* bias,
                                index_t rows, VecGrid g) {
  constexpr int V = Vec16<T>::size;
  const index_t group = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  if (group >= g.groups) return;
  const index_t g0 = group * V, L = g.L, n = S * L;
  const index_t base_out = OutGrouped ? g0 * S : g0;   // where this thread's output run starts
  const index_t base_in = OutGrouped ? g0 : g0 * S;
  float b[S][V];
  if constexpr (HasBias) {
    if constexpr (OutGrouped) load_grouped<T, S>(bias + base_out, b);
    else load_strided<T, S>(bias + base_out, L, b);
  }
  const index_t r0 = blockIdx.y * g.rows_per_chunk;
  const index_t r1 = r0 + g.rows_per_chunk < rows ? r0 + g.rows_per_chunk : rows;
  for (index_t r = r0; r < r1; ++r) {
    float val[S][V];
    if constexpr (OutGrouped) load_strided<T, S>(acc + r * ld_acc + base_in, L, val);
    else load_grouped<T, S>(acc + r * ld_acc + base_in, val);
#pragma unroll
    for (int s = 0; s < S; ++s)
#pragma unroll
      for (int v = 0; v < V; ++v)
        if constexpr (HasBias) val[s][v] += b[s][v];
    if constexpr (Gelu) {
      if constexpr (OutGrouped) store_grouped<T, S>(pre + r * n + base_out, val);
      else store_strided<T, S>(pre + r * n + base_out, L, val);
#pragma unroll
      for (int s = 0; s < S; ++s)
#pragma unroll
        for (int v = 0; v < V; ++v) val[s][v] = gelu_f(val[s][v]);
    }
    if constexpr (OutGrouped) store_grouped<T, S>(y + r * ld_y + base_out, val);
    else store_strided<T, S>(y + r * ld_y + base_out, L, val);
  }
}

template <class T, int S, bool OutGrouped, bool Gelu, bool DBias>
__global__ void __launch_bounds__(epilogue_threads)
    epilogue_backward_vec_kernel(const T* dy, index_t ld_dy, const T* pre, T* dx, index_t ld_dx,
                                 float* partials, index_t rows, VecGrid g) {
  constexpr int V = Vec16<T>::size;
  const index_t group = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  if (group >= g.groups) return;
  const index_t g0 = group * V, L = g.L, n = S * L;
  const index_t base_out = OutGrouped ? g0 * S : g0;
  const index_t base_in = OutGrouped ? g0 : g0 * S;
  float part[S][V] = {};
  const index_t r0 = blockIdx.y * g.rows_per_chunk;
  const index_t r1 = r0 + g.rows_per_chunk < rows ? r0 + g.rows_per_chunk : rows;
  for (index_t r = r0; r < r1; ++r) {
    float val[S][V];
    if constexpr (OutGrouped) load_grouped<T, S>(dy + r * ld_dy + base_out, val);
    else load_strided<T, S>(dy + r * ld_dy + base_out, L, val);
    if constexpr (Gelu) {
      float u[S][V];
      if constexpr (OutGrouped) load_grouped<T, S>(pre + r * n + base_out, u);
      else load_strided<T, S>(pre + r * n + base_out, L, u);
#pragma unroll
      for (int s = 0; s < S; ++s)
#pragma unroll
        for (int v = 0; v < V; ++v) val[s][v] *= gelu_grad_f(u[s][v]);
    }
    if constexpr (DBias) {
#pragma unroll
      for (int s = 0; s < S; ++s)
#pragma unroll
        for (int v = 0; v < V; ++v) part[s][v] += val[s][v];
    }
    if (dx) {
      if constexpr (OutGrouped) store_strided<T, S>(dx + r * ld_dx + base_in, L, val);
      else store_grouped<T, S>(dx + r * ld_dx + base_in, val);
    }
  }
  if constexpr (DBias) {
    float* p = partials + blockIdx.y * n;
#pragma unroll
    for (int s = 0; s < S; ++s)
#pragma unroll
      for (int v = 0; v < V; ++v) p[out_index<S, OutGrouped>(g0, L, s, v)] = part[s][v];
  }
}

/// The vector path's shape: S (1, 2 or 4; 0 when it does not apply), whether the output is
/// the grouped side, and L.
struct VecShape {
  int S = 0;
  bool out_grouped = true;
  index_t L = 0;
};
template <class T>
VecShape vec_shape(RowLayout layout, index_t n, std::initializer_list<std::pair<const void*, index_t>> operands) {
  constexpr index_t V = Vec16<T>::size;
  VecShape v;
  if (layout.is_identity()) v = {1, true, n};
  else if (layout.a <= 4) v = {static_cast<int>(layout.a), true, layout.b};
  else if (layout.b <= 4) v = {static_cast<int>(layout.b), false, layout.a};
  else return {};
  if (v.S == 3 || v.L % V != 0) return {};
  for (auto [p, ld] : operands)
    if (p && (reinterpret_cast<std::uintptr_t>(p) % 16 != 0 || (ld * index_t(sizeof(T))) % 16 != 0)) return {};
  return v;
}

inline VecGrid vec_grid(index_t L, index_t V, index_t rows, int sms) {
  VecGrid g;
  g.L = L;
  g.groups = L / V;
  const index_t blocks_x = (g.groups + epilogue_threads - 1) / epilogue_threads;
  const index_t target = index_t(sms) * 8;
  g.chunks = std::clamp<index_t>((target + blocks_x - 1) / blocks_x, 1, std::max<index_t>(rows, 1));
  g.rows_per_chunk = (rows + g.chunks - 1) / g.chunks;
  g.chunks = rows > 0 ? (rows + g.rows_per_chunk - 1) / g.rows_per_chunk : 0;
  return g;
}

/// Calls f(std::integral_constant<int, S>, std::bool_constant<OutGrouped>) for a run-time shape.
template <class F>
void dispatch_vec(const VecShape& v, F&& f) {
  switch (v.S * 2 + (v.out_grouped ? 1 : 0)) {
    case 3: f(std::integral_constant<int, 1>{}, std::true_type{}); break;
    case 5: f(std::integral_constant<int, 2>{}, std::true_type{}); break;
    case 4: f(std::integral_constant<int, 2>{}, std::false_type{}); break;
    case 9: f(std::integral_constant<int, 4>{}, std::true_type{}); break;
    case 8: f(std::integral_constant<int, 4>{}, std::false_type{}); break;
    default: ::bonsai::detail::fail("epilogue: no vector kernel for S = ", v.S);
  }
}

/// dbias[o] += sum over chunks c (in order) of partials[c, o].
template <class T>
__global__ void reduce_partials_kernel(const float* partials, index_t chunks, index_t n, T* dbias) {
  const index_t o = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  if (o >= n) return;
  float s = 0.0f;
  for (index_t c = 0; c < chunks; ++c) s += partials[c * n + o];
  store_float(dbias + o, load_float(dbias + o) + s);
}

}  // namespace detail

/// y = epi(layout(acc)); with GELU, state.pre keeps layout(acc) + b. acc may be y itself under
/// the identity layout (bias added in place) or state.pre (GELU applied from it).
template <class T, class Epi>
void epilogue_forward(const Epi& epi, const MatrixView<const T, Device>& acc, RowLayout layout,
                      const MatrixView<T, Device>& y, EpilogueState<T>& state) {
  const index_t rows = y.rows(), n = y.cols();
  state.tokens = rows;
  state.width = n;
  constexpr bool gelu = epilogue::has_gelu<Epi>, bias = epilogue::has_bias<Epi>;
  const bool in_place = acc.data() == y.data() && acc.ld() == y.ld();
  if (layout.is_identity() && in_place && !gelu && !bias) return;
  if (rows == 0 || n == 0) return;
  T* pre = nullptr;
  if constexpr (gelu) pre = state.pre.reserve(rows * n);
  const T* b = nullptr;
  if constexpr (bias) b = epi.bias.data();
  const auto vs = detail::vec_shape<T>(layout, n, {{acc.data(), acc.ld()}, {y.data(), y.ld()}, {pre, n}, {b, 0}});
  if (vs.S > 0) {
    const auto g = detail::vec_grid(vs.L, detail::Vec16<T>::size, rows, runtime().multiprocessors());
    const dim3 grid(static_cast<unsigned>((g.groups + detail::epilogue_threads - 1) / detail::epilogue_threads),
                    static_cast<unsigned>(g.chunks));
    detail::dispatch_vec(vs, [&](auto S, auto out_grouped) {
      detail::epilogue_forward_vec_kernel<T, decltype(S)::value, decltype(out_grouped)::value, gelu, bias>
          <<<grid, detail::epilogue_threads, 0, runtime().stream()>>>(acc.data(), acc.ld(), y.data(), y.ld(), pre, b, rows, g);
    });
    BONSAI_CUDA_CHECK_LAUNCH("epilogue_forward_vec_kernel");
    return;
  }
  const detail::TileGrid g(layout, n, rows, runtime().multiprocessors());
  const dim3 grid(static_cast<unsigned>(g.tiles), static_cast<unsigned>(g.chunks));
  detail::epilogue_forward_kernel<T, gelu, bias>
      <<<grid, detail::epilogue_threads, g.shared_bytes(), runtime().stream()>>>(
          acc.data(), acc.ld(), y.data(), y.ld(), pre, b, rows, g);
  BONSAI_CUDA_CHECK_LAUNCH("epilogue_forward_kernel");
}

/// Whether cuBLASLt's fused bias epilogue may read `bias`: 16-byte aligned.
inline bool fusable_bias(const void* bias) { return reinterpret_cast<std::uintptr_t>(bias) % 16 == 0; }

/// Runs the GEMM that produces the output and the epilogue, inside cuBLASLt when it has an
/// algorithm for it and the bias is 16-byte aligned (cuBLASLt's requirement; a bias inside a
/// parameter arena need not be), else as a plain GEMM and the epilogue kernel.
/// `gemm(dst, gemm_epilogue) -> bool` writes acc into dst; a batched GEMM whose batch i writes
/// columns [i w, (i+1) w) passes w as `batch_columns`.
template <class T, class Epi, class Gemm>
void gemm_with_epilogue(const Epi& epi, const MatrixView<T, Device>& y, EpilogueState<T>& state,
                        index_t batch_columns, Gemm&& gemm) {
  const index_t rows = y.rows(), n = y.cols();
  state.tokens = rows;
  state.width = n;
  if constexpr (epilogue::has_gelu<Epi>) {
    const auto pre = state.pre.matrix(rows, n);
    GemmEpilogue e{GemmEpilogue::Kind::bias_gelu, epi.bias.data(), batch_columns, pre.data(), n, batch_columns};
    if (fusable_bias(epi.bias.data()) && gemm(y, e)) return;
    gemm(pre, GemmEpilogue{});
    epilogue_forward(epi, MatrixView<const T, Device>(pre), RowLayout::identity(), y, state);
  } else if constexpr (epilogue::has_bias<Epi>) {
    GemmEpilogue e{GemmEpilogue::Kind::bias, epi.bias.data(), batch_columns};
    if (fusable_bias(epi.bias.data()) && gemm(y, e)) return;
    gemm(y, GemmEpilogue{});
    epilogue_forward(epi, MatrixView<const T, Device>(y), RowLayout::identity(), y, state);
  } else {
    gemm(y, GemmEpilogue{});
  }
}

/// Backward of the epilogue: returns d(acc) in acc's layout — dy itself when there is no GELU
/// and no transpose, else `target` (left unwritten when empty: dbias only). epi.dbias += sums.
template <class T, class Epi>
MatrixView<const T, Device> epilogue_backward(const Epi& epi, const MatrixView<const T, Device>& dy,
                                              RowLayout layout, const MatrixView<T, Device>& target,
                                              EpilogueState<T>& state) {
  const index_t rows = dy.rows(), n = dy.cols();
  constexpr bool gelu = epilogue::has_gelu<Epi>;
  bool want_dbias = false;
  if constexpr (epilogue::has_bias<Epi>) want_dbias = !epi.dbias.empty();
  const bool passthrough = !gelu && layout.is_identity();
  if (passthrough && !want_dbias) return dy;
  const bool write = !passthrough && !target.empty();
  if (!write && !want_dbias) return passthrough ? dy : MatrixView<const T, Device>(target);
  if (gelu)
    BONSAI_CHECK(state.tokens == rows && state.width == n, "backward: the epilogue saved ",
                 shape{state.tokens, state.width}, " in forward but dy has shape ", shape{rows, n});
  if (rows > 0 && n > 0) {
    const T* pre = gelu ? state.pre.data() : nullptr;
    T* dx = write ? target.data() : nullptr;
    const index_t ld_dx = write ? target.ld() : 0;
    const int sms = runtime().multiprocessors();
    float* partials = nullptr;
    index_t chunks = 0;
    const auto vs = detail::vec_shape<T>(layout, n, {{dy.data(), dy.ld()}, {pre, n}, {dx, ld_dx}});
    if (vs.S > 0) {
      const auto g = detail::vec_grid(vs.L, detail::Vec16<T>::size, rows, sms);
      chunks = g.chunks;
      partials = want_dbias ? state.partials.reserve(chunks * n) : nullptr;
      const dim3 grid(static_cast<unsigned>((g.groups + detail::epilogue_threads - 1) / detail::epilogue_threads),
                      static_cast<unsigned>(g.chunks));
      detail::dispatch_vec(vs, [&](auto S, auto out_grouped) {
        auto launch = [&](auto kernel) {
          kernel<<<grid, detail::epilogue_threads, 0, runtime().stream()>>>(dy.data(), dy.ld(), pre, dx, ld_dx,
                                                                           partials, rows, g);
        };
        if (want_dbias) launch(detail::epilogue_backward_vec_kernel<T, decltype(S)::value, decltype(out_grouped)::value, gelu, true>);
        else launch(detail::epilogue_backward_vec_kernel<T, decltype(S)::value, decltype(out_grouped)::value, gelu, false>);
      });
      BONSAI_CUDA_CHECK_LAUNCH("epilogue_backward_vec_kernel");
    } else {
      const detail::TileGrid g(layout, n, rows, sms);
      chunks = g.chunks;
      partials = want_dbias ? state.partials.reserve(chunks * n) : nullptr;
      const dim3 grid(static_cast<unsigned>(g.tiles), static_cast<unsigned>(g.chunks));
      auto launch = [&](auto kernel) {
        kernel<<<grid, detail::epilogue_threads, g.shared_bytes(), runtime().stream()>>>(
            dy.data(), dy.ld(), pre, dx, ld_dx, partials, rows, g);
        BONSAI_CUDA_CHECK_LAUNCH("epilogue_backward_kernel");
      };
      if (want_dbias) launch(detail::epilogue_backward_kernel<T, gelu, true>);
      else launch(detail::epilogue_backward_kernel<T, gelu, false>);
    }
    if constexpr (epilogue::has_bias<Epi>) {
      if (want_dbias) {
        detail::reduce_partials_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, runtime().stream()>>>(
            partials, chunks, n, epi.dbias.data());
        BONSAI_CUDA_CHECK_LAUNCH("reduce_partials_kernel");
      }
    }
  }
  if (passthrough) return dy;
  return target;
}

}  // namespace bonsai::cuda
