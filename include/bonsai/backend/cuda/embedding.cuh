// bonsai/backend/cuda/embedding.cuh — token (+ learned position) embedding on the GPU, the same
// equations as the CPU reference (backend/cpu/embedding.hpp):
//   y[b*T + t] = wte[tok[b, t]] (+ wpe[pos0 + t]),     y (B*T, C), wte (V, C), wpe (T_max, C)
// Backward: dwte[v] += sum of the dy rows whose token is v, dwpe[t] += sum over b of dy[b*T + t].
// Both are deterministic without float atomics: the keys (token << 32 | row) are bitonic-sorted
// (unique keys, so one order), one block sums each token's run of rows in a fixed order and owns
// its dwte row; dwpe is one block per position summing the batch in order.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>

#include "../../core/tensor.hpp"
#include "epilogue.cuh"
#include "memory.cuh"
#include "runtime.cuh"

namespace bonsai::cuda {

/// Scratch of embedding_forward / embedding_backward, allocated on first use and reused.
struct EmbeddingState {
  Workspace<unsigned long long, Device> bad;   // (1) first position with an out-of-range token
  Workspace<unsigned long long, Device> keys;  // (B*T rounded up to a power of 2) token << 32 | row
};

namespace detail {

inline constexpr int embedding_threads = 256;
inline constexpr int embedding_grad_warps = 8;  // rows summed in parallel per block

/// y[i] = wte[tok[i]] (+ wpe[pos0 + i % seq]) over n = B*T rows of c columns; element (or
/// 16-byte vector when Vec) e of the flattened (n, c) output per thread. A token outside
/// [0, vocab) writes nothing and records its position in *bad.
template <class T, bool Vec, bool HasPos>
__global__ void __launch_bounds__(embedding_threads)
    embedding_forward_kernel(const std::int32_t* tok, index_t n, index_t seq, index_t pos0, index_t vocab,
                             const T* wte, index_t ld_wte, const T* wpe, index_t ld_wpe, T* y, index_t ld_y,
                             index_t c, unsigned long long* bad) {
  constexpr int V = Vec ? Vec16<T>::size : 1;
  const index_t per_row = c / V;  // c % V == 0 when Vec
  const index_t total = n * per_row;
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < total; e += index_t(gridDim.x) * blockDim.x) {
    const index_t i = e / per_row, j = (e % per_row) * V;
    const std::int32_t t = tok[i];
    if (t < 0 || t >= vocab) {
      atomicMin(bad, static_cast<unsigned long long>(i));
      continue;
    }
    const T* src = wte + t * ld_wte + j;
    T* dst = y + i * ld_y + j;
    if constexpr (Vec) {
      Vec16<T> w = *reinterpret_cast<const Vec16<T>*>(src);
      if constexpr (HasPos) {
        const Vec16<T> p = *reinterpret_cast<const Vec16<T>*>(wpe + (pos0 + i % seq) * ld_wpe + j);
#pragma unroll
        for (int k = 0; k < V; ++k)
          w.v[k] = static_cast<T>(static_cast<float>(w.v[k]) + static_cast<float>(p.v[k]));
      }
      *reinterpret_cast<Vec16<T>*>(dst) = w;
    } else {
      if constexpr (HasPos)
        *dst = static_cast<T>(static_cast<float>(*src) + static_cast<float>(wpe[(pos0 + i % seq) * ld_wpe + j]));
      else
        *dst = *src;
    }
  }
}

/// *bad = min(*bad, first i with tok[i] outside [0, vocab)).
static __global__ void __launch_bounds__(embedding_threads)
    embedding_check_kernel(const std::int32_t* tok, index_t n, index_t vocab, unsigned long long* bad) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    if (tok[i] < 0 || tok[i] >= vocab) atomicMin(bad, static_cast<unsigned long long>(i));
}

