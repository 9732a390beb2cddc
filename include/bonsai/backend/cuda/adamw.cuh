// bonsai/backend/cuda/adamw.cuh — the optimizer step on the GPU: the global gradient norm
// ||g|| = sqrt(sum g_i^2) (summed in double, deterministic) and fused AdamW over fp32 master
// weights, m <- b1 m + (1 - b1) s g, v <- b2 v + (1 - b2) (s g)^2,
// p <- p (1 - lr wd) - lr m^ / (sqrt(v^) + eps) with m^ = m / (1 - b1^t), v^ = v / (1 - b2^t),
// per AdamWRange of an arena. AdamW<T, Device> (train/adamw_device.cuh) holds the state.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../../core/tensor.hpp"
#include "../adamw.hpp"
#include "memory.cuh"
#include "runtime.cuh"

namespace bonsai::cuda {

/// Scratch of grad_norm, allocated on first use and reused.
struct GradNormState {
  Workspace<double, Device> partials;  // (blocks + 1,) per-block sums of squares, then the total
};

/// The per-step constants of AdamW, rounded to float from double exactly as AdamW<float>::step
/// rounds them: g' = scale g, m = b1 m + c1 g', v = b2 v + c2 g' g',
/// p = p keep - step_size m / (sqrt(v) inv_sqrt_bc2 + eps).
struct AdamWScalars {
  float b1, c1, b2, c2, eps, scale, step_size, inv_sqrt_bc2, keep;
};

namespace detail {

inline constexpr int gradnorm_threads = 256;
inline constexpr index_t gradnorm_max_blocks = 1024;
inline constexpr int adamw_threads = 256;

/// V consecutive elements of T in one aligned load or store.
template <class T, int V>
struct alignas(sizeof(T) * V) AdamWPack {
  T v[V];
};

/// Sum of `x` over the block, in a fixed order (warp shuffles, then the warp sums in warp
/// order). The result is valid in thread 0. blockDim.x must be a multiple of 32, at most 1024.
__device__ __forceinline__ double gradnorm_block_sum(double x) {
  __shared__ double warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  double s = 0.0;
  if (warp == 0) {
    s = lane < warps ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  }
  return s;
}

/// partials[block] = sum of x_i^2 over the block's elements, in double. Elements [0, head) and
/// [head + V groups, n) are single loads by the first threads; the groups of V between are
/// aligned vector loads, grid-stride.
template <class T, int V>
__global__ void __launch_bounds__(gradnorm_threads)
    gradnorm_squares_kernel(const T* x, index_t n, index_t head, index_t groups, double* partials) {
  const index_t tid = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  const index_t stride = index_t(gridDim.x) * blockDim.x;
  double acc = 0.0;
  const AdamWPack<T, V>* body = reinterpret_cast<const AdamWPack<T, V>*>(x + head);
  for (index_t q = tid; q < groups; q += stride) {
    const AdamWPack<T, V> p = body[q];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const double d = static_cast<double>(static_cast<float>(p.v[e]));
      acc += d * d;
    }
  }
  const index_t tail = head + groups * V;
  if (tid < head) {
    const double d = static_cast<double>(static_cast<float>(x[tid]));
    acc += d * d;
  }
  if (tid < n - tail) {
    const double d = static_cast<double>(static_cast<float>(x[tail + tid]));
    acc += d * d;
  }
  const double s = gradnorm_block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

/// partials[blocks] = sum of partials[0, blocks), in a fixed order; one block.
static __global__ void __launch_bounds__(gradnorm_threads)
    gradnorm_total_kernel(double* partials, index_t blocks) {
  double acc = 0.0;
  for (index_t i = threadIdx.x; i < blocks; i += blockDim.x) acc += partials[i];
  const double s = gradnorm_block_sum(acc);
  if (threadIdx.x == 0) partials[blocks] = s;
}

/// One AdamW element with the float operations of AdamW<float>::step, in its order, each
/// rounded once (no fused multiply-adds), so the result does not depend on contraction.
__device__ __forceinline__ void adamw_element(float& p, float& m, float& v, float g,
                                              const AdamWScalars& s) {
  const float gi = __fmul_rn(g, s.scale);
  const float mi = __fadd_rn(__fmul_rn(s.b1, m), __fmul_rn(s.c1, gi));
  const float vi = __fadd_rn(__fmul_rn(s.b2, v), __fmul_rn(__fmul_rn(s.c2, gi), gi));
  m = mi;
  v = vi;
  const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), s.inv_sqrt_bc2), s.eps);
  p = __fsub_rn(__fmul_rn(p, s.keep), __fdiv_rn(__fmul_rn(s.step_size, mi), denom));
}

