// bonsai/backend/cuda/ops.cuh — Ops<Device>: the op seam (backend/ops.hpp) on the GPU, each op
// one call of this backend's kernels (embedding.cuh, norm.cuh, rope.cuh, attention.cuh,
// cross_entropy.cuh, gemm.cuh, elementwise.cuh), computing in float and storing in T (float or
// bf16) on bonsai's stream. What has no kernel yet refuses with a sentence when called, never
// computes something else: the growth masks (a non-null mask, and the column scalings and the
// unfused GELU only masks use), the kept-set gathers and scatters of sparsity-accelerated
// training, and decoding against a KV cache. nn/supports.hpp and Gpt refuse those models and
// calls before they allocate.
#pragma once

#include <cstdint>
#include <span>

#include "../ops.hpp"
#include "attention.cuh"
#include "cross_entropy.cuh"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "gemm.cuh"
#include "memory.cuh"
#include "norm.cuh"
#include "rope.cuh"
#include "runtime.cuh"

namespace bonsai {

namespace detail {

[[noreturn]] inline void no_device_kernel(const char* what) {
  fail("Ops<Device>: ", what, " has no CUDA kernel yet; run it on the host");
}
inline void no_device_mask(const void* mask, const char* who) {
  BONSAI_CHECK(mask == nullptr, "Ops<Device>::", who, ": growth masks have no CUDA kernel yet; "
               "ramp MSG's masks in on the host");
}

/// A KV cache's place in a space without decoding kernels: constructing one refuses.
template <class T>
struct NoKvCache {
  NoKvCache(index_t, index_t, index_t, index_t) { no_device_kernel("decoding with a KV cache"); }
};

}  // namespace detail

template <>
struct Ops<Device> {
  template <class T>
  using NormState = cuda::NormState<T>;
  /// cos and sin in float whatever T is.
  template <class T>
  using RopeTable = cuda::RopeTable;
  /// The log-sum-exp per row and the forward's output, kept for backward.
  template <class T>
  using AttentionState = cuda::AttentionState<T>;
  template <class T>
  using KvCache = detail::NoKvCache<T>;
  using EmbeddingState = cuda::EmbeddingState;
  using LossState = cuda::CrossEntropyState;

