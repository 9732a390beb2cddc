// bonsai/backend/cuda/rope.cuh — rotary position embeddings on the GPU, the counterparts of
// backend/cpu/rope.hpp (non-interleaved "rotate half", GPT-NeoX / Llama): in every query and key
// head, the pair (x_i, x_{i+hd/2}) at position p is rotated by the angle p · base^(−2i/hd) to
// (x_i cos − x_{i+hd/2} sin, x_{i+hd/2} cos + x_i sin); backward applies the inverse (transposed)
// rotation to the gradients.
//
// Layout of the packed activations, as in backend/cpu/attention.hpp (row b*T + t is token t of
// sequence b, at position pos + t):
//   qkv (B*T, A + 2KV): query heads at columns [0, A), key heads at [A, A + KV), values at
//       [A + KV, A + 2KV), with A = Hq*hd, KV = Hkv*hd. Columns [0, (Hq + Hkv) hd) rotate, in
//       place; the values are left alone.
//   cos, sin (max_T, hd/2) float: the angles' cosines and sines, computed in double on the host.
//
// One launch per call: each thread owns V consecutive pairs (x_i.., x_{i+hd/2}..) of one head in
// one row (V = 16 / sizeof(T) with 16-byte loads and stores when every row and half-head is
// 16-byte aligned, else V = 1), so consecutive threads touch consecutive addresses. A block holds
// 256 threads: a power-of-two number of them per row (at least a warp, at most 256) and several
// rows when rows are short. Arithmetic is in float for float and bf16.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../../core/tensor.hpp"
#include "../attention_shape.hpp"
#include "../cpu/rope.hpp"
#include "vector.cuh"
#include "error.cuh"
#include "memory.cuh"
#include "runtime.cuh"

namespace bonsai::cuda {

/// cos and sin of every rotation angle on the device, (max_T, hd/2) float each:
/// angle(p, i) = p · base^(−2i/hd), computed in double on the host (the CPU RopeTable's formula)
/// and rounded to float.
class RopeTable {
 public:
  RopeTable() = default;

  /// Builds the table of positions [0, max_seq) for heads of width head_dim (even).
  RopeTable(index_t max_seq, index_t head_dim, double base = 10000.0) : m_head_dim(head_dim), m_base(base) {
    BONSAI_CHECK(max_seq > 0 && head_dim > 0 && head_dim % 2 == 0 && base > 0,
                 "cuda::RopeTable: needs max_seq > 0, an even head_dim > 0 and base > 0, got max_seq = ",
                 max_seq, ", head_dim = ", head_dim, ", base = ", base);
    const index_t half = head_dim / 2;
    Tensor<float, 2> c(max_seq, half), s(max_seq, half);  // (max_T, hd/2)
    for (index_t i = 0; i < half; ++i) {
      const double inv_freq = std::pow(base, -2.0 * double(i) / double(head_dim));
      for (index_t p = 0; p < max_seq; ++p) {
        const double angle = double(p) * inv_freq;
        c(p, i) = static_cast<float>(std::cos(angle));
        s(p, i) = static_cast<float>(std::sin(angle));
      }
    }
    upload(c, s);
  }

  /// A device copy of a CPU table, its entries converted to float.
  template <class U>
  explicit RopeTable(const cpu::RopeTable<U>& host) : m_head_dim(host.head_dim()), m_base(host.base()) {
    const index_t rows = host.max_seq(), half = host.head_dim() / 2;
    if (rows == 0 || half == 0) return;
    Tensor<float, 2> c(rows, half), s(rows, half);  // (max_T, hd/2)
    for (index_t p = 0; p < rows; ++p) {
      const U* cp = host.cos(p);
      const U* sp = host.sin(p);
      for (index_t i = 0; i < half; ++i) {
        c(p, i) = convert<float>(cp[i]);
        s(p, i) = convert<float>(sp[i]);
      }
    }
    upload(c, s);
  }

  index_t max_seq() const noexcept { return m_cos.rows(); }
  index_t head_dim() const noexcept { return m_head_dim; }
  double base() const noexcept { return m_base; }
  /// The device tables, (max_T, hd/2) row-major: cos(p, i) = cos()[p * hd/2 + i].
  const float* cos() const noexcept { return m_cos.data(); }
  const float* sin() const noexcept { return m_sin.data(); }
  MatrixView<const float, Device> cos_view() const { return m_cos.view(); }  // (max_T, hd/2)
  MatrixView<const float, Device> sin_view() const { return m_sin.view(); }  // (max_T, hd/2)

 private:
  void upload(Tensor<float, 2>& c, Tensor<float, 2>& s) {
    m_cos = Tensor<float, 2, Device>(c.rows(), c.cols());
    m_sin = Tensor<float, 2, Device>(s.rows(), s.cols());
    cuda::copy(m_cos.view(), c.view());
    cuda::copy(m_sin.view(), s.view());
  }

  Tensor<float, 2, Device> m_cos, m_sin;  // (max_T, hd/2)
  index_t m_head_dim = 0;
  double m_base = 10000.0;
};

namespace detail {

inline constexpr int rope_threads = 256;  // threads per block

/// V consecutive floats of a table row (16-byte aligned when V is a multiple of 4).
template <int V>
__device__ __forceinline__ void rope_load_table(const float* p, float (&v)[V]) {
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int q = 0; q < V / 4; ++q) {
      const float4 w = reinterpret_cast<const float4*>(p)[q];
      v[4 * q] = w.x;
      v[4 * q + 1] = w.y;
      v[4 * q + 2] = w.z;
      v[4 * q + 3] = w.w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] = p[e];
  }
}