/// AdamW over n elements: master, m, v updated in place from grads; params (when write_params)
/// receives the new master rounded to T. With Vec, elements [head, head + 4 groups) go as
/// aligned groups of 4 (grid-stride), the at most 3 before and 3 after as single elements.
/// master and params may be the same array (T = float, write_params false): no restrict.
template <class T, bool Vec>
__global__ void __launch_bounds__(adamw_threads)
    adamw_kernel(float* master, T* params, const T* grads, float* m, float* v, index_t n,
                 index_t head, index_t groups, bool write_params, AdamWScalars s) {
  const index_t tid = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  const index_t stride = index_t(gridDim.x) * blockDim.x;
  auto single = [&](index_t i) {
    float p = master[i], mi = m[i], vi = v[i];
    adamw_element(p, mi, vi, static_cast<float>(grads[i]), s);
    m[i] = mi;
    v[i] = vi;
    master[i] = p;
    if (write_params) params[i] = static_cast<T>(p);
  };
  if constexpr (Vec) {
    using F4 = AdamWPack<float, 4>;
    using T4 = AdamWPack<T, 4>;
    F4* pm = reinterpret_cast<F4*>(master + head);
    F4* mm = reinterpret_cast<F4*>(m + head);
    F4* vm = reinterpret_cast<F4*>(v + head);
    const T4* gm = reinterpret_cast<const T4*>(grads + head);
    T4* wm = reinterpret_cast<T4*>(params + head);
    for (index_t q = tid; q < groups; q += stride) {
      F4 p = pm[q], mq = mm[q], vq = vm[q];
      const T4 g = gm[q];
#pragma unroll
      for (int e = 0; e < 4; ++e)
        adamw_element(p.v[e], mq.v[e], vq.v[e], static_cast<float>(g.v[e]), s);
      mm[q] = mq;
      vm[q] = vq;
      pm[q] = p;
      if (write_params) {
        T4 w;
#pragma unroll
        for (int e = 0; e < 4; ++e) w.v[e] = static_cast<T>(p.v[e]);
        wm[q] = w;
      }
    }
    const index_t tail = head + groups * 4;
    if (tid < head) single(tid);
    if (tid < n - tail) single(tail + tid);
  } else {
    for (index_t i = tid; i < n; i += stride) single(i);
  }
}