/// keys[i] = tok[i] << 32 | i for i < n (tok[i] replaced by vocab when out of range, so it sorts
/// after every valid id and is skipped); all ones for the padding i in [n, n2).
static __global__ void __launch_bounds__(embedding_threads)
    embedding_keys_kernel(const std::int32_t* tok, index_t n, index_t n2, index_t vocab, unsigned long long* keys) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n2; i += index_t(gridDim.x) * blockDim.x) {
    if (i < n) {
      const std::int32_t t = tok[i];
      const unsigned long long key = (t >= 0 && t < vocab) ? static_cast<unsigned long long>(t)
                                                           : static_cast<unsigned long long>(vocab);
      keys[i] = key << 32 | static_cast<unsigned long long>(i);
    } else {
      keys[i] = ~0ull;
    }
  }
}

inline constexpr int bitonic_tile = 2048;  // keys sorted in shared memory by one block

/// One compare-exchange step (k, j) of the bitonic sort of a[0, n2) (n2 a power of 2), in global
/// memory: the pair (i, i + j) with bit j of i clear is put in ascending order when bit k of i is
/// clear, descending otherwise. Thread t handles pair t of the n2 / 2.
static __global__ void __launch_bounds__(embedding_threads)
    bitonic_step_kernel(unsigned long long* a, index_t pairs, index_t k, index_t j) {
  for (index_t t = blockIdx.x * index_t(blockDim.x) + threadIdx.x; t < pairs; t += index_t(gridDim.x) * blockDim.x) {
    const index_t i = 2 * t - (t & (j - 1)), l = i + j;
    const bool ascending = (i & k) == 0;
    const unsigned long long x = a[i], y = a[l];
    if ((x > y) == ascending) {
      a[i] = y;
      a[l] = x;
    }
  }
}

/// The steps of the bitonic sort that stay inside one tile of `tile` keys (a power of 2, at most
/// bitonic_tile), in shared memory: every stage k = 2 ... tile when `full`, else the steps
/// j = tile / 2 ... 1 of stage k. One block of tile / 2 threads per tile.
static __global__ void __launch_bounds__(bitonic_tile / 2)
    bitonic_tile_kernel(unsigned long long* a, index_t tile, bool full, index_t k_merge) {
  __shared__ unsigned long long s[bitonic_tile];
  const index_t base = blockIdx.x * tile;
  for (index_t e = threadIdx.x; e < tile; e += blockDim.x) s[e] = a[base + e];
  __syncthreads();
  auto step = [&](index_t k, index_t j) {
    for (index_t t = threadIdx.x; t < tile / 2; t += blockDim.x) {
      const index_t i = 2 * t - (t & (j - 1)), l = i + j;
      const bool ascending = ((base + i) & k) == 0;
      const unsigned long long x = s[i], y = s[l];
      if ((x > y) == ascending) {
        s[i] = y;
        s[l] = x;
      }
    }
    __syncthreads();
  };
  if (full) {
    for (index_t k = 2; k <= tile; k <<= 1)
      for (index_t j = k >> 1; j > 0; j >>= 1) step(k, j);
  } else {
    for (index_t j = tile >> 1; j > 0; j >>= 1) step(k_merge, j);
  }
  for (index_t e = threadIdx.x; e < tile; e += blockDim.x) a[base + e] = s[e];
}

/// The block's tile of columns [c0, c0 + 32 V): out[c0 ...] += sum over k = 0, 1, ... while
/// row_of(k) >= 0 of dy[row_of(k), c0 ...]. Warp w sums k = w, w + Warps, ... in order, then the
/// warps' partials are added in warp order: the same result on every run.
template <class T, bool Vec, int Warps, class RowOf>
__device__ __forceinline__ void embedding_sum_rows(RowOf row_of, const T* dy, index_t ld_dy, index_t c, T* out) {
  constexpr int V = Vec16<T>::size;  // columns per lane
  constexpr int tile = 32 * V;
  __shared__ float part[Warps][tile];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const index_t c0 = blockIdx.y * index_t(tile);
  // Local column of (lane, e): lane V + e for vectors, lane + 32 e for scalars (both coalesced).
  auto local = [&](int e) { return Vec ? lane * V + e : lane + 32 * e; };
  float acc[V];
#pragma unroll
  for (int e = 0; e < V; ++e) acc[e] = 0.0f;
  for (index_t k = warp;; k += Warps) {
    const index_t r = row_of(k);
    if (r < 0) break;
    const T* g = dy + r * ld_dy + c0;
    if constexpr (Vec) {
      if (c0 + lane * V < c) {  // c % V == 0: the whole vector is in range
        const Vec16<T> w = *reinterpret_cast<const Vec16<T>*>(g + lane * V);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] += static_cast<float>(w.v[e]);
      }
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (c0 + local(e) < c) acc[e] += static_cast<float>(g[local(e)]);
    }
  }
