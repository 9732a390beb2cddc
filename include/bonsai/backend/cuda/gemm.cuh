// bonsai/backend/cuda/gemm.cuh — row-major GEMMs on cuBLASLt:
//   C (m, n) = alpha op(A) op(B) + beta C,   op(A) (m, k), op(B) (k, n),
// optionally strided-batched (batch i offsets A, B, C by i times their strides, so the blocks
// of a block-diagonal map are one call over column views of one buffer) and with cuBLASLt's
// fused epilogues: + bias (per column of C), and gelu_tanh(. + bias) keeping the pre-activation.
// Row-major C is column-major C^T = op(B)^T op(A)^T, so A and B swap places in the call. float
// runs in exact fp32 or TF32 (cuda::Math), bf16 with fp32 accumulation. Descriptors and the
// chosen algorithm are cached per shape, so a training step queries no heuristics after the first.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <unordered_map>

#include "../../core/view.hpp"
#include "../ops.hpp"
#include "memory.cuh"
#include "runtime.cuh"

namespace bonsai::cuda {

/// Strided batch: `count` GEMMs, the i-th over A + i stride_a, B + i stride_b, C + i stride_c
/// (strides in elements; the views describe batch 0).
struct Batch {
  index_t count = 1;
  index_t stride_a = 0, stride_b = 0, stride_c = 0;
};

/// What cuBLASLt applies to the product before storing C (beta must be 0 with an epilogue).
/// bias: (n) per column of C; aux: (m, n), leading dimension aux_ld, receives acc + bias for
/// the GELU backward. Batch i reads bias + i bias_batch_stride and writes aux + i aux_batch_stride.
struct GemmEpilogue {
  enum class Kind { none, bias, bias_gelu } kind = Kind::none;
  const void* bias = nullptr;
  index_t bias_batch_stride = 0;
  void* aux = nullptr;
  index_t aux_ld = 0;
  index_t aux_batch_stride = 0;
};

namespace detail {

template <class T>
constexpr cudaDataType_t data_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, bf16>) return CUDA_R_16BF;
  else static_assert(::bonsai::detail::dependent_false<T>, "CUDA GEMMs take float or bf16");
}

/// The largest power of two (≤ 256) dividing the address and the batch stride in bytes.
inline std::uint32_t alignment(const void* p, index_t stride_bytes) {
  std::uintptr_t v = reinterpret_cast<std::uintptr_t>(p) | std::uintptr_t(256);
  if (stride_bytes) v |= static_cast<std::uintptr_t>(stride_bytes);
  return static_cast<std::uint32_t>(v & (~v + 1));
}

struct PlanKey {
  std::array<std::int64_t, 24> v{};
  friend bool operator==(const PlanKey&, const PlanKey&) = default;
};
struct PlanKeyHash {
  std::size_t operator()(const PlanKey& k) const noexcept {
    std::uint64_t h = 1469598103934665603ull;
    for (auto x : k.v) h = (h ^ static_cast<std::uint64_t>(x)) * 1099511628211ull;
    return static_cast<std::size_t>(h);
  }
};

/// Descriptors of one GEMM shape and the algorithm the heuristic chose (none: `found` false).
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  Plan() = default;
  Plan(const Plan&) = delete;
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

inline cublasLtMatrixLayout_t make_layout(cudaDataType_t type, index_t rows, index_t cols, index_t ld,
                                          index_t count, index_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  BONSAI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<std::uint64_t>(rows),
                                                 static_cast<std::uint64_t>(cols), ld));
  if (count > 1) {
    const std::int32_t c32 = static_cast<std::int32_t>(count);
    const std::int64_t s64 = stride;
    BONSAI_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &c32, sizeof c32));
    BONSAI_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s64, sizeof s64));
  }
  return l;
}

template <class T>
void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const T& v) {
  BONSAI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, a, &v, sizeof v));
}

inline std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash>& plan_cache() {
  thread_local std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> cache;
  return cache;
}