inline bool adamw_aligned(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

/// Byte ranges [a, a + na) and [b, b + nb) overlap.
inline bool adamw_overlaps(const void* a, std::size_t na, const void* b, std::size_t nb) {
  const auto x = reinterpret_cast<std::uintptr_t>(a), y = reinterpret_cast<std::uintptr_t>(b);
  return na > 0 && nb > 0 && x < y + nb && y < x + na;
}

template <class T>
void check_adamw_buffers(const float* master, const T* params, const T* grads, const float* m,
                         const float* v, index_t n) {
  BONSAI_CHECK(master && params && grads && m && v, "cuda::adamw_step: a null buffer for ", n,
               " elements");
  BONSAI_CHECK(adamw_aligned(master, alignof(float)) && adamw_aligned(m, alignof(float)) &&
                   adamw_aligned(v, alignof(float)) && adamw_aligned(grads, alignof(T)) &&
                   adamw_aligned(params, alignof(T)),
               "cuda::adamw_step: a buffer is not aligned to its element type");
  const std::size_t fb = sizeof(float) * std::size_t(n), tb = sizeof(T) * std::size_t(n);
  const bool same = std::is_same_v<T, float> &&
                    static_cast<const void*>(params) == static_cast<const void*>(master);
  BONSAI_CHECK(same || !adamw_overlaps(params, tb, master, fb),
               "cuda::adamw_step: params overlap the master weights without being the same array");
  const struct {
    const void* p;
    std::size_t bytes;
  } bufs[] = {{master, fb}, {params, tb}, {m, fb}, {v, fb}, {grads, tb}};
  for (int a = 2; a < 5; ++a)  // m, v, grads against every other buffer
    for (int b = 0; b < 5; ++b)
      if (a != b)
        BONSAI_CHECK(!adamw_overlaps(bufs[a].p, bufs[a].bytes, bufs[b].p, bufs[b].bytes),
                     "cuda::adamw_step: m, v and grads must not overlap each other, the master "
                     "weights or params");
}

/// One launch of adamw_kernel over n elements (checked by the caller).
template <class T>
void launch_adamw(float* master, T* params, const T* grads, float* m, float* v, index_t n,
                  const AdamWScalars& s) {
  if (n == 0) return;
  const bool write_params = static_cast<const void*>(params) != static_cast<const void*>(master);
  // Elements before master's first 16-byte boundary; the other arrays must line up there too.
  const index_t head =
      std::min<index_t>(n, index_t((16 - reinterpret_cast<std::uintptr_t>(master) % 16) % 16 / 4));
  const bool vec = adamw_aligned(m + head, 16) && adamw_aligned(v + head, 16) &&
                   adamw_aligned(grads + head, 4 * sizeof(T)) &&
                   adamw_aligned(params + head, 4 * sizeof(T));
  const index_t groups = vec ? (n - head) / 4 : 0;
  const index_t units = vec ? std::max<index_t>(groups, 1) : n;
  const index_t cap = index_t(runtime().multiprocessors()) * 8;
  const auto blocks = static_cast<unsigned>(
      std::clamp<index_t>((units + adamw_threads - 1) / adamw_threads, 1, cap));
  if (vec) {
    adamw_kernel<T, true><<<blocks, adamw_threads, 0, runtime().stream()>>>(
        master, params, grads, m, v, n, head, groups, write_params, s);
  } else {
    adamw_kernel<T, false><<<blocks, adamw_threads, 0, runtime().stream()>>>(
        master, params, grads, m, v, n, 0, 0, write_params, s);
  }
  BONSAI_CUDA_CHECK_LAUNCH("adamw_kernel");
}

template <class T>
void check_adamw_view(const VectorView<T, Device>& x, const char* name, index_t n) {
  BONSAI_CHECK(x.size() == n, "cuda::adamw_step: master has shape ", shape{n}, " but ", name,
               " has shape ", shape{x.size()});
  BONSAI_CHECK(n == 0 || x.stride(0) == 1, "cuda::adamw_step: ", name, " has stride ", x.stride(0),
               "; it must be contiguous");
}

/// The checks both adamw_step overloads make; returns the arena size n.
template <class T>
index_t check_adamw_views(const VectorView<float, Device>& master, const VectorView<T, Device>& params,
                          const VectorView<const T, Device>& grads, const VectorView<float, Device>& m,
                          const VectorView<float, Device>& v) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>, "cuda::adamw_step: T is float or bf16");
  const index_t n = master.size();
  BONSAI_CHECK(n == 0 || master.stride(0) == 1, "cuda::adamw_step: master has stride ", master.stride(0),
               "; it must be contiguous");
  check_adamw_view(params, "params", n);
  check_adamw_view(grads, "grads", n);
  check_adamw_view(m, "m", n);
  check_adamw_view(v, "v", n);
  return n;
}

inline void check_adamw_config(const AdamWConfig& c) {
  BONSAI_CHECK(c.beta1 >= 0 && c.beta1 < 1, "cuda::adamw_step: beta1 = ", c.beta1,
               " is outside [0, 1)");
  BONSAI_CHECK(c.beta2 >= 0 && c.beta2 < 1, "cuda::adamw_step: beta2 = ", c.beta2,
               " is outside [0, 1)");
  BONSAI_CHECK(c.eps > 0, "cuda::adamw_step: eps = ", c.eps, " must be positive");
}

}  // namespace detail

