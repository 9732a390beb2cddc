// bonsai/backend/cuda/cross_entropy.cuh — fused softmax cross-entropy over logits (N, V) on the
// GPU, the same equations as the CPU reference (backend/cpu/cross_entropy.hpp):
//   loss_i = logsumexp(z_i) - z_i[y_i],   dz_i = scale * (softmax(z_i) - onehot(y_i)).
// One block per row finds the running max and sum of exp in one read (online softmax), then
// overwrites the logits with their gradient in a second; the row losses go to a float workspace
// and one block sums them in double in a fixed order, so the result does not depend on scheduling.
#pragma once

#include <cmath>
#include <cstdint>

#include "../../core/tensor.hpp"
#include "epilogue.cuh"
#include "memory.cuh"
#include "runtime.cuh"

namespace bonsai::cuda {

namespace detail {

/// What the host reads back after a cross-entropy call.
struct CrossEntropyResult {
  double loss;                 // the summed loss over rows with a target >= 0
  unsigned long long bad_row;  // the first row whose target is outside [-1, V); all ones if none
};

inline constexpr int cross_entropy_threads = 512;
inline constexpr int cross_entropy_sum_threads = 256;

/// A running (max, sum of exp(x - max)) pair of the online softmax.
struct CrossEntropyMaxSum {
  float m, s;
};

__device__ __forceinline__ void ce_online_add(CrossEntropyMaxSum& a, float x) {
  if (x > a.m) {
    a.s = a.s * expf(a.m - x) + 1.0f;  // expf(-inf) = 0 for the first element
    a.m = x;
  } else if (x != -INFINITY) {
    a.s += expf(x - a.m);
  }
}

__device__ __forceinline__ CrossEntropyMaxSum ce_combine(CrossEntropyMaxSum a, CrossEntropyMaxSum b) {
  const float m = fmaxf(a.m, b.m);
  const float sa = a.m == -INFINITY ? 0.0f : a.s * expf(a.m - m);
  const float sb = b.m == -INFINITY ? 0.0f : b.s * expf(b.m - m);
  return {m, sa + sb};
}

/// Calls f(j, x[j]) for j in [0, n), the block's threads striding over the row: a scalar head up
/// to the first 16-byte boundary, 16-byte vectors, then a scalar tail.
template <class T, class F>
__device__ __forceinline__ void ce_row_read(const T* x, index_t n, F&& f) {
  constexpr int V = Vec16<T>::size;
  const auto addr = reinterpret_cast<std::uintptr_t>(x);
  index_t head = static_cast<index_t>(((16 - (addr & 15)) & 15) / sizeof(T));
  if (head > n) head = n;
  for (index_t j = threadIdx.x; j < head; j += blockDim.x) f(j, static_cast<float>(x[j]));
  const index_t nv = (n - head) / V;
  const Vec16<T>* xv = reinterpret_cast<const Vec16<T>*>(x + head);
  for (index_t q = threadIdx.x; q < nv; q += blockDim.x) {
    const Vec16<T> w = xv[q];
#pragma unroll
    for (int e = 0; e < V; ++e) f(head + q * V + e, static_cast<float>(w.v[e]));
  }
  for (index_t j = head + nv * V + threadIdx.x; j < n; j += blockDim.x) f(j, static_cast<float>(x[j]));
}

/// x[j] = f(j, x[j]) for j in [0, n), with the access pattern of ce_row_read.
template <class T, class F>
__device__ __forceinline__ void ce_row_transform(T* x, index_t n, F&& f) {
  constexpr int V = Vec16<T>::size;
  const auto addr = reinterpret_cast<std::uintptr_t>(x);
  index_t head = static_cast<index_t>(((16 - (addr & 15)) & 15) / sizeof(T));
  if (head > n) head = n;
  for (index_t j = threadIdx.x; j < head; j += blockDim.x) x[j] = static_cast<T>(f(j, static_cast<float>(x[j])));
  const index_t nv = (n - head) / V;
  Vec16<T>* xv = reinterpret_cast<Vec16<T>*>(x + head);
  for (index_t q = threadIdx.x; q < nv; q += blockDim.x) {
    Vec16<T> w = xv[q];
#pragma unroll
    for (int e = 0; e < V; ++e) w.v[e] = static_cast<T>(f(head + q * V + e, static_cast<float>(w.v[e])));
    xv[q] = w;
  }
  for (index_t j = head + nv * V + threadIdx.x; j < n; j += blockDim.x)
    x[j] = static_cast<T>(f(j, static_cast<float>(x[j])));
}

/// One block per row r of logits (N, V) with leading dimension ld: row_loss[r] = the row's loss
/// (0 when ignored) and, when grad, the row replaced by scale * (softmax - onehot) (zero when
/// ignored). A target outside [-1, V) leaves the row as it is and records r in *bad_row.
template <class T, int Threads>
__global__ void __launch_bounds__(Threads)
    cross_entropy_kernel(T* logits, index_t ld, index_t v, const std::int32_t* targets, bool grad, float scale,
                         float* row_loss, unsigned long long* bad_row) {
  constexpr int warps = Threads / 32;
  const index_t r = blockIdx.x;
  T* z = logits + r * ld;
  const std::int32_t y = targets[r];
  if (y < -1 || y >= v) {  // the whole block takes the same branch
    if (threadIdx.x == 0) {
      atomicMin(bad_row, static_cast<unsigned long long>(r));
      row_loss[r] = 0.0f;
    }
    return;
  }
  if (y < 0) {
    if (threadIdx.x == 0) row_loss[r] = 0.0f;
    if (grad) ce_row_transform(z, v, [](index_t, float) { return 0.0f; });
    return;
  }
  // Read the target's logit before the barrier below: pass 2 overwrites it.
  const float zy = threadIdx.x == 0 ? static_cast<float>(z[y]) : 0.0f;

  // Pass 1: max and sum of exp, per thread, per warp, then per block (fixed order).
  CrossEntropyMaxSum a{-INFINITY, 0.0f};
  ce_row_read(z, v, [&](index_t, float x) { ce_online_add(a, x); });
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const CrossEntropyMaxSum b{__shfl_down_sync(0xffffffffu, a.m, off), __shfl_down_sync(0xffffffffu, a.s, off)};
    a = ce_combine(a, b);
  }
  __shared__ CrossEntropyMaxSum warp_part[warps];
  __shared__ CrossEntropyMaxSum total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_part[warp] = a;
  __syncthreads();
  if (threadIdx.x == 0) {
    CrossEntropyMaxSum t = warp_part[0];
    for (int w = 1; w < warps; ++w) t = ce_combine(t, warp_part[w]);
    total = t;
    row_loss[r] = logf(t.s) + t.m - zy;
  }
  __syncthreads();
  if (!grad) return;

