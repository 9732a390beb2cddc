// bonsai/backend/cuda/runtime.cuh — the per-thread CUDA state every lowering uses: the stream
// work is queued on, the cuBLASLt handle and its workspace, the float GEMM mode (exact fp32 or
// TF32 tensor cores) and the device's multiprocessor count. Created on first use.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <memory>

#include "error.cuh"

namespace bonsai::cuda {

/// How float GEMMs run: exact fp32 (the default, ≤ 1e-5 from the CPU reference) or TF32 tensor
/// cores (10-bit mantissa operands, fp32 accumulation; about 5e-4). bf16 GEMMs always
/// accumulate in fp32.
enum class Math { fp32, tf32 };

/// True when at least one CUDA device can be used.
inline bool available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

class Runtime {
 public:
  /// cuBLASLt's recommended workspace for Hopper.
  static constexpr std::size_t workspace_bytes = std::size_t(32) << 20;

  Runtime() {
    int device = 0;
    BONSAI_CUDA_CHECK(cudaGetDevice(&device));
    BONSAI_CUDA_CHECK(cudaDeviceGetAttribute(&m_sms, cudaDevAttrMultiProcessorCount, device));
    BONSAI_CUBLAS_CHECK(cublasLtCreate(&m_lt));
    BONSAI_CUDA_CHECK(cudaMalloc(&m_workspace, workspace_bytes));
  }
  ~Runtime() {
    cudaFree(m_workspace);
    cublasLtDestroy(m_lt);
  }
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  cudaStream_t stream() const noexcept { return m_stream; }
  /// Work is queued on `s` from now on (the default stream 0 until set).
  void set_stream(cudaStream_t s) noexcept { m_stream = s; }
  Math math() const noexcept { return m_math; }
  void set_math(Math m) noexcept { m_math = m; }
  cublasLtHandle_t lt() const noexcept { return m_lt; }
  void* workspace() const noexcept { return m_workspace; }
  int multiprocessors() const noexcept { return m_sms; }
  /// With autotuning on, the first GEMM of each shape times cuBLASLt's best few candidate
  /// algorithms and keeps the fastest (off by default: the choice can differ between processes,
  /// and with it the rounding of the results).
  bool autotune() const noexcept { return m_autotune; }
  void set_autotune(bool on) noexcept { m_autotune = on; }

 private:
  cublasLtHandle_t m_lt = nullptr;
  void* m_workspace = nullptr;
  cudaStream_t m_stream = nullptr;
  Math m_math = Math::fp32;
  int m_sms = 1;
  bool m_autotune = false;
};

/// This thread's runtime.
inline Runtime& runtime() {
  thread_local std::unique_ptr<Runtime> r = std::make_unique<Runtime>();
  return *r;
}

inline void set_math(Math m) { runtime().set_math(m); }
inline void set_stream(cudaStream_t s) { runtime().set_stream(s); }
inline void set_autotune(bool on) { runtime().set_autotune(on); }
/// Waits for the work queued on this thread's stream; throws the first asynchronous error.
inline void synchronize() { BONSAI_CUDA_CHECK(cudaStreamSynchronize(runtime().stream())); }

}  // namespace bonsai::cuda