#pragma unroll
  for (int e = 0; e < V; ++e) part[warp][local(e)] = acc[e];
  __syncthreads();
  for (int q = threadIdx.x; q < tile; q += blockDim.x) {
    const index_t j = c0 + q;
    if (j >= c) break;
    float s = static_cast<float>(out[j]);
#pragma unroll
    for (int w = 0; w < Warps; ++w) s += part[w][q];
    out[j] = static_cast<T>(s);
  }
}

/// One block per (sorted position p, column tile): when p starts the run of a token v < vocab in
/// the sorted keys, dwte[v] += the dy rows of that run (rows in increasing order); other blocks
/// exit at once.
template <class T, bool Vec, int Warps>
__global__ void __launch_bounds__(Warps * 32)
    embedding_token_grad_kernel(const unsigned long long* keys, index_t n, index_t vocab, const T* dy, index_t ld_dy,
                                T* dwte, index_t ld_dwte, index_t c) {
  const index_t p0 = blockIdx.x;
  const unsigned long long token = keys[p0] >> 32;
  if (token >= static_cast<unsigned long long>(vocab) || (p0 > 0 && (keys[p0 - 1] >> 32) == token))
    return;  // the same for the whole block
  embedding_sum_rows<T, Vec, Warps>(
      [&](index_t k) -> index_t {
        const index_t p = p0 + k;
        if (p >= n) return -1;
        const unsigned long long key = keys[p];
        return (key >> 32) == token ? static_cast<index_t>(key & 0xffffffffull) : index_t(-1);
      },
      dy, ld_dy, c, dwte + static_cast<index_t>(token) * ld_dwte);
}

/// One block per (position t, column tile): dwpe[t] += sum over b in order of dy[b*seq + t].
template <class T, bool Vec, int Warps>
__global__ void __launch_bounds__(Warps * 32)
    embedding_position_grad_kernel(index_t batch, index_t seq, const T* dy, index_t ld_dy, T* dwpe, index_t ld_dwpe,
                                   index_t c) {
  const index_t t = blockIdx.x;
  embedding_sum_rows<T, Vec, Warps>([&](index_t b) { return b < batch ? b * seq + t : index_t(-1); }, dy, ld_dy, c,
                               dwpe + t * ld_dwpe);
}

/// Whether every (pointer, leading dimension) pair allows 16-byte vectors over c columns.
template <class T>
bool embedding_vectorizable(index_t c, std::initializer_list<std::pair<const void*, index_t>> operands) {
  if (c % Vec16<T>::size != 0) return false;
  for (auto [p, ld] : operands)
    if (p && (reinterpret_cast<std::uintptr_t>(p) % 16 != 0 || (ld * index_t(sizeof(T))) % 16 != 0)) return false;
  return true;
}

inline unsigned embedding_grid(index_t work) {
  const index_t cap = index_t(runtime().multiprocessors()) * 32;
  const index_t blocks = (work + embedding_threads - 1) / embedding_threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks < cap ? blocks : cap);
}

}  // namespace detail