  // Pass 2: dz = exp(z - m) * scale / s, minus scale at the target.
  const float m = total.m, k = scale / total.s;
  ce_row_transform(z, v, [&](index_t j, float x) {
    const float g = expf(x - m) * k;
    return j == y ? g - scale : g;
  });
}

/// *out = sum of row_loss[0, n), in double: thread t sums rows t, t + Threads, ... in order, each
/// warp folds its lanes with a fixed shuffle tree and thread 0 adds the warps in order.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    cross_entropy_sum_kernel(const float* row_loss, index_t n, CrossEntropyResult* out) {
  double acc = 0.0;
  for (index_t i = threadIdx.x; i < n; i += Threads) acc += static_cast<double>(row_loss[i]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
  __shared__ double warp_sum[Threads / 32];
  if (threadIdx.x % 32 == 0) warp_sum[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < Threads / 32; ++w) total += warp_sum[w];
    out->loss = total;
  }
}

}  // namespace detail

/// Scratch of softmax_cross_entropy, allocated on first use and reused.
struct CrossEntropyState {
  Workspace<float, Device> row_loss;                      // (N) loss of each row
  Workspace<detail::CrossEntropyResult, Device> result;  // (1) summed loss and first bad row
};

/// Returns sum_i (logsumexp(z_i) - z_i[y_i]) over the rows of logits (N, V) with a target >= 0
/// (a target of -1 is ignored: no loss, zero gradient). When `grad` is true the logits are
/// replaced by scale * (softmax(z_i) - onehot(y_i)). targets (N) is device memory. Waits for the
/// result (it synchronises the stream); a target outside [-1, V) throws bonsai::Error, naming
/// the first such row (its row is left unchanged, the others are processed).
template <class T>
double softmax_cross_entropy(const MatrixView<T, Device>& logits, const std::int32_t* targets, bool grad,
                             float scale, CrossEntropyState& state) {
  const index_t n = logits.rows(), v = logits.cols();
  if (n == 0) return 0.0;
  BONSAI_CHECK(targets != nullptr, "cross entropy: no targets for logits of shape ", shape{n, v});
  BONSAI_CHECK(logits.stride(1) == 1 && logits.ld() >= v, "cross entropy: logits of shape ", shape{n, v},
               " must have unit column stride and a leading dimension >= ", v);
  BONSAI_CHECK(n <= index_t(0x7fffffff), "cross entropy: ", n, " rows exceed the grid limit");
  const cudaStream_t stream = runtime().stream();
  float* row_loss = state.row_loss.reserve(n);
  detail::CrossEntropyResult* result = state.result.reserve(1);
  BONSAI_CUDA_CHECK(cudaMemsetAsync(&result->bad_row, 0xFF, sizeof(result->bad_row), stream));
  detail::cross_entropy_kernel<T, detail::cross_entropy_threads>
      <<<static_cast<unsigned>(n), detail::cross_entropy_threads, 0, stream>>>(
          logits.data(), logits.ld(), v, targets, grad, scale, row_loss, &result->bad_row);
  BONSAI_CUDA_CHECK_LAUNCH("cross_entropy_kernel");
  detail::cross_entropy_sum_kernel<detail::cross_entropy_sum_threads>
      <<<1, detail::cross_entropy_sum_threads, 0, stream>>>(row_loss, n, result);
  BONSAI_CUDA_CHECK_LAUNCH("cross_entropy_sum_kernel");
  detail::CrossEntropyResult host{};
  BONSAI_CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof(host), cudaMemcpyDeviceToHost, stream));
  BONSAI_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (host.bad_row != ~0ull) {
    const index_t row = static_cast<index_t>(host.bad_row);
    std::int32_t y = 0;
    BONSAI_CUDA_CHECK(cudaMemcpy(&y, targets + row, sizeof(y), cudaMemcpyDeviceToHost));
    ::bonsai::detail::fail("cross entropy: target ", y, " at row ", row, " is outside the vocabulary [0, ", v,
                           ")");
  }
  return host.loss;
}

}  // namespace bonsai::cuda
