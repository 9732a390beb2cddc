// bonsai/backend/cuda/error.cuh — CUDA and cuBLAS status codes become bonsai::Error, with the
// failing call, its file and line, and the library's own message.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "../../core/error.hpp"

namespace bonsai::cuda::detail {

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess)
    ::bonsai::detail::fail("CUDA error ", cudaGetErrorName(status), " (", cudaGetErrorString(status),
                           ") in ", call, " at ", file, ":", line);
}

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    ::bonsai::detail::fail("cuBLAS error ", cublasGetStatusName(status), " (",
                           cublasGetStatusString(status), ") in ", call, " at ", file, ":", line);
}

}  // namespace bonsai::cuda::detail

/// Throws bonsai::Error when a CUDA runtime call fails.
#define BONSAI_CUDA_CHECK(call) ::bonsai::cuda::detail::check_cuda((call), #call, __FILE__, __LINE__)
/// Throws bonsai::Error when a cuBLAS / cuBLASLt call fails.
#define BONSAI_CUBLAS_CHECK(call) \
  ::bonsai::cuda::detail::check_cublas((call), #call, __FILE__, __LINE__)
/// Throws bonsai::Error when the last kernel launch failed (bad configuration, no device).
#define BONSAI_CUDA_CHECK_LAUNCH(kernel) \
  ::bonsai::cuda::detail::check_cuda(cudaGetLastError(), "launch of " kernel, __FILE__, __LINE__)