/// y = wte[tok] + wpe[pos0 + t]; tok (B*T) device token ids with T = seq; wpe may be empty
/// (rotary models). With check_ids it checks the token ids on the device and waits for that
/// check (it synchronises the stream): an id outside [0, V) throws bonsai::Error naming the
/// first one. Without, the caller has checked them (an id outside [0, V) writes nothing then),
/// and the call does not synchronise.
template <class T>
void embedding_forward(const std::int32_t* tok, index_t batch, index_t seq, index_t pos0,
                       const MatrixView<const T, Device>& wte, const MatrixView<const T, Device>& wpe,
                       const MatrixView<T, Device>& y, EmbeddingState& state, bool check_ids = true) {
  const index_t n = batch * seq, c = wte.cols();
  BONSAI_CHECK(y.rows() == n && y.cols() == c, "embedding_forward: y has shape ", shape{y.rows(), y.cols()},
               " but ", batch, " x ", seq, " tokens of width ", c, " need ", shape{n, c});
  BONSAI_CHECK(wpe.empty() || (wpe.cols() == c && pos0 >= 0 && pos0 + seq <= wpe.rows()),
               "embedding_forward: positions [", pos0, ", ", pos0 + seq, ") exceed the position table of shape ",
               shape{wpe.rows(), wpe.cols()});
  BONSAI_CHECK(wte.stride(1) == 1 && y.stride(1) == 1 && (wpe.empty() || wpe.stride(1) == 1),
               "embedding_forward: wte, wpe and y must have unit column stride");
  if (n == 0) return;
  BONSAI_CHECK(tok != nullptr, "embedding_forward: no token ids for ", batch, " x ", seq, " tokens");
  const cudaStream_t stream = runtime().stream();
  unsigned long long* bad = state.bad.reserve(1);
  BONSAI_CUDA_CHECK(cudaMemsetAsync(bad, 0xFF, sizeof(*bad), stream));
  if (c > 0) {
    const bool has_pos = !wpe.empty();
    const T* p = has_pos ? wpe.data() : nullptr;
    const index_t ld_p = has_pos ? wpe.ld() : 0;
    const bool vec = detail::embedding_vectorizable<T>(c, {{wte.data(), wte.ld()}, {p, ld_p}, {y.data(), y.ld()}});
    const index_t work = vec ? n * (c / detail::Vec16<T>::size) : n * c;
    const unsigned blocks = detail::embedding_grid(work);
    auto launch = [&](auto kernel) {
      kernel<<<blocks, detail::embedding_threads, 0, stream>>>(tok, n, seq, pos0, wte.rows(), wte.data(), wte.ld(), p,
                                                              ld_p, y.data(), y.ld(), c, bad);
    };
    if (vec) {
      if (has_pos) launch(detail::embedding_forward_kernel<T, true, true>);
      else launch(detail::embedding_forward_kernel<T, true, false>);
    } else {
      if (has_pos) launch(detail::embedding_forward_kernel<T, false, true>);
      else launch(detail::embedding_forward_kernel<T, false, false>);
    }
    BONSAI_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
  } else {  // no columns to write: only check the ids
    detail::embedding_check_kernel<<<detail::embedding_grid(n), detail::embedding_threads, 0, stream>>>(tok, n, wte.rows(),
                                                                                                bad);
    BONSAI_CUDA_CHECK_LAUNCH("embedding_check_kernel");
  }
  if (!check_ids) return;
  unsigned long long first = 0;
  BONSAI_CUDA_CHECK(cudaMemcpyAsync(&first, bad, sizeof(first), cudaMemcpyDeviceToHost, stream));
  BONSAI_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (first != ~0ull) {
    const index_t i = static_cast<index_t>(first);
    std::int32_t t = 0;
    BONSAI_CUDA_CHECK(cudaMemcpy(&t, tok + i, sizeof(t), cudaMemcpyDeviceToHost));
    ::bonsai::detail::fail("embedding: token id ", t, " at position ", i, " is outside the vocabulary [0, ",
                           wte.rows(), ")");
  }
}