  /// v = 0 on bonsai's stream.
  template <class T>
  static void zero(const VectorView<T, Device>& v) {
    if (v.size())
      BONSAI_CUDA_CHECK(cudaMemsetAsync(v.data(), 0, sizeof(T) * std::size_t(v.size()), cuda::runtime().stream()));
  }
  /// dst = src between any two spaces, in order on bonsai's stream; the call returns when a
  /// host destination holds the values and a host source may be reused. A scalar conversion
  /// (float <-> bf16) waits for the stream and goes through cuda::copy.
  template <class U, class T, class SD, class SS>
  static void copy(const VectorView<U, SD>& dst, const VectorView<T, SS>& src) {
    BONSAI_CHECK(dst.size() == src.size(), "Ops<Device>::copy: ", src.size(), " elements into ", dst.size());
    if (src.size() == 0) return;
    const cudaStream_t stream = cuda::runtime().stream();
    if constexpr (std::is_same_v<std::remove_const_t<T>, U>) {
      BONSAI_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), sizeof(U) * std::size_t(src.size()),
                                        cuda::detail::copy_kind<SS, SD>(), stream));
      if constexpr (std::is_same_v<SD, Host>) BONSAI_CUDA_CHECK(cudaStreamSynchronize(stream));
    } else {
      BONSAI_CUDA_CHECK(cudaStreamSynchronize(stream));
      cuda::copy(dst, src);
    }
  }

  /// The ids are the caller's to check (Gpt does, on the host): no read-back, no wait.
  template <class T>
  static void embedding_forward(const std::int32_t* tok, index_t batch, index_t seq, index_t pos0,
                                const MatrixView<const T, Device>& wte, const MatrixView<const T, Device>& wpe,
                                const MatrixView<T, Device>& y, EmbeddingState& st) {
    cuda::embedding_forward<T>(tok, batch, seq, pos0, wte, wpe, y, st, /*check_ids=*/false);
  }
  template <class T>
  static void embedding_backward(const std::int32_t* tok, index_t batch, index_t seq,
                                 const MatrixView<const T, Device>& dy, const MatrixView<T, Device>& dwte,
                                 const MatrixView<T, Device>& dwpe, EmbeddingState& st) {
    cuda::embedding_backward<T>(tok, batch, seq, dy, dwte, dwpe, st);
  }

  template <class T>
  static void layernorm_forward(const MatrixView<const T, Device>& x, const T* w, const T* b,
                                const MatrixView<T, Device>& y, float eps, NormState<T>& st, const T* mask) {
    detail::no_device_mask(mask, "layernorm_forward");
    cuda::layernorm_forward<T>(x, w, b, y, eps, st);
  }
  template <class T>
  static void layernorm_backward(const MatrixView<const T, Device>& dy, const MatrixView<const T, Device>& x,
                                 const T* w, const MatrixView<T, Device>& dx, T* dw, T* db, bool accumulate_dx,
                                 NormState<T>& st, const T* mask) {
    detail::no_device_mask(mask, "layernorm_backward");
    cuda::layernorm_backward<T>(dy, x, w, dx, dw, db, accumulate_dx, st);
  }
  template <class T>
  static void rmsnorm_forward(const MatrixView<const T, Device>& x, const T* w, const MatrixView<T, Device>& y,
                              float eps, NormState<T>& st, const T* mask) {
    detail::no_device_mask(mask, "rmsnorm_forward");
    cuda::rmsnorm_forward<T>(x, w, y, eps, st);
  }
  template <class T>
  static void rmsnorm_backward(const MatrixView<const T, Device>& dy, const MatrixView<const T, Device>& x,
                               const T* w, const MatrixView<T, Device>& dx, T* dw, bool accumulate_dx,
                               NormState<T>& st, const T* mask) {
    detail::no_device_mask(mask, "rmsnorm_backward");
    cuda::rmsnorm_backward<T>(dy, x, w, dx, dw, accumulate_dx, st);
  }

  template <class T>
  static void rope_forward(const MatrixView<T, Device>& qkv, const AttentionShape& shape,
                           const RopeTable<T>& table, index_t pos) {
    cuda::rope_forward<T>(qkv, shape, table, pos);
  }
  template <class T>
  static void rope_backward(const MatrixView<T, Device>& dqkv, const AttentionShape& shape,
                            const RopeTable<T>& table, index_t pos) {
    cuda::rope_backward<T>(dqkv, shape, table, pos);
  }

  template <class T>
  static void attention_forward(const AttentionShape& shape, const MatrixView<const T, Device>& qkv,
                                const MatrixView<T, Device>& out, AttentionState<T>& state) {
    cuda::attention_forward<T>(shape, qkv, out, state);
  }
  template <class T>
  static void attention_backward(const AttentionShape& shape, const MatrixView<const T, Device>& qkv,
                                 AttentionState<T>& state, const MatrixView<const T, Device>& dout,
                                 const MatrixView<T, Device>& dqkv) {
    cuda::attention_backward<T>(shape, qkv, state, dout, dqkv);
  }
  template <class T>
  static void attention_decode(const AttentionShape&, const MatrixView<const T, Device>&, index_t,
                               KvCache<T>&, const MatrixView<T, Device>&) {
    detail::no_device_kernel("decoding with a KV cache");
  }

  /// Waits for the loss (one read-back per call).
  template <class T>
  static double softmax_cross_entropy(const MatrixView<T, Device>& logits, const std::int32_t* targets, bool grad,
                                      float scale, LossState& st) {
    return cuda::softmax_cross_entropy<T>(logits, targets, grad, scale, st);
  }

  template <class T>
  static void add(const MatrixView<const T, Device>& x, const MatrixView<const T, Device>& b,
                  const MatrixView<T, Device>& y) {
    cuda::add<T>(x, b, y);
  }
  template <class T>
  static void add_scaled(const MatrixView<const T, Device>&, const MatrixView<const T, Device>&, const T*,
                         const MatrixView<T, Device>&) {
    detail::no_device_kernel("a residual add under a growth mask");
  }
  template <class T>
  static void scaled_columns(const MatrixView<const T, Device>&, const T*, const MatrixView<T, Device>&) {
    detail::no_device_kernel("a column scaling by a growth mask");
  }
  template <class T>
  static void scale_columns(const MatrixView<T, Device>&, const T*) {
    detail::no_device_kernel("a column scaling by a growth mask");
  }
  /// Unfused GELU: only a growth mask between the up map and its activation needs it (the
  /// unmasked GELU is the GEMM's epilogue).
  template <class T>
  static void gelu_forward(const MatrixView<const T, Device>&, const MatrixView<T, Device>&) {
    detail::no_device_kernel("an unfused GELU (under a growth mask)");
  }
  template <class T>
  static void gelu_backward(const MatrixView<const T, Device>&, const MatrixView<const T, Device>&,
                            const MatrixView<T, Device>&) {
    detail::no_device_kernel("an unfused GELU (under a growth mask)");
  }
  template <class T>
  static void swiglu_forward(const MatrixView<const T, Device>& g, const MatrixView<const T, Device>& u,
                             const MatrixView<T, Device>& h) {
    cuda::swiglu_forward<T>(g, u, h);
  }
  template <class T>
  static void swiglu_backward(const MatrixView<const T, Device>& dh, const MatrixView<const T, Device>& g,
                              const MatrixView<const T, Device>& u, const MatrixView<T, Device>& dg,
                              const MatrixView<T, Device>& du) {
    cuda::swiglu_backward<T>(dh, g, u, dg, du);
  }

  template <class T>
  static void gather_rows(const MatrixView<const T, Device>&, std::span<const index_t>, const MatrixView<T, Device>&) {
    detail::no_device_kernel("gathering kept rows (sparsity-accelerated training)");
  }
  template <class T>
  static void scatter_add_rows(const MatrixView<const T, Device>&, std::span<const index_t>,
                               const MatrixView<T, Device>&) {
    detail::no_device_kernel("scattering kept rows (sparsity-accelerated training)");
  }
  template <class T>
  static void gather_column_blocks(const MatrixView<const T, Device>&, std::span<const index_t>, index_t,
                                   const MatrixView<T, Device>&) {
    detail::no_device_kernel("gathering kept column blocks (sparsity-accelerated training)");
  }
  template <class T>
  static void scatter_add_column_blocks(const MatrixView<const T, Device>&, std::span<const index_t>, index_t,
                                        const MatrixView<T, Device>&) {
    detail::no_device_kernel("scattering kept column blocks (sparsity-accelerated training)");
  }

  /// c = alpha op(a) op(b) + beta c (cuBLASLt; fp32 accumulation, TF32 when enabled for float).
  template <class T>
  static void gemm(float alpha, const MatrixView<const T, Device>& a, Op opa, const MatrixView<const T, Device>& b,
                   Op opb, float beta, const MatrixView<T, Device>& c) {
    cuda::gemm<T>(alpha, a, opa, b, opb, beta, c);
  }
};

}  // namespace bonsai
