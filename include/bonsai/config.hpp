// bonsai/config.hpp — version, index type and portability macros shared by every header.
#pragma once

#include <cstdint>

#define BONSAI_VERSION_MAJOR 0
#define BONSAI_VERSION_MINOR 1
#define BONSAI_VERSION_PATCH 0

#if defined(__CUDACC__)
#  define BONSAI_HOST_DEVICE __forceinline__ __host__ __device__
#else
#  define BONSAI_HOST_DEVICE inline
#endif

namespace bonsai {

/// Signed index type for every extent, stride and count (64-bit: token counts times widths
/// overflow 32 bits on large models).
using index_t = std::int64_t;

/// The library version as "major.minor.patch".
inline constexpr const char* version_string() noexcept { return "0.1.0"; }

}  // namespace bonsai