/// The AdamW constants of update t (t >= 1: the count after this step, as AdamW::step_count()
/// reads after it) for a range decayed by `weight_decay` (0 for a range that does not decay):
/// bias corrections 1 - b1^t and 1 - b2^t and keep = 1 - lr wd computed in double, then rounded
/// to float exactly as AdamW<float>::step does.
inline AdamWScalars adamw_scalars(const AdamWConfig& config, std::int64_t step, double lr,
                                  double weight_decay, double grad_scale) {
  detail::check_adamw_config(config);
  BONSAI_CHECK(step >= 1, "cuda::adamw_step: step ", step,
               " must be at least 1 (the count after this update)");
  BONSAI_CHECK(std::isfinite(lr) && lr >= 0, "cuda::adamw_step: learning rate ", lr,
               " must be finite and non-negative");
  BONSAI_CHECK(std::isfinite(weight_decay) && weight_decay >= 0,
               "cuda::adamw_step: weight_decay = ", weight_decay,
               " must be finite and non-negative");
  BONSAI_CHECK(std::isfinite(grad_scale), "cuda::adamw_step: grad_scale ", grad_scale,
               " is not finite");
  const double bc1 = 1.0 - std::pow(config.beta1, double(step));
  const double bc2 = 1.0 - std::pow(config.beta2, double(step));
  AdamWScalars s;
  s.b1 = float(config.beta1);
  s.c1 = float(1.0 - config.beta1);
  s.b2 = float(config.beta2);
  s.c2 = float(1.0 - config.beta2);
  s.eps = float(config.eps);
  s.scale = float(grad_scale);
  s.step_size = float(lr / bc1);
  s.inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  s.keep = float(1.0 - lr * weight_decay);
  return s;
}

/// ||g|| = sqrt(sum_i g_i^2) of the (n,) device array `grads`, returned to the host (waits for
/// the stream). Squares are summed in double: per thread over a grid-stride set of elements,
/// per block in a fixed shuffle order, then the block sums in block order, so the bits depend
/// only on n and the 16-byte alignment of `grads`. Non-finite gradients give a non-finite norm.
template <class T>
double grad_norm(const T* grads, index_t n, GradNormState& state) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>,
                "cuda::grad_norm: T is float or bf16");
  BONSAI_CHECK(n >= 0, "cuda::grad_norm: negative length ", n);
  if (n == 0) return 0.0;
  BONSAI_CHECK(grads != nullptr, "cuda::grad_norm: null gradients for ", n, " elements");
  BONSAI_CHECK(detail::adamw_aligned(grads, alignof(T)),
               "cuda::grad_norm: the gradients are not aligned to ", sizeof(T), " bytes");
  constexpr int V = 16 / int(sizeof(T));
  const index_t head = std::min<index_t>(
      n, index_t((16 - reinterpret_cast<std::uintptr_t>(grads) % 16) % 16 / sizeof(T)));
  const index_t groups = (n - head) / V;
  // At least 4 groups per thread before another block is added; the cap keeps the final pass short.
  const index_t per_block = index_t(detail::gradnorm_threads) * V * 4;
  const index_t blocks =
      std::clamp<index_t>((n + per_block - 1) / per_block, 1, detail::gradnorm_max_blocks);
  double* partials = state.partials.reserve(blocks + 1);
  cudaStream_t stream = runtime().stream();
  detail::gradnorm_squares_kernel<T, V>
      <<<static_cast<unsigned>(blocks), detail::gradnorm_threads, 0, stream>>>(grads, n, head,
                                                                               groups, partials);
  BONSAI_CUDA_CHECK_LAUNCH("gradnorm_squares_kernel");
  detail::gradnorm_total_kernel<<<1, detail::gradnorm_threads, 0, stream>>>(partials, blocks);
  BONSAI_CUDA_CHECK_LAUNCH("gradnorm_total_kernel");
  double total = 0.0;
  BONSAI_CUDA_CHECK(
      cudaMemcpyAsync(&total, partials + blocks, sizeof(double), cudaMemcpyDeviceToHost, stream));
  BONSAI_CUDA_CHECK(cudaStreamSynchronize(stream));
  return std::sqrt(total);
}

