// bonsai/backend/cuda/memory.cuh — device memory: Allocator<Device> (cudaMalloc), copies between
// host and device views of the same shape, and conversions between scalar types on the way
// (float <-> bf16), so tests and trainers can keep fp32 host copies of bf16 device tensors.
#pragma once

#include <cuda_bf16.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "../../core/tensor.hpp"
#include "error.cuh"

namespace bonsai {

/// bfloat16: 8 exponent bits, 7 mantissa bits; the storage type of bf16 GEMMs (fp32 accumulation).
using bf16 = __nv_bfloat16;

template <>
struct Allocator<Device> {
  /// cudaMalloc returns 256-byte aligned memory.
  static constexpr std::size_t alignment = 256;
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, bytes);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky-free error so later calls can go on
      ::bonsai::detail::fail("cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorString(status));
    }
    return p;
  }
  static void deallocate(void* p) noexcept { cudaFree(p); }
  static void zero(void* p, std::size_t bytes) { BONSAI_CUDA_CHECK(cudaMemset(p, 0, bytes)); }
};

namespace cuda {

/// Converts one scalar, through float when the types differ.
template <class U, class T>
BONSAI_HOST_DEVICE U convert(T v) {
  if constexpr (std::is_same_v<U, T>) return v;
  else return static_cast<U>(static_cast<float>(v));
}

namespace detail {

template <class T, int R, class S>
void check_contiguous(const TensorView<T, R, S>& v, const char* who, const char* name) {
  BONSAI_CHECK(v.is_contiguous(), who, ": ", name, " must be contiguous");
}

template <class T, int R, class S, class U, class S2>
void check_same_shape(const TensorView<T, R, S>& dst, const TensorView<U, R, S2>& src, const char* who) {
  BONSAI_CHECK(dst.shape() == src.shape(), who, ": destination has shape ",
               ::bonsai::detail::shape_string(dst.shape()), " but source has shape ",
               ::bonsai::detail::shape_string(src.shape()));
}

template <class From, class To>
constexpr cudaMemcpyKind copy_kind() {
  if constexpr (std::is_same_v<From, Host> && std::is_same_v<To, Device>) return cudaMemcpyHostToDevice;
  else if constexpr (std::is_same_v<From, Device> && std::is_same_v<To, Host>) return cudaMemcpyDeviceToHost;
  else if constexpr (std::is_same_v<From, Device> && std::is_same_v<To, Device>) return cudaMemcpyDeviceToDevice;
  else return cudaMemcpyHostToHost;
}

}  // namespace detail

/// dst = src for contiguous views of one shape, in any pair of memory spaces; converts the
/// scalar type on the host when it differs (float <-> bf16). Synchronous.
template <class U, class T, int R, class SD, class SS>
void copy(const TensorView<U, R, SD>& dst, const TensorView<T, R, SS>& src) {
  using From = std::remove_const_t<T>;
  detail::check_same_shape(dst, src, "cuda::copy");
  detail::check_contiguous(dst, "cuda::copy", "destination");
  detail::check_contiguous(src, "cuda::copy", "source");
  const std::size_t n = static_cast<std::size_t>(src.size());
  if (n == 0) return;
  if constexpr (std::is_same_v<From, U>) {
    BONSAI_CUDA_CHECK(cudaMemcpy(dst.data(), src.data(), n * sizeof(U), detail::copy_kind<SS, SD>()));
  } else {
    // Stage through host memory: convert there, copy once.
    std::vector<From> in(n);
    BONSAI_CUDA_CHECK(cudaMemcpy(in.data(), src.data(), n * sizeof(From), detail::copy_kind<SS, Host>()));
    std::vector<U> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = convert<U>(in[i]);
    BONSAI_CUDA_CHECK(cudaMemcpy(dst.data(), out.data(), n * sizeof(U), detail::copy_kind<Host, SD>()));
  }
}

/// A device tensor holding `src` converted to U.
template <class U, class T, int R>
Tensor<U, R, Device> to_device(const TensorView<T, R, Host>& src) {
  Tensor<U, R, Device> t(src.shape());
  copy(t.view(), src);
  return t;
}

/// A host tensor holding `src` converted to U.
template <class U, class T, int R>
Tensor<U, R, Host> to_host(const TensorView<T, R, Device>& src) {
  Tensor<U, R, Host> t(src.shape());
  copy(t.view(), src);
  return t;
}

/// Sets every byte of a contiguous device view to `byte` (0xFF makes float and bf16 NaN).
template <class T, int R>
void fill_bytes(const TensorView<T, R, Device>& v, int byte) {
  detail::check_contiguous(v, "cuda::fill_bytes", "view");
  if (!v.empty()) BONSAI_CUDA_CHECK(cudaMemset(v.data(), byte, sizeof(T) * v.size()));
}

}  // namespace cuda
}  // namespace bonsai
