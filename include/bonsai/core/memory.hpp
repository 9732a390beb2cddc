// bonsai/core/memory.hpp — memory spaces. Every view and tensor carries one in its type, and
// the backend that runs an operation is chosen by the space of its operands: Host lowers to
// backend/cpu (Eigen, oneDNN), Device to backend/cuda.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

#include "error.hpp"

namespace bonsai {

/// Ordinary CPU memory.
struct Host {
  static constexpr const char* name = "host";
};
/// GPU global memory; allocating it needs bonsai/cuda.hpp.
struct Device {
  static constexpr const char* name = "device";
};

/// Allocates and zeroes raw bytes in a memory space. backend/cuda specialises it for Device.
template <class Space>
struct Allocator {
  static_assert(detail::dependent_false<Space>,
                "no allocator for this memory space: include <bonsai/cuda.hpp> to allocate "
                "Device tensors");
};

template <>
struct Allocator<Host> {
  /// 64-byte aligned (one cache line, one AVX-512 register).
  static constexpr std::size_t alignment = 64;
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    const std::size_t rounded = (bytes + alignment - 1) / alignment * alignment;
    void* p = std::aligned_alloc(alignment, rounded);
    if (!p) throw std::bad_alloc();
    return p;
  }
  static void deallocate(void* p) noexcept { std::free(p); }
  static void zero(void* p, std::size_t bytes) noexcept { std::memset(p, 0, bytes); }
};

}  // namespace bonsai