/// Rotates the query and key columns [0, (Hq + Hkv) · 2 half) of x (rows, ·), row stride ld, in
/// place (units = (Hq + Hkv) · half / V): row r is at
/// position pos + r % seq; `sign` = +1 is the forward rotation, −1 its inverse. Thread
/// (threadIdx.x, threadIdx.y) of block b handles row b · blockDim.y + threadIdx.y and the units
/// u = threadIdx.x, threadIdx.x + blockDim.x, ... < units of it, unit u being pairs
/// [i, i + V) of head u / (half / V), i = (u % (half / V)) · V.
template <class T, int V>
__global__ void __launch_bounds__(rope_threads)
    rope_kernel(T* __restrict__ x, index_t ld, index_t rows, index_t seq, index_t pos,
                const float* __restrict__ cos_table, const float* __restrict__ sin_table, int half,
                int units, float sign) {
  const index_t row = static_cast<index_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const index_t p = pos + row % seq;
  const float* cp = cos_table + p * half;
  const float* sp = sin_table + p * half;
  T* xr = x + row * ld;
  const int per_head = half / V;
  for (int u = threadIdx.x; u < units; u += blockDim.x) {
    const int head = u / per_head;
    const int i = (u - head * per_head) * V;
    T* a = xr + static_cast<index_t>(head) * (2 * half) + i;
    T* b = a + half;
    float x1[V], x2[V], c[V], s[V];
    load_vec<T, V>(a, x1);
    load_vec<T, V>(b, x2);
    rope_load_table<V>(cp + i, c);
    rope_load_table<V>(sp + i, s);
    float y1[V], y2[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float se = sign * s[e];
      y1[e] = x1[e] * c[e] - x2[e] * se;
      y2[e] = x2[e] * c[e] + x1[e] * se;
    }
    store_vec<T, V>(a, y1);
    store_vec<T, V>(b, y2);
  }
}

/// The shared body of rope_forward and rope_backward: the CPU backend's checks, then one launch.
template <class T>
void rope_apply(const char* who, const AttentionShape& s, const RopeTable& table,
                const MatrixView<T, Device>& x, index_t pos, float sign) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>, "RoPE runs on float and bf16");
  cpu::detail::check_rope(who, s, x.rows(), x.cols(), x.stride(1), table.head_dim(), table.max_seq(), pos);
  const index_t half = s.head_dim / 2, rotated = s.heads + s.kv_heads;
  BONSAI_CHECK(rotated * half <= index_t(INT32_MAX), who, ": ", s, " has too many rotated columns");

  constexpr int V16 = Vec16<T>::size;
  // 16-byte vectors need whole vectors per half-head, and 16-byte aligned rows.
  const bool vec = half % V16 == 0 && reinterpret_cast<std::uintptr_t>(x.data()) % 16 == 0 &&
                   (x.ld() * index_t(sizeof(T))) % 16 == 0;
  const int V = vec ? V16 : 1;
  const int units = static_cast<int>(rotated * (half / V));
  int row_threads = 32;
  while (row_threads < units && row_threads < rope_threads) row_threads *= 2;
  const int rows_per_block = rope_threads / row_threads;
  const dim3 block(static_cast<unsigned>(row_threads), static_cast<unsigned>(rows_per_block));
  const index_t blocks = (x.rows() + rows_per_block - 1) / rows_per_block;
  BONSAI_CHECK(blocks <= index_t(INT32_MAX), who, ": ", x.rows(), " rows are too many for one launch");
  const dim3 grid(static_cast<unsigned>(blocks));
  if (vec)
    rope_kernel<T, V16><<<grid, block, 0, runtime().stream()>>>(
        x.data(), x.ld(), x.rows(), s.seq, pos, table.cos(), table.sin(), static_cast<int>(half), units, sign);
  else
    rope_kernel<T, 1><<<grid, block, 0, runtime().stream()>>>(
        x.data(), x.ld(), x.rows(), s.seq, pos, table.cos(), table.sin(), static_cast<int>(half), units, sign);
  BONSAI_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace detail

/// Rotates the queries and keys of qkv (B*T, A + 2KV) in place: in each head the pair
/// (x_i, x_{i+hd/2}) of row b*T + t becomes (x_i cos θ − x_{i+hd/2} sin θ, x_{i+hd/2} cos θ + x_i sin θ)
/// with θ = (pos + t) · base^(−2i/hd) (pos + T <= table.max_seq()). Values are untouched.
template <class T>
void rope_forward(const MatrixView<T, Device>& qkv, const AttentionShape& shape, const RopeTable& table,
                  index_t pos = 0) {
  detail::rope_apply<T>("rope_forward", shape, table, qkv, pos, 1.0f);
}

/// The transposed (inverse) rotation of rope_forward, θ → −θ, applied in place to the query and
/// key gradients of dqkv (B*T, A + 2KV); value gradients are untouched.
template <class T>
void rope_backward(const MatrixView<T, Device>& dqkv, const AttentionShape& shape, const RopeTable& table,
                   index_t pos = 0) {
  detail::rope_apply<T>("rope_backward", shape, table, dqkv, pos, -1.0f);
}

}  // namespace bonsai::cuda