/// Times each candidate (one warm-up and three timed runs, into scratch output so that C is
/// untouched) and returns the fastest algorithm.
template <class T>
cublasLtMatmulAlgo_t fastest(Runtime& rt, const Plan& plan, const T* a, const T* b, const MatrixView<T, Device>& c,
                             const Batch& batch, const cublasLtMatmulHeuristicResult_t* results, int count) {
  const index_t span = (batch.count > 1 ? batch.stride_c * (batch.count - 1) : 0) + (c.rows() - 1) * c.ld() + c.cols();
  Tensor<T, 1, Device> scratch(span);
  cudaEvent_t start, stop;
  BONSAI_CUDA_CHECK(cudaEventCreate(&start));
  BONSAI_CUDA_CHECK(cudaEventCreate(&stop));
  const float alpha = 1.0f, beta = 0.0f;
  float best_ms = 0;
  int best = 0;
  for (int i = 0; i < count; ++i) {
    auto run = [&] {
      return cublasLtMatmul(rt.lt(), plan.desc, &alpha, b, plan.a, a, plan.b, &beta, scratch.data(), plan.c,
                            scratch.data(), plan.c, &results[i].algo, rt.workspace(), Runtime::workspace_bytes,
                            rt.stream());
    };
    if (run() != CUBLAS_STATUS_SUCCESS) continue;
    BONSAI_CUDA_CHECK(cudaEventRecord(start, rt.stream()));
    bool ok = true;
    for (int r = 0; r < 3; ++r) ok = ok && run() == CUBLAS_STATUS_SUCCESS;
    BONSAI_CUDA_CHECK(cudaEventRecord(stop, rt.stream()));
    BONSAI_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    BONSAI_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (ok && (best_ms == 0 || ms < best_ms)) {
      best_ms = ms;
      best = i;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return results[best].algo;
}

}  // namespace detail

/// C = alpha op(A) op(B) + beta C on this thread's stream. Returns false, computing nothing,
/// when cuBLASLt has no algorithm for the requested epilogue (the caller then runs the plain
/// GEMM and its own epilogue kernel); a plain GEMM without an algorithm throws.
template <class T>
bool gemm(float alpha, const MatrixView<const std::type_identity_t<T>, Device>& a, Op opa,
          const MatrixView<const std::type_identity_t<T>, Device>& b, Op opb, float beta,
          const MatrixView<T, Device>& c, const Batch& batch = {}, const GemmEpilogue& epi = {}) {
  const index_t m = opa == Op::N ? a.rows() : a.cols(), k = opa == Op::N ? a.cols() : a.rows();
  const index_t kb = opb == Op::N ? b.rows() : b.cols(), n = opb == Op::N ? b.cols() : b.rows();
  BONSAI_CHECK(k == kb && c.rows() == m && c.cols() == n, "cuda::gemm: op(A) has shape ",
               shape{m, k}, ", op(B) has shape ", shape{kb, n}, " and C has shape ",
               shape{c.rows(), c.cols()});
  BONSAI_CHECK(a.stride(1) == 1 && b.stride(1) == 1 && c.stride(1) == 1,
               "cuda::gemm: operands need contiguous rows");
  BONSAI_CHECK(epi.kind == GemmEpilogue::Kind::none || beta == 0.0f,
               "cuda::gemm: an epilogue needs beta = 0");
  if (m == 0 || n == 0) return true;

  Runtime& rt = runtime();
  constexpr cudaDataType_t type = detail::data_type<T>();
  const cublasComputeType_t compute = std::is_same_v<T, float> && rt.math() == Math::tf32
                                          ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
  const index_t bytes = sizeof(T);
  const std::uint32_t align_a = detail::alignment(b.data(), batch.count > 1 ? batch.stride_b * bytes : 0);
  const std::uint32_t align_b = detail::alignment(a.data(), batch.count > 1 ? batch.stride_a * bytes : 0);
  const std::uint32_t align_c = detail::alignment(c.data(), batch.count > 1 ? batch.stride_c * bytes : 0);

  detail::PlanKey key;
  key.v = {static_cast<std::int64_t>(type), compute, m, n, k, a.ld(), b.ld(), c.ld(),
           static_cast<int>(opa), static_cast<int>(opb), batch.count,
           batch.count > 1 ? batch.stride_a : 0, batch.count > 1 ? batch.stride_b : 0,
           batch.count > 1 ? batch.stride_c : 0, align_a, align_b, align_c,
           static_cast<int>(epi.kind), epi.aux_ld, epi.bias_batch_stride, epi.aux_batch_stride,
           reinterpret_cast<std::intptr_t>(rt.lt()), rt.autotune() ? 1 : 0, 0};
  auto& slot = detail::plan_cache()[key];
  if (!slot) {
    auto plan = std::make_unique<detail::Plan>();
    BONSAI_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, compute, CUDA_R_32F));
    const cublasOperation_t ta = opb == Op::N ? CUBLAS_OP_N : CUBLAS_OP_T;  // A_lt is B
    const cublasOperation_t tb = opa == Op::N ? CUBLAS_OP_N : CUBLAS_OP_T;  // B_lt is A
    detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, ta);
    detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, tb);
    if (epi.kind != GemmEpilogue::Kind::none) {
      const cublasLtEpilogue_t e = epi.kind == GemmEpilogue::Kind::bias ? CUBLASLT_EPILOGUE_BIAS
                                                                          : CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
      detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, e);
      detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, type);
      if (batch.count > 1)
        detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, std::int64_t(epi.bias_batch_stride));
      if (epi.kind == GemmEpilogue::Kind::bias_gelu) {
        detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, std::int64_t(epi.aux_ld));
        detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, type);
        if (batch.count > 1)
          detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE,
                           std::int64_t(epi.aux_batch_stride));
      }
    }
    // Column-major view: A_lt = B^T storage (b.cols, b.rows), B_lt = A (a.cols, a.rows), C (n, m).
    plan->a = detail::make_layout(type, b.cols(), b.rows(), b.ld(), batch.count, batch.stride_b);
    plan->b = detail::make_layout(type, a.cols(), a.rows(), a.ld(), batch.count, batch.stride_a);
    plan->c = detail::make_layout(type, n, m, c.ld(), batch.count, batch.stride_c);

    cublasLtMatmulPreference_t pref = nullptr;
    BONSAI_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const std::uint64_t ws = Runtime::workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof align_a);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof align_b);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof align_c);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof align_c);
    constexpr int max_candidates = 8;
    cublasLtMatmulHeuristicResult_t results[max_candidates]{};
    int returned = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(rt.lt(), plan->desc, plan->a, plan->b, plan->c, plan->c,
                                                             pref, rt.autotune() ? max_candidates : 1, results,
                                                             &returned);
    cublasLtMatmulPreferenceDestroy(pref);
    plan->found = st == CUBLAS_STATUS_SUCCESS && returned > 0;
    if (plan->found) {
      plan->algo = results[0].algo;
      if (returned > 1) {
        if (epi.kind != GemmEpilogue::Kind::none)
          detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, epi.bias);
        if (epi.kind == GemmEpilogue::Kind::bias_gelu)
          detail::set_attr(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, epi.aux);
        plan->algo = detail::fastest(rt, *plan, a.data(), b.data(), c, batch, results, returned);
      }
    }
    slot = std::move(plan);
  }
  detail::Plan& plan = *slot;
  if (!plan.found) {
    BONSAI_CHECK(epi.kind != GemmEpilogue::Kind::none, "cuda::gemm: cuBLASLt has no algorithm for ",
                 shape{m, k}, " x ", shape{k, n}, " (batch ", batch.count, ")");
    return false;
  }
  if (epi.kind != GemmEpilogue::Kind::none) detail::set_attr(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, epi.bias);
  if (epi.kind == GemmEpilogue::Kind::bias_gelu)
    detail::set_attr(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, epi.aux);
  BONSAI_CUBLAS_CHECK(cublasLtMatmul(rt.lt(), plan.desc, &alpha, b.data(), plan.a, a.data(), plan.b, &beta,
                                     c.data(), plan.c, c.data(), plan.c, &plan.algo, rt.workspace(),
                                     Runtime::workspace_bytes, rt.stream()));
  return true;
}

}  // namespace bonsai::cuda