/// dwte[tok] += dy rows; dwpe[t] += dy rows (when dwpe is not empty), with dy (B*T, C),
/// dwte (V, C), dwpe (>= T, C). Deterministic; does not synchronise. Ids outside [0, V) (which
/// embedding_forward rejects) are skipped.
template <class T>
void embedding_backward(const std::int32_t* tok, index_t batch, index_t seq, const MatrixView<const T, Device>& dy,
                        const MatrixView<T, Device>& dwte, const MatrixView<T, Device>& dwpe, EmbeddingState& state) {
  const index_t n = batch * seq, c = dy.cols(), vocab = dwte.rows();
  BONSAI_CHECK(dy.rows() == n && dwte.cols() == c, "embedding_backward: dy has shape ", shape{dy.rows(), dy.cols()},
               " but ", batch, " x ", seq, " tokens and dwte of shape ", shape{dwte.rows(), dwte.cols()}, " need ",
               shape{n, dwte.cols()});
  BONSAI_CHECK(dwpe.empty() || (dwpe.cols() == c && seq <= dwpe.rows()), "embedding_backward: dwpe has shape ",
               shape{dwpe.rows(), dwpe.cols()}, " but dy of shape ", shape{dy.rows(), dy.cols()}, " needs ",
               shape{seq, c}, " or more rows");
  BONSAI_CHECK(dy.stride(1) == 1 && dwte.stride(1) == 1 && (dwpe.empty() || dwpe.stride(1) == 1),
               "embedding_backward: dy, dwte and dwpe must have unit column stride");
  if (n == 0 || c == 0) return;
  BONSAI_CHECK(tok != nullptr, "embedding_backward: no token ids for ", batch, " x ", seq, " tokens");
  BONSAI_CHECK(n <= index_t(0x7fffffff) && vocab < index_t(0x7fffffff),
               "embedding_backward: ", n, " tokens or a vocabulary of ", vocab, " exceed 31-bit indices");
  const cudaStream_t stream = runtime().stream();
  constexpr int warps = detail::embedding_grad_warps, threads = warps * 32;
  constexpr index_t tile = 32 * detail::Vec16<T>::size;
  const unsigned tiles = static_cast<unsigned>((c + tile - 1) / tile);

  if (vocab > 0) {
    // Sort the keys token << 32 | row: each token's rows become one run, in increasing order.
    index_t n2 = 1;
    while (n2 < n) n2 <<= 1;
    unsigned long long* keys = state.keys.reserve(n2);
    detail::embedding_keys_kernel<<<detail::embedding_grid(n2), detail::embedding_threads, 0, stream>>>(tok, n, n2,
                                                                                                       vocab, keys);
    BONSAI_CUDA_CHECK_LAUNCH("embedding_keys_kernel");
    const index_t tile = n2 < detail::bitonic_tile ? n2 : index_t(detail::bitonic_tile);
    const unsigned tile_blocks = static_cast<unsigned>(n2 / tile);
    const unsigned tile_threads = static_cast<unsigned>(tile > 1 ? tile / 2 : 1);
    detail::bitonic_tile_kernel<<<tile_blocks, tile_threads, 0, stream>>>(keys, tile, true, 0);
    BONSAI_CUDA_CHECK_LAUNCH("bitonic_tile_kernel");
    for (index_t k = 2 * tile; k <= n2; k <<= 1) {
      for (index_t j = k >> 1; j >= tile; j >>= 1) {
        detail::bitonic_step_kernel<<<detail::embedding_grid(n2 / 2), detail::embedding_threads, 0, stream>>>(
            keys, n2 / 2, k, j);
        BONSAI_CUDA_CHECK_LAUNCH("bitonic_step_kernel");
      }
      detail::bitonic_tile_kernel<<<tile_blocks, tile_threads, 0, stream>>>(keys, tile, false, k);
      BONSAI_CUDA_CHECK_LAUNCH("bitonic_tile_kernel");
    }
    const dim3 grid(static_cast<unsigned>(n), tiles);
    auto launch = [&](auto kernel) {
      kernel<<<grid, threads, 0, stream>>>(keys, n, vocab, dy.data(), dy.ld(), dwte.data(), dwte.ld(), c);
    };
    if (detail::embedding_vectorizable<T>(c, {{dy.data(), dy.ld()}}))
      launch(detail::embedding_token_grad_kernel<T, true, warps>);
    else
      launch(detail::embedding_token_grad_kernel<T, false, warps>);
    BONSAI_CUDA_CHECK_LAUNCH("embedding_token_grad_kernel");
  }

  if (!dwpe.empty()) {
    const dim3 grid(static_cast<unsigned>(seq), tiles);
    auto launch = [&](auto kernel) {
      kernel<<<grid, threads, 0, stream>>>(batch, seq, dy.data(), dy.ld(), dwpe.data(), dwpe.ld(), c);
    };
    if (detail::embedding_vectorizable<T>(c, {{dy.data(), dy.ld()}}))
      launch(detail::embedding_position_grad_kernel<T, true, warps>);
    else
      launch(detail::embedding_position_grad_kernel<T, false, warps>);
    BONSAI_CUDA_CHECK_LAUNCH("embedding_position_grad_kernel");
  }
}

}  // namespace bonsai::cuda
