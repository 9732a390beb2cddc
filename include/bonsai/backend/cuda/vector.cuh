// bonsai/backend/cuda/vector.cuh — 16-byte vector access for memory-bound kernels: Vec16<T> is
// 16 bytes of T (4 floats, 8 bf16), and load_vec / store_vec move V consecutive elements of T
// to and from floats, as one 16-byte access when V > 1 (the pointer must then be 16-byte aligned).
#pragma once

namespace bonsai::cuda::detail {

/// 16 bytes of T: one vector load or store.
template <class T>
struct alignas(16) Vec16 {
  static constexpr int size = 16 / sizeof(T);
  T v[size];
};

/// V consecutive elements of T as floats: one 16-byte load when V > 1.
template <class T, int V>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[V]) {
  if constexpr (V == 1) {
    v[0] = static_cast<float>(*p);
  } else {
    static_assert(V == Vec16<T>::size, "vector loads are 16 bytes");
    const Vec16<T> w = *reinterpret_cast<const Vec16<T>*>(p);
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] = static_cast<float>(w.v[e]);
  }
}

/// Stores V floats as V consecutive elements of T: one 16-byte store when V > 1.
template <class T, int V>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[V]) {
  if constexpr (V == 1) {
    *p = static_cast<T>(v[0]);
  } else {
    static_assert(V == Vec16<T>::size, "vector stores are 16 bytes");
    Vec16<T> w;
#pragma unroll
    for (int e = 0; e < V; ++e) w.v[e] = static_cast<T>(v[e]);
    *reinterpret_cast<Vec16<T>*>(p) = w;
  }
}

}  // namespace bonsai::cuda::detail