/// The same for a contiguous (n,) device view.
template <class T>
double grad_norm(const VectorView<T, Device>& grads, GradNormState& state) {
  BONSAI_CHECK(grads.size() == 0 || grads.stride(0) == 1, "cuda::grad_norm: the view has stride ",
               grads.stride(0), "; it needs a contiguous one");
  return grad_norm(static_cast<const std::remove_const_t<T>*>(grads.data()), grads.size(), state);
}

/// One AdamW update, step t (t >= 1), of a contiguous range of n parameters, in one launch:
/// with g = grad_scale * grads, m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2 and
/// master = master (1 - lr weight_decay) - lr m^ / (sqrt(v^) + eps), the bias-corrected
/// m^ = m / (1 - b1^t), v^ = v / (1 - b2^t); then params = T(master). All (n,), contiguous:
/// master, m, v fp32; grads and params in T. For T = float, params may be master itself (the
/// model trains on the master weights); otherwise no two arrays overlap. grad_scale folds in
/// the clip factor (clip_scale(grad_norm(...), max_norm)) and any 1/micro-batches average; the
/// gradients are not modified. Elementwise, so the result is deterministic; the float
/// operations are those of AdamW<float>::step, in its order, without contraction.
///
/// A model calls it once per AdamWRange of its arena (adamw_ranges(arena.slots())), passing
/// weight_decay = config.weight_decay for a range that decays and 0 for one that does not —
/// or the overload below, which does exactly that.
template <class T>
void adamw_step(const VectorView<float, Device>& master, const VectorView<T, Device>& params,
                const VectorView<const std::type_identity_t<T>, Device>& grads,
                const VectorView<float, Device>& m, const VectorView<float, Device>& v,
                const AdamWConfig& config, std::int64_t step, double lr, double weight_decay,
                double grad_scale = 1.0) {
  const index_t n = detail::check_adamw_views(master, params, grads, m, v);
  const AdamWScalars s = adamw_scalars(config, step, lr, weight_decay, grad_scale);
  if (n == 0) return;
  detail::check_adamw_buffers(master.data(), params.data(), grads.data(), m.data(), v.data(), n);
  detail::launch_adamw(master.data(), params.data(), grads.data(), m.data(), v.data(), n, s);
}

/// AdamW update t of a whole arena laid out as `ranges` (adamw_ranges(arena.slots())): one
/// launch per range, decayed by config.weight_decay where the range decays and not at all
/// elsewhere. All views are (arena size,) in the arena's layout; see the overload above.
template <class T>
void adamw_step(const std::vector<AdamWRange>& ranges, const VectorView<float, Device>& master,
                const VectorView<T, Device>& params,
                const VectorView<const std::type_identity_t<T>, Device>& grads,
                const VectorView<float, Device>& m, const VectorView<float, Device>& v,
                const AdamWConfig& config, std::int64_t step, double lr, double grad_scale = 1.0) {
  const index_t n = detail::check_adamw_views(master, params, grads, m, v);
  for (const AdamWRange& r : ranges)
    BONSAI_CHECK(0 <= r.begin && r.begin <= r.end && r.end <= n, "cuda::adamw_step: range [",
                 r.begin, ", ", r.end, ") lies outside the arena of shape ", shape{n});
  const AdamWScalars decay = adamw_scalars(config, step, lr, config.weight_decay, grad_scale);
  const AdamWScalars plain = adamw_scalars(config, step, lr, 0.0, grad_scale);
  if (n == 0) return;
  detail::check_adamw_buffers(master.data(), params.data(), grads.data(), m.data(), v.data(), n);
  for (const AdamWRange& r : ranges)
    detail::launch_adamw(master.data() + r.begin, params.data() + r.begin, grads.data() + r.begin,
                         m.data() + r.begin, v.data() + r.begin, r.end - r.begin,
                         r.decays ? decay : plain);
}

}  // namespace bonsai::cuda
