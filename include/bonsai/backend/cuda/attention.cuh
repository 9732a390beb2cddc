// bonsai/backend/cuda/attention.cuh — causal multi-head and grouped-query self-attention on packed
// qkv, fused and tiled (FlashAttention-2): query head h reads kv head g = h / (Hq / Hkv),
// O_h = softmax(Q_h K_gᵀ / √hd + causal mask) V_g with an online softmax over 64 × 64 score tiles
// that never leave the chip; forward saves only the row log-sum-exp L_t = ln Σ_{k ≤ t} e^{S[t, k]}.
// Backward recomputes P = exp(S − L) per tile: with D = rowsum(dO ⊙ O) and dS = P ⊙ (dO V_gᵀ − D),
// dV_g = Σ_h Pᵀ dO_h, dK_g = Σ_h dSᵀ Q_h / √hd, dQ_h = dS K_g / √hd.
//
// Layouts are the CPU backend's (backend/cpu/attention.hpp), row b*T + t for token t of sequence b:
//   qkv (B*T, A + 2KV): query head h at columns [h*hd, (h+1)*hd), key head g at [A + g*hd, ...),
//       value head g at [A + KV + g*hd, ...), with A = Hq*hd, KV = Hkv*hd
//   out (B*T, A): head h at columns [h*hd, (h+1)*hd)
//   lse (B, Hq, T) float: L_t in natural-log units
// Unlike the CPU backend, which saves the (B, Hq, T, T) probabilities, the device saves B*Hq*T
// floats, so memory grows linearly in T.
//
// Kernels (head widths 32, 64 and 128). float: 256 threads, a 16 × 16 grid of threads each
// holding a 4 × 4 block of scores, shared tiles in float, products by FMA in float. bf16 (rows of
// qkv and dout 16-byte aligned, else the float-tile kernels): 128 threads, 4 warps of 16 rows,
// every product (Q Kᵀ, P V, dO Vᵀ, Pᵀ dO, dSᵀ Q, dS K) on tensor cores (mma.sync m16n8k16, bf16
// operands, float accumulators); softmax statistics, the online rescaling and every sum stay in
// float, and P and dS are rounded to bf16 only as operands of the products that consume them.
//   forward   one block per (b, h, query tile): key tiles 0..i, online softmax, O and L.
//   delta     one warp per (b, h, t): D = rowsum(dO ⊙ O).
//   dK, dV    one block per (b, g, key tile j): query tiles j..end of each head of the group, in
//             order h = g·G, g·G + 1, ...; dK and dV stay in registers.
//   dQ        one block per (b, h, query tile i): key tiles 0..i; dQ stays in registers.
// Every output element is written by one thread with a fixed order of sums (no atomics), so results
// are deterministic; dQ recomputes the scores a second time instead of accumulating atomically.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../../core/tensor.hpp"
#include "../attention_shape.hpp"
#include "memory.cuh"
#include "runtime.cuh"

namespace bonsai::cuda {

/// What attention_forward keeps for attention_backward (the Workspace overloads).
template <class T>
struct AttentionState {
  Workspace<float, Device> lse;     // (B, Hq, T) L_t = ln Σ_{k ≤ t} exp(S[t, k]), written by forward
  Workspace<float, Device> delta;   // (B, Hq, T) D_t = Σ_d dO[t, d] O[t, d], backward scratch
  AttentionShape shape{};           // the forward's shape (all zero before the first forward)
  MatrixView<const T, Device> out;  // (B*T, A) the forward's output; backward reads it
};

namespace detail {

inline constexpr int attn_tile = 64;                  // query rows and keys per tile
inline constexpr int attn_threads = 256;              // 16 x 16 threads
inline constexpr int attn_score_ld = attn_tile + 16;  // row stride of a shared (64, 64) score tile
inline constexpr float attn_log2e = 1.4426950408889634f;
inline constexpr float attn_ln2 = 0.6931471805599453f;

/// Scalars of one call, passed by value to the kernels.
struct AttnArgs {
  index_t seq, heads, kv_heads, group, q_width, kv_width;
  float scale;       // 1 / √hd
  float scale_log2;  // log2(e) / √hd: scores in base-2 units for exp2f
};

inline AttnArgs attn_args(const AttentionShape& s) {
  const float scale = static_cast<float>(1.0 / std::sqrt(double(s.head_dim)));
  return {s.seq, s.heads, s.kv_heads, s.group(), s.q_width(), s.kv_width(), scale, scale * attn_log2e};
}

/// A (64, D) tile in shared memory has row stride D + 4 floats: rows start 16-byte aligned and
/// the 8 rows a quarter-warp reads as float4 fall in distinct banks. Thread (ty, tx) owns head
/// columns col(tx, k, e) = k·16·vec + tx·vec + e for k < groups, e < vec (D / 16 columns).
template <int D>
struct AttnCols {
  static_assert(D == 32 || D == 64 || D == 128, "head widths 32, 64 and 128");
  static constexpr int ld = D + 4;
  static constexpr int vec = D >= 64 ? 4 : 2;
  static constexpr int groups = D / (16 * vec);
  static constexpr int count = D / 16;
  __device__ static constexpr int col(int tx, int k, int e) { return k * 16 * vec + tx * vec + e; }
};

/// Shared floats of each kernel: (64, D) tiles, (64, 64) score tiles and per-row scalars.
template <int D>
constexpr std::size_t attn_forward_smem = sizeof(float) * (3 * attn_tile * (D + 4) + attn_tile * attn_score_ld);
template <int D>
constexpr std::size_t attn_dkv_smem =
    sizeof(float) * (4 * attn_tile * (D + 4) + 2 * attn_tile * attn_score_ld + 2 * attn_tile);
template <int D>
constexpr std::size_t attn_dq_smem =
    sizeof(float) * (4 * attn_tile * (D + 4) + attn_tile * attn_score_ld + 2 * attn_tile);

/// Rows of the tile starting at row r0 that lie inside a sequence of T: min(64, T − r0).
__device__ __forceinline__ int attn_rows(index_t T, index_t r0) {
  return T - r0 < attn_tile ? static_cast<int>(T - r0) : attn_tile;
}

/// dst[r][d] = src[r ld + d] for r < valid, 0 for valid <= r < 64; dst (64, D), row stride D + 4.
/// Consecutive threads read consecutive columns (coalesced) and write consecutive banks.
template <int D, class T>
__device__ __forceinline__ void attn_load_tile(float* dst, const T* src, index_t ld, int valid) {
  constexpr int L = AttnCols<D>::ld;
  for (int e = threadIdx.x; e < attn_tile * D; e += attn_threads) {
    const int r = e / D, d = e % D;
    dst[r * L + d] = r < valid ? static_cast<float>(src[r * ld + d]) : 0.0f;
  }
}

/// acc[i][j] += Σ_d A[ra + 16 i][d] B[rb + 16 j][d]: A, B (64, D) shared tiles, row stride D + 4.
template <int D>
__device__ __forceinline__ void attn_dot(float (&acc)[4][4], const float* A, int ra, const float* B, int rb) {
  constexpr int L = AttnCols<D>::ld;
#pragma unroll 2
  for (int d = 0; d < D; d += 4) {
    float4 a[4], b[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = *reinterpret_cast<const float4*>(A + (ra + 16 * i) * L + d);
#pragma unroll
    for (int j = 0; j < 4; ++j) b[j] = *reinterpret_cast<const float4*>(B + (rb + 16 * j) * L + d);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float v = acc[i][j];
        v = fmaf(a[i].x, b[j].x, v);
        v = fmaf(a[i].y, b[j].y, v);
        v = fmaf(a[i].z, b[j].z, v);
        v = fmaf(a[i].w, b[j].w, v);
        acc[i][j] = v;
      }
  }
}

__device__ __forceinline__ float attn_component(const float4& v, int u) {
  return u == 0 ? v.x : u == 1 ? v.y : u == 2 ? v.z : v.w;
}

/// acc[i][k vec + e] += Σ_c P[r + 16 i][c] X[c][col(tx, k, e)] over c < 64: P (64, 64) with row
/// stride attn_score_ld, X (64, D) with row stride D + 4.
template <int D>
__device__ __forceinline__ void attn_pv(float (&acc)[4][AttnCols<D>::count], const float* P, int r,
                                        const float* X, int tx) {
  using C = AttnCols<D>;
  constexpr int L = C::ld;
#pragma unroll 2
  for (int c = 0; c < attn_tile; c += 4) {
    float4 p[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = *reinterpret_cast<const float4*>(P + (r + 16 * i) * attn_score_ld + c);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      float x[C::count];
      const float* row = X + (c + u) * L;
#pragma unroll
      for (int k = 0; k < C::groups; ++k) {
        if constexpr (C::vec == 4) {
          const float4 v = *reinterpret_cast<const float4*>(row + C::col(tx, k, 0));
          x[4 * k] = v.x;
          x[4 * k + 1] = v.y;
          x[4 * k + 2] = v.z;
          x[4 * k + 3] = v.w;
        } else {
          const float2 v = *reinterpret_cast<const float2*>(row + C::col(tx, k, 0));
          x[2 * k] = v.x;
          x[2 * k + 1] = v.y;
        }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float pu = attn_component(p[i], u);
#pragma unroll
        for (int n = 0; n < C::count; ++n) acc[i][n] = fmaf(pu, x[n], acc[i][n]);
      }
    }
  }
}

/// Max and sum over the 16 threads of a score row (lanes that differ in their low 4 bits);
/// every lane gets the same bits.
__device__ __forceinline__ float attn_row_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float attn_row_sum(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Forward of query tile i = gridDim.y − 1 − blockIdx.y (the longest first) of (b, h) = blockIdx.x:
/// for key tiles 0..i, S = Q Kᵀ / √hd (masked above the diagonal), running max m and sum l,
/// acc = acc·e^{m_old − m} + e^{S − m} V; then O = acc / l and L = m + ln l.
///   qkv (B*T, A + 2KV), out (B*T, A), lse (B, Hq, T)
template <class T, int D>
__global__ void __launch_bounds__(attn_threads)
    attention_forward_kernel(const T* qkv, index_t ldq, T* out, index_t ldo, float* lse, AttnArgs a) {
  using C = AttnCols<D>;
  constexpr int L = C::ld;
  extern __shared__ float4 attn_shared[];
  float* Qs = reinterpret_cast<float*>(attn_shared);  // (64, D) queries
  float* Ks = Qs + attn_tile * L;                      // (64, D) keys
  float* Vs = Ks + attn_tile * L;                      // (64, D) values
  float* Ps = Vs + attn_tile * L;                      // (64, 64) probabilities, unnormalised
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const index_t Tn = a.seq, bh = blockIdx.x, b = bh / a.heads, h = bh % a.heads, g = h / a.group;
  const int qi = static_cast<int>(gridDim.y - 1 - blockIdx.y);
  const index_t q0 = index_t(qi) * attn_tile;
  const T* base = qkv + b * Tn * ldq;  // row 0 of sequence b
  attn_load_tile<D>(Qs, base + q0 * ldq + h * D, ldq, attn_rows(Tn, q0));

  float m[4], l[4], acc[4][C::count];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int n = 0; n < C::count; ++n) acc[i][n] = 0.0f;
  }
  for (int kj = 0; kj <= qi; ++kj) {
    const index_t k0 = index_t(kj) * attn_tile;
    const int krows = attn_rows(Tn, k0);
    __syncthreads();  // the previous tile's readers of Ks, Vs and Ps are done
    attn_load_tile<D>(Ks, base + k0 * ldq + a.q_width + g * D, ldq, krows);
    attn_load_tile<D>(Vs, base + k0 * ldq + a.q_width + a.kv_width + g * D, ldq, krows);
    __syncthreads();
    float s[4][4] = {};
    attn_dot<D>(s, Qs, ty, Ks, tx);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const index_t row = q0 + ty + 16 * i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const index_t col = k0 + tx + 16 * j;
        s[i][j] = col <= row && col < Tn ? s[i][j] * a.scale_log2 : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      // Key 0 is in the first tile and unmasked for every row, so m is finite from then on.
      const float m_new = fmaxf(m[i], attn_row_max(mx));
      const float alpha = exp2f(m[i] - m_new);  // 0 on the first tile (m = −inf)
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = exp2f(s[i][j] - m_new);  // masked: exp2(−inf) = 0
        Ps[(ty + 16 * i) * attn_score_ld + tx + 16 * j] = p;
        sum += p;
      }
      l[i] = l[i] * alpha + attn_row_sum(sum);
      m[i] = m_new;
#pragma unroll
      for (int n = 0; n < C::count; ++n) acc[i][n] *= alpha;
    }
    __syncthreads();
    attn_pv<D>(acc, Ps, ty, Vs, tx);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const index_t t = q0 + ty + 16 * i;
    if (t >= Tn) continue;
    const float inv = 1.0f / l[i];
    T* o = out + (b * Tn + t) * ldo + h * D;
#pragma unroll
    for (int k = 0; k < C::groups; ++k)
#pragma unroll
      for (int e = 0; e < C::vec; ++e) o[C::col(tx, k, e)] = static_cast<T>(acc[i][k * C::vec + e] * inv);
    if (tx == 0) lse[bh * Tn + t] = (m[i] + log2f(l[i])) * attn_ln2;
  }
}

/// delta[(b Hq + h) T + t] = Σ_d dout[b T + t, h hd + d] out[b T + t, h hd + d]: one warp per
/// (b, h, t), lanes over d, a fixed shuffle tree.
template <class T>
__global__ void __launch_bounds__(256)
    attention_delta_kernel(const T* out, index_t ldo, const T* dout, index_t ldd, float* delta, AttnArgs a,
                           int head_dim, index_t count) {
  const index_t w = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= count) return;  // whole warps only: count is per warp
  const index_t Tn = a.seq, t = w % Tn, h = (w / Tn) % a.heads, b = w / (Tn * a.heads);
  const index_t off_o = (b * Tn + t) * ldo + h * head_dim, off_d = (b * Tn + t) * ldd + h * head_dim;
  float sum = 0.0f;
  for (int d = lane; d < head_dim; d += 32)
    sum = fmaf(static_cast<float>(dout[off_d + d]), static_cast<float>(out[off_o + d]), sum);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) delta[w] = sum;
}

/// dK, dV of key tile j = blockIdx.y of (b, g) = blockIdx.x: for each query head h of the group
/// in order and each query tile i >= j, Pᵀ = exp(K Qᵀ / √hd − L) (masked), dPᵀ = V dOᵀ,
/// dSᵀ = Pᵀ ⊙ (dPᵀ − D), dV += Pᵀ dO, dK += dSᵀ Q; dK is scaled by 1/√hd at the end.
///   qkv (B*T, A + 2KV), dout (B*T, A), lse and delta (B, Hq, T), dqkv (B*T, A + 2KV): dK, dV columns
template <class T, int D>
__global__ void __launch_bounds__(attn_threads)
    attention_dkv_kernel(const T* qkv, index_t ldq, const T* dout, index_t ldd, const float* lse,
                         const float* delta, T* dqkv, index_t ldg, AttnArgs a) {
  using C = AttnCols<D>;
  constexpr int L = C::ld;
  extern __shared__ float4 attn_shared[];
  float* Ks = reinterpret_cast<float*>(attn_shared);  // (64, D) keys of this tile
  float* Vs = Ks + attn_tile * L;                      // (64, D) values of this tile
  float* Qs = Vs + attn_tile * L;                      // (64, D) queries of tile i
  float* dOs = Qs + attn_tile * L;                     // (64, D) dO of tile i
  float* Pt = dOs + attn_tile * L;                     // (64 keys, 64 queries) Pᵀ
  float* dSt = Pt + attn_tile * attn_score_ld;         // (64 keys, 64 queries) dSᵀ
  float* Ls = dSt + attn_tile * attn_score_ld;         // (64) L of tile i, base-2 units
  float* Ds = Ls + attn_tile;                          // (64) D of tile i
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const index_t Tn = a.seq, bg = blockIdx.x, b = bg / a.kv_heads, g = bg % a.kv_heads;
  const int kj = static_cast<int>(blockIdx.y), nq = static_cast<int>(gridDim.y);
  const index_t k0 = index_t(kj) * attn_tile;
  const T* base = qkv + b * Tn * ldq;
  const int krows = attn_rows(Tn, k0);
  attn_load_tile<D>(Ks, base + k0 * ldq + a.q_width + g * D, ldq, krows);
  attn_load_tile<D>(Vs, base + k0 * ldq + a.q_width + a.kv_width + g * D, ldq, krows);

  float dk[4][C::count], dv[4][C::count];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int n = 0; n < C::count; ++n) dk[i][n] = dv[i][n] = 0.0f;

  for (index_t h = g * a.group; h < (g + 1) * a.group; ++h) {
    const index_t bh = b * a.heads + h;
    for (int qi = kj; qi < nq; ++qi) {
      const index_t q0 = index_t(qi) * attn_tile;
      const int qrows = attn_rows(Tn, q0);
      __syncthreads();  // the previous tile's readers of Qs, dOs, Pt, dSt, Ls, Ds are done
      attn_load_tile<D>(Qs, base + q0 * ldq + h * D, ldq, qrows);
      attn_load_tile<D>(dOs, dout + (b * Tn + q0) * ldd + h * D, ldd, qrows);
      for (int r = threadIdx.x; r < attn_tile; r += attn_threads) {
        Ls[r] = r < qrows ? lse[bh * Tn + q0 + r] * attn_log2e : 0.0f;
        Ds[r] = r < qrows ? delta[bh * Tn + q0 + r] : 0.0f;
      }
      __syncthreads();
      float st[4][4] = {}, dpt[4][4] = {};
      attn_dot<D>(st, Ks, ty, Qs, tx);   // st[i][j] = K[ty + 16i] · Q[tx + 16j]
      attn_dot<D>(dpt, Vs, ty, dOs, tx);  // dpt[i][j] = V[ty + 16i] · dO[tx + 16j]
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const index_t key = k0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int rl = tx + 16 * j;
          const index_t query = q0 + rl;
          const float p = query < Tn && key <= query ? exp2f(st[i][j] * a.scale_log2 - Ls[rl]) : 0.0f;
          Pt[(ty + 16 * i) * attn_score_ld + rl] = p;
          dSt[(ty + 16 * i) * attn_score_ld + rl] = p * (dpt[i][j] - Ds[rl]);
        }
      }
      __syncthreads();
      attn_pv<D>(dv, Pt, ty, dOs, tx);
      attn_pv<D>(dk, dSt, ty, Qs, tx);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const index_t key = k0 + ty + 16 * i;
    if (key >= Tn) continue;
    T* gk = dqkv + (b * Tn + key) * ldg + a.q_width + g * D;
    T* gv = gk + a.kv_width;
#pragma unroll
    for (int k = 0; k < C::groups; ++k)
#pragma unroll
      for (int e = 0; e < C::vec; ++e) {
        gk[C::col(tx, k, e)] = static_cast<T>(dk[i][k * C::vec + e] * a.scale);
        gv[C::col(tx, k, e)] = static_cast<T>(dv[i][k * C::vec + e]);
      }
  }
}

/// dQ of query tile i = gridDim.y − 1 − blockIdx.y of (b, h) = blockIdx.x: for key tiles 0..i,
/// P = exp(Q Kᵀ / √hd − L) (masked), dS = P ⊙ (dO Vᵀ − D), dQ += dS K; scaled by 1/√hd at the end.
///   qkv (B*T, A + 2KV), dout (B*T, A), lse and delta (B, Hq, T), dqkv (B*T, A + 2KV): dQ columns
template <class T, int D>
__global__ void __launch_bounds__(attn_threads)
    attention_dq_kernel(const T* qkv, index_t ldq, const T* dout, index_t ldd, const float* lse,
                        const float* delta, T* dqkv, index_t ldg, AttnArgs a) {
  using C = AttnCols<D>;
  constexpr int L = C::ld;
  extern __shared__ float4 attn_shared[];
  float* Qs = reinterpret_cast<float*>(attn_shared);  // (64, D) queries of this tile
  float* dOs = Qs + attn_tile * L;                     // (64, D) dO of this tile
  float* Ks = dOs + attn_tile * L;                     // (64, D) keys of tile j
  float* Vs = Ks + attn_tile * L;                      // (64, D) values of tile j
  float* Ss = Vs + attn_tile * L;                      // (64 queries, 64 keys) dS
  float* Ls = Ss + attn_tile * attn_score_ld;          // (64) L, base-2 units
  float* Ds = Ls + attn_tile;                          // (64) D
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const index_t Tn = a.seq, bh = blockIdx.x, b = bh / a.heads, h = bh % a.heads, g = h / a.group;
  const int qi = static_cast<int>(gridDim.y - 1 - blockIdx.y);
  const index_t q0 = index_t(qi) * attn_tile;
  const int qrows = attn_rows(Tn, q0);
  const T* base = qkv + b * Tn * ldq;
  attn_load_tile<D>(Qs, base + q0 * ldq + h * D, ldq, qrows);
  attn_load_tile<D>(dOs, dout + (b * Tn + q0) * ldd + h * D, ldd, qrows);
  for (int r = threadIdx.x; r < attn_tile; r += attn_threads) {
    Ls[r] = r < qrows ? lse[bh * Tn + q0 + r] * attn_log2e : 0.0f;
    Ds[r] = r < qrows ? delta[bh * Tn + q0 + r] : 0.0f;
  }
  float dq[4][C::count];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int n = 0; n < C::count; ++n) dq[i][n] = 0.0f;

  for (int kj = 0; kj <= qi; ++kj) {
    const index_t k0 = index_t(kj) * attn_tile;
    const int krows = attn_rows(Tn, k0);
    __syncthreads();  // the previous tile's readers of Ks and Ss are done
    attn_load_tile<D>(Ks, base + k0 * ldq + a.q_width + g * D, ldq, krows);
    attn_load_tile<D>(Vs, base + k0 * ldq + a.q_width + a.kv_width + g * D, ldq, krows);
    __syncthreads();
    float s[4][4] = {}, dp[4][4] = {};
    attn_dot<D>(s, Qs, ty, Ks, tx);   // s[i][j] = Q[ty + 16i] · K[tx + 16j]
    attn_dot<D>(dp, dOs, ty, Vs, tx);  // dp[i][j] = dO[ty + 16i] · V[tx + 16j]
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int rl = ty + 16 * i;
      const index_t query = q0 + rl;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const index_t key = k0 + tx + 16 * j;
        const float p = query < Tn && key <= query ? exp2f(s[i][j] * a.scale_log2 - Ls[rl]) : 0.0f;
        Ss[rl * attn_score_ld + tx + 16 * j] = p * (dp[i][j] - Ds[rl]);
      }
    }
    __syncthreads();
    attn_pv<D>(dq, Ss, ty, Ks, tx);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const index_t query = q0 + ty + 16 * i;
    if (query >= Tn) continue;
    T* gq = dqkv + (b * Tn + query) * ldg + h * D;
#pragma unroll
    for (int k = 0; k < C::groups; ++k)
#pragma unroll
      for (int e = 0; e < C::vec; ++e) gq[C::col(tx, k, e)] = static_cast<T>(dq[i][k * C::vec + e] * a.scale);
  }
}

// ---------------------------------------------------------------------------------------------
// bf16 kernels on tensor cores (mma.sync m16n8k16, bf16 operands, float accumulators). 128
// threads = 4 warps; warp w owns rows 16w..16w+15 of the block's own 64-row tile (queries in
// forward and dQ, keys in dK/dV) and all 64 columns of each score tile it pairs them with. Shared
// tiles are bf16 with row stride D + 8 (rows 16-byte aligned, ldmatrix conflict-free), filled
// by cp.async, double-buffered so the next tile loads during the current one's products.
//
// Fragments (lane = 4·gid + tig): an accumulator tile of 16 rows × 8 columns holds rows gid and
// gid + 8, columns 2 tig and 2 tig + 1 per lane; two such tiles side by side are, packed to bf16
// pairs, the A operand of the next product, so P and dS go from registers straight into P V,
// Pᵀ dO, dSᵀ Q and dS K.

inline constexpr int attn_mma_threads = 128;  // 4 warps of 16 rows

/// Shared bytes of the bf16 kernels: (64, D) bf16 tiles of row stride D + 8, and per-row floats.
template <int D>
constexpr std::size_t attn_tc_tile_bytes = sizeof(bf16) * attn_tile * (D + 8);
template <int D>
constexpr std::size_t attn_tc_forward_smem = 5 * attn_tc_tile_bytes<D>;  // Q, 2 × (K, V)
template <int D>
constexpr std::size_t attn_tc_dkv_smem = 6 * attn_tc_tile_bytes<D> + 4 * attn_tile * sizeof(float);
template <int D>
constexpr std::size_t attn_tc_dq_smem = 6 * attn_tc_tile_bytes<D>;  // Q, dO, 2 × (K, V)

__device__ __forceinline__ unsigned attn_smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

/// dst[r][c] = src[r ld + c] for r < valid (16-byte cp.async), 0 for valid <= r < 64: dst (64, D)
/// bf16 with row stride D + 8; src 16-byte aligned with ld a multiple of 8. Completes at the next
/// attn_cp_wait; the zero rows are plain stores.
template <int D>
__device__ __forceinline__ void attn_tc_load(bf16* dst, const bf16* src, index_t ld, int valid) {
  constexpr int L = D + 8, chunks = D / 8;
  for (int e = threadIdx.x; e < attn_tile * chunks; e += attn_mma_threads) {
    const int r = e / chunks, c = (e % chunks) * 8;
    bf16* d = dst + r * L + c;
    if (r < valid) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(attn_smem_addr(d)), "l"(src + r * ld + c)
                   : "memory");
    } else {
      *reinterpret_cast<uint4*>(d) = make_uint4(0u, 0u, 0u, 0u);
    }
  }
}
__device__ __forceinline__ void attn_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void attn_cp_wait() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/// Four 8 × 8 bf16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, and each lane
/// gets, of matrix i in r[i], row gid, columns 2 tig, 2 tig + 1 (trans: rows 2 tig, 2 tig + 1 of
/// column gid).
__device__ __forceinline__ void attn_ldsm(unsigned (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(attn_smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void attn_ldsm_trans(unsigned (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(attn_smem_addr(p))
               : "memory");
}

/// A operand: the 16 × 16 block X[r0 + m][c0 + k] of a bf16 tile of row stride L.
template <int L>
__device__ __forceinline__ void attn_frag_a(unsigned (&a)[4], const bf16* X, int r0, int c0) {
  const int lane = threadIdx.x % 32, mi = lane / 8, r = lane % 8;
  attn_ldsm(a, X + (r0 + (mi & 1) * 8 + r) * L + c0 + (mi >> 1) * 8);
}
/// B operands of two 8-column tiles, B[k][n] = Y[n0 + n][k0 + k] (Y rows run over n): b[0], b[1]
/// for columns n0..n0+7, b[2], b[3] for n0+8..n0+15.
template <int L>
__device__ __forceinline__ void attn_frag_b_nk(unsigned (&b)[4], const bf16* Y, int n0, int k0) {
  const int lane = threadIdx.x % 32, mi = lane / 8, r = lane % 8;
  attn_ldsm(b, Y + (n0 + (mi >> 1) * 8 + r) * L + k0 + (mi & 1) * 8);
}
/// The same for B[k][n] = Y[k0 + k][n0 + n] (Y rows run over k), by transposing loads.
template <int L>
__device__ __forceinline__ void attn_frag_b_kn(unsigned (&b)[4], const bf16* Y, int k0, int n0) {
  const int lane = threadIdx.x % 32, mi = lane / 8, r = lane % 8;
  attn_ldsm_trans(b, Y + (k0 + (mi & 1) * 8 + r) * L + n0 + (mi >> 1) * 8);
}

/// c += A B for a 16 × 16 A and a 16 × 8 B (bf16), c float.
__device__ __forceinline__ void attn_mma(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// Two floats rounded to a bf16 pair, lo in the low half (the lower column of a fragment).
__device__ __forceinline__ unsigned attn_pack(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  unsigned u;
  memcpy(&u, &v, sizeof(u));
  return u;
}

/// The A operand of columns 16 kk..16 kk + 15 of a 16 × 64 accumulator s[8][4], rounded to bf16.
__device__ __forceinline__ void attn_to_a(unsigned (&a)[4], const float (&s)[8][4], int kk) {
  a[0] = attn_pack(s[2 * kk][0], s[2 * kk][1]);
  a[1] = attn_pack(s[2 * kk][2], s[2 * kk][3]);
  a[2] = attn_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = attn_pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

/// s[8][4] += X[r0..r0+15] Y[0..63]ᵀ: rows of the bf16 tile X against rows of Y, over D; only
/// the 16-row blocks lo <= np < hi of Y (columns 16 np..16 np + 15 of s; the rest stay as they were).
template <int D>
__device__ __forceinline__ void attn_tc_scores(float (&s)[8][4], const bf16* X, int r0, const bf16* Y, int lo,
                                               int hi) {
  constexpr int L = D + 8;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    unsigned xa[4];
    attn_frag_a<L>(xa, X, r0, 16 * ks);
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      if (np < lo || np >= hi) continue;
      unsigned yb[4];
      attn_frag_b_nk<L>(yb, Y, 16 * np, 16 * ks);
      attn_mma(s[2 * np], xa, yb[0], yb[1]);
      attn_mma(s[2 * np + 1], xa, yb[2], yb[3]);
    }
  }
}

/// acc[D/8][4] += S Y: S a 16 × 64 accumulator (rounded to bf16), Y a (64, D) bf16 tile; only
/// the columns 16 kk..16 kk + 15 of S with lo <= kk < hi (the others must be zero).
template <int D>
__device__ __forceinline__ void attn_tc_apply(float (&acc)[D / 8][4], const float (&s)[8][4], const bf16* Y, int lo,
                                              int hi) {
  constexpr int L = D + 8;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    if (kk < lo || kk >= hi) continue;
    unsigned sa[4];
    attn_to_a(sa, s, kk);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      unsigned yb[4];
      attn_frag_b_kn<L>(yb, Y, 16 * kk, 16 * dp);
      attn_mma(acc[2 * dp], sa, yb[0], yb[1]);
      attn_mma(acc[2 * dp + 1], sa, yb[2], yb[3]);
    }
  }
}

/// rows[t] = static_cast<bf16>(acc · mul) for the two rows (r0, r0 + 8) a lane holds, where they
/// are below Tn: row r of the output starts at out + r ld.
template <int D>
__device__ __forceinline__ void attn_tc_store(bf16* out, index_t ld, const float (&acc)[D / 8][4], index_t row0,
                                              index_t Tn, float mul0, float mul1) {
  const int tig = threadIdx.x % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const index_t row = row0 + 8 * half;
    if (row >= Tn) continue;
    const float mul = half ? mul1 : mul0;
    bf16* o = out + row * ld;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[8 * n + 2 * tig] = __float2bfloat16_rn(acc[n][2 * half] * mul);
      o[8 * n + 2 * tig + 1] = __float2bfloat16_rn(acc[n][2 * half + 1] * mul);
    }
  }
}

/// attention_forward_kernel on tensor cores (bf16): query tile i = gridDim.y − 1 − blockIdx.y of
/// (b, h) = blockIdx.x, S = Q Kᵀ and acc += P V by mma; the statistics m, l stay in float.
template <int D>
__global__ void __launch_bounds__(attn_mma_threads)
    attention_forward_tc_kernel(const bf16* qkv, index_t ldq, bf16* out, index_t ldo, float* lse, AttnArgs a) {
  constexpr int TL = attn_tile * (D + 8);
  extern __shared__ float4 attn_shared[];
  bf16* Qs = reinterpret_cast<bf16*>(attn_shared);  // (64, D) queries
  bf16* KV = Qs + TL;                                // 2 buffers of (64, D) keys then (64, D) values
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const index_t Tn = a.seq, bh = blockIdx.x, b = bh / a.heads, h = bh % a.heads, g = h / a.group;
  const int qi = static_cast<int>(gridDim.y - 1 - blockIdx.y);
  const index_t q0 = index_t(qi) * attn_tile;
  const bf16* base = qkv + b * Tn * ldq;  // row 0 of sequence b
  const bf16* kbase = base + a.q_width + g * D;
  const bf16* vbase = kbase + a.kv_width;
  attn_tc_load<D>(Qs, base + q0 * ldq + h * D, ldq, attn_rows(Tn, q0));
  attn_tc_load<D>(KV, kbase, ldq, attn_rows(Tn, 0));
  attn_tc_load<D>(KV + TL, vbase, ldq, attn_rows(Tn, 0));
  attn_cp_commit();

  const index_t row0 = q0 + 16 * warp + gid;  // this lane's rows: row0 and row0 + 8
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  for (int kj = 0; kj <= qi; ++kj) {
    attn_cp_wait();
    __syncthreads();  // tile kj is in; every warp is done with tile kj − 1, whose buffer is refilled
    if (kj < qi) {
      const index_t k1 = index_t(kj + 1) * attn_tile;
      bf16* next = KV + 2 * TL * ((kj + 1) & 1);
      attn_tc_load<D>(next, kbase + k1 * ldq, ldq, attn_rows(Tn, k1));
      attn_tc_load<D>(next + TL, vbase + k1 * ldq, ldq, attn_rows(Tn, k1));
    }
    attn_cp_commit();
    const bf16* Ks = KV + 2 * TL * (kj & 1);
    const bf16* Vs = Ks + TL;
    const index_t k0 = index_t(kj) * attn_tile;
    // Only the diagonal tile (k0 = q0) is masked: there key ≤ query compares local indices, and
    // it is the only tile that can hold keys >= T. Its key blocks past the warp's rows are all
    // masked, so their products are skipped (those P entries are 0).
    const bool diag = kj == qi;
    const int hi = diag ? warp + 1 : 4, krows = attn_rows(Tn, k0);
    float s[8][4] = {};
    attn_tc_scores<D>(s, Qs, 16 * warp, Ks, 0, hi);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int lr = 16 * warp + gid + 8 * (e >> 1), lc = 8 * j + 2 * tig + (e & 1);
        s[j][e] = !diag || (lc <= lr && lc < krows) ? s[j][e] * a.scale_log2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      // The 4 lanes of a quad hold the row's 64 columns; key 0 is in tile 0 and unmasked for
      // every row, so m is finite from then on.
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      const float alpha = exp2f(m[r] - m_new);  // 0 on the first tile (m = −inf)
      m[r] = m_new;
      l[r] *= alpha;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        acc[n][2 * r] *= alpha;
        acc[n][2 * r + 1] *= alpha;
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[j][e] - m[e >> 1]);  // masked: exp2(−inf) = 0
        s[j][e] = p;
        l[e >> 1] += p;  // this lane's part of the row sum, in float
      }
    attn_tc_apply<D>(acc, s, Vs, 0, hi);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  attn_tc_store<D>(out + b * Tn * ldo + h * D, ldo, acc, row0, Tn, 1.0f / l[0], 1.0f / l[1]);
  if (tig == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const index_t t = row0 + 8 * r;
      if (t < Tn) lse[bh * Tn + t] = (m[r] + log2f(l[r])) * attn_ln2;
    }
}

/// attention_dkv_kernel on tensor cores (bf16): key tile j = blockIdx.y of (b, g) = blockIdx.x;
/// over (h, i) for each query head h of the group in order and query tiles i >= j, Sᵀ = K Qᵀ and
/// dPᵀ = V dOᵀ, then dV += Pᵀ dO and dK += dSᵀ Q by mma.
template <int D>
__global__ void __launch_bounds__(attn_mma_threads)
    attention_dkv_tc_kernel(const bf16* qkv, index_t ldq, const bf16* dout, index_t ldd, const float* lse,
                            const float* delta, bf16* dqkv, index_t ldg, AttnArgs a) {
  constexpr int TL = attn_tile * (D + 8);
  extern __shared__ float4 attn_shared[];
  bf16* Ks = reinterpret_cast<bf16*>(attn_shared);  // (64, D) keys of this tile
  bf16* Vs = Ks + TL;                                // (64, D) values of this tile
  bf16* QD = Vs + TL;                                // 2 buffers of (64, D) queries then (64, D) dO
  float* LD = reinterpret_cast<float*>(QD + 4 * TL);  // 2 buffers of (64) L (base 2) then (64) D
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const index_t Tn = a.seq, bg = blockIdx.x, b = bg / a.kv_heads, g = bg % a.kv_heads;
  const int kj = static_cast<int>(blockIdx.y), nq = static_cast<int>(gridDim.y);
  const index_t k0 = index_t(kj) * attn_tile;
  const bf16* base = qkv + b * Tn * ldq;
  const bf16* dbase = dout + b * Tn * ldd;
  attn_tc_load<D>(Ks, base + k0 * ldq + a.q_width + g * D, ldq, attn_rows(Tn, k0));
  attn_tc_load<D>(Vs, base + k0 * ldq + a.q_width + a.kv_width + g * D, ldq, attn_rows(Tn, k0));
  // Step `it` is query head g·G + it / per_head, query tile j + it % per_head.
  const int per_head = nq - kj, steps = static_cast<int>(a.group) * per_head;
  auto issue = [&](int it) {
    const index_t h = g * a.group + it / per_head, bh = b * a.heads + h;
    const index_t q0 = index_t(kj + it % per_head) * attn_tile;
    const int qrows = attn_rows(Tn, q0);
    bf16* Qn = QD + 2 * TL * (it & 1);
    attn_tc_load<D>(Qn, base + q0 * ldq + h * D, ldq, qrows);
    attn_tc_load<D>(Qn + TL, dbase + q0 * ldd + h * D, ldd, qrows);
    float* Ln = LD + 2 * attn_tile * (it & 1);
    for (int r = threadIdx.x; r < attn_tile; r += attn_mma_threads) {
      Ln[r] = r < qrows ? lse[bh * Tn + q0 + r] * attn_log2e : 0.0f;
      Ln[attn_tile + r] = r < qrows ? delta[bh * Tn + q0 + r] : 0.0f;
    }
  };
  issue(0);
  attn_cp_commit();

  const index_t key0 = k0 + 16 * warp + gid;  // this lane's keys: key0 and key0 + 8
  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.0f;
  for (int it = 0; it < steps; ++it) {
    attn_cp_wait();
    __syncthreads();  // step it is in; every warp is done with step it − 1, whose buffer is refilled
    if (it + 1 < steps) issue(it + 1);
    attn_cp_commit();
    const bf16* Qs = QD + 2 * TL * (it & 1);
    const bf16* dOs = Qs + TL;
    const float* Ls = LD + 2 * attn_tile * (it & 1);
    const float* Ds = Ls + attn_tile;
    const index_t q0 = index_t(kj + it % per_head) * attn_tile;
    // Masks: key ≤ query only on the diagonal tile (q0 = k0, local indices), query < T only on
    // the last query tile. On the diagonal the warp's keys exceed every query of the blocks
    // before it, so those products are skipped (their P and dS entries are 0).
    const bool diag = q0 == k0;
    const int qrows = attn_rows(Tn, q0), lo = diag ? warp : 0, kl = 16 * warp + gid;
    float st[8][4] = {}, dpt[8][4] = {};
    attn_tc_scores<D>(st, Ks, 16 * warp, Qs, lo, 4);    // st: keys × queries, K Qᵀ
    attn_tc_scores<D>(dpt, Vs, 16 * warp, dOs, lo, 4);  // dpt: keys × queries, V dOᵀ
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ql = 8 * j + 2 * tig + (e & 1);
        const bool keep = ql < qrows && (!diag || kl + 8 * (e >> 1) <= ql);
        const float p = keep ? exp2f(st[j][e] * a.scale_log2 - Ls[ql]) : 0.0f;
        st[j][e] = p;
        dpt[j][e] = p * (dpt[j][e] - Ds[ql]);
      }
    attn_tc_apply<D>(dv, st, dOs, lo, 4);  // dV += Pᵀ dO
    attn_tc_apply<D>(dk, dpt, Qs, lo, 4);  // dK += dSᵀ Q
  }
  bf16* gk = dqkv + b * Tn * ldg + a.q_width + g * D;
  attn_tc_store<D>(gk, ldg, dk, key0, Tn, a.scale, a.scale);
  attn_tc_store<D>(gk + a.kv_width, ldg, dv, key0, Tn, 1.0f, 1.0f);
}

/// attention_dq_kernel on tensor cores (bf16): query tile i = gridDim.y − 1 − blockIdx.y of
/// (b, h) = blockIdx.x; for key tiles 0..i, S = Q Kᵀ and dP = dO Vᵀ, then dQ += dS K by mma.
template <int D>
__global__ void __launch_bounds__(attn_mma_threads)
    attention_dq_tc_kernel(const bf16* qkv, index_t ldq, const bf16* dout, index_t ldd, const float* lse,
                           const float* delta, bf16* dqkv, index_t ldg, AttnArgs a) {
  constexpr int TL = attn_tile * (D + 8);
  extern __shared__ float4 attn_shared[];
  bf16* Qs = reinterpret_cast<bf16*>(attn_shared);  // (64, D) queries of this tile
  bf16* dOs = Qs + TL;                               // (64, D) dO of this tile
  bf16* KV = dOs + TL;                               // 2 buffers of (64, D) keys then (64, D) values
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gid = lane / 4, tig = lane % 4;
  const index_t Tn = a.seq, bh = blockIdx.x, b = bh / a.heads, h = bh % a.heads, g = h / a.group;
  const int qi = static_cast<int>(gridDim.y - 1 - blockIdx.y);
  const index_t q0 = index_t(qi) * attn_tile;
  const int qrows = attn_rows(Tn, q0);
  const bf16* base = qkv + b * Tn * ldq;
  const bf16* kbase = base + a.q_width + g * D;
  const bf16* vbase = kbase + a.kv_width;
  attn_tc_load<D>(Qs, base + q0 * ldq + h * D, ldq, qrows);
  attn_tc_load<D>(dOs, dout + (b * Tn + q0) * ldd + h * D, ldd, qrows);
  attn_tc_load<D>(KV, kbase, ldq, attn_rows(Tn, 0));
  attn_tc_load<D>(KV + TL, vbase, ldq, attn_rows(Tn, 0));
  attn_cp_commit();

  const index_t row0 = q0 + 16 * warp + gid;  // this lane's queries: row0 and row0 + 8
  float Lr[2], Dr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const index_t t = row0 + 8 * r;
    Lr[r] = t < Tn ? lse[bh * Tn + t] * attn_log2e : 0.0f;
    Dr[r] = t < Tn ? delta[bh * Tn + t] : 0.0f;
  }
  float dq[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
  for (int kj = 0; kj <= qi; ++kj) {
    attn_cp_wait();
    __syncthreads();  // tile kj is in; every warp is done with tile kj − 1, whose buffer is refilled
    if (kj < qi) {
      const index_t k1 = index_t(kj + 1) * attn_tile;
      bf16* next = KV + 2 * TL * ((kj + 1) & 1);
      attn_tc_load<D>(next, kbase + k1 * ldq, ldq, attn_rows(Tn, k1));
      attn_tc_load<D>(next + TL, vbase + k1 * ldq, ldq, attn_rows(Tn, k1));
    }
    attn_cp_commit();
    const bf16* Ks = KV + 2 * TL * (kj & 1);
    const bf16* Vs = Ks + TL;
    // Only the diagonal tile (k0 = q0) is masked, as in forward, and its key blocks past the
    // warp's rows are skipped. Rows >= T (zero Q, dO, L and D) are never stored.
    const bool diag = kj == qi;
    const int hi = diag ? warp + 1 : 4;
    float s[8][4] = {}, dp[8][4] = {};
    attn_tc_scores<D>(s, Qs, 16 * warp, Ks, 0, hi);    // Q Kᵀ
    attn_tc_scores<D>(dp, dOs, 16 * warp, Vs, 0, hi);  // dO Vᵀ
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, lr = 16 * warp + gid + 8 * r, lc = 8 * j + 2 * tig + (e & 1);
        const bool keep = !diag || (lc <= lr && lr < qrows);
        const float p = keep ? exp2f(s[j][e] * a.scale_log2 - Lr[r]) : 0.0f;
        s[j][e] = p * (dp[j][e] - Dr[r]);  // dS
      }
    attn_tc_apply<D>(dq, s, Ks, 0, hi);  // dQ += dS K
  }
  attn_tc_store<D>(dqkv + b * Tn * ldg + h * D, ldg, dq, row0, Tn, a.scale, a.scale);
}

/// Whether the bf16 tensor-core kernels can read these matrices: 16-byte aligned rows.
template <class T>
bool attn_tc_ok(const MatrixView<const T, Device>& m) {
  return reinterpret_cast<std::uintptr_t>(m.data()) % 16 == 0 && m.ld() % 8 == 0;
}

/// Throws unless the shape is valid, its head width has a kernel and qkv, a (B*T, A) matrix and
/// the 2-D grid fit it.
template <class T>
void check_attention(const char* who, const AttentionShape& s, const MatrixView<const T, Device>& qkv,
                     const char* name, const MatrixView<const T, Device>& m) {
  s.validate();
  BONSAI_CHECK(s.head_dim == 32 || s.head_dim == 64 || s.head_dim == 128, who, ": head_dim = ", s.head_dim,
               " in ", s, " has no CUDA kernel (head widths 32, 64 and 128)");
  BONSAI_CHECK(qkv.rows() == s.tokens() && qkv.cols() == s.qkv_width(), who, ": qkv has shape ",
               shape{qkv.rows(), qkv.cols()}, " but ", s, " takes ", shape{s.tokens(), s.qkv_width()});
  BONSAI_CHECK(m.rows() == s.tokens() && m.cols() == s.q_width(), who, ": ", name, " has shape ",
               shape{m.rows(), m.cols()}, " but ", s, " needs ", shape{s.tokens(), s.q_width()}, " (qkv shape ",
               shape{qkv.rows(), qkv.cols()}, ")");
  BONSAI_CHECK(qkv.stride(1) == 1 && m.stride(1) == 1, who, ": qkv and ", name,
               " need contiguous rows (column strides ", qkv.stride(1), " and ", m.stride(1), ")");
  BONSAI_CHECK((s.seq + attn_tile - 1) / attn_tile <= 65535, who, ": seq = ", s.seq, " exceeds ",
               index_t(65535) * attn_tile, " tokens");
}

template <class T>
void check_rows(const char* who, const char* name, const AttentionShape& s, const TensorView<T, 3, Device>& v) {
  const auto want = typename TensorView<T, 3, Device>::Shape{s.batch, s.heads, s.seq};
  BONSAI_CHECK(v.shape() == want && v.is_contiguous() && v.data() != nullptr, who, ": ", name, " has shape ",
               shape{v.extent(0), v.extent(1), v.extent(2)}, v.is_contiguous() ? "" : " (not contiguous)", " but ",
               s, " needs a contiguous ", shape{s.batch, s.heads, s.seq});
}

inline bool same_shape(const AttentionShape& a, const AttentionShape& b) {
  return a.batch == b.batch && a.seq == b.seq && a.heads == b.heads && a.kv_heads == b.kv_heads &&
         a.head_dim == b.head_dim;
}

/// f(std::integral_constant<int, hd>) for hd in {32, 64, 128} (checked before).
template <class F>
void dispatch_head_dim(index_t head_dim, F&& f) {
  switch (head_dim) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default: ::bonsai::detail::fail("attention: head_dim = ", head_dim, " has no CUDA kernel (32, 64 or 128)");
  }
}

/// Lets `kernel` use `bytes` of dynamic shared memory (above the 48 KiB default).
template <class Kernel>
void allow_shared(Kernel kernel, std::size_t bytes) {
  BONSAI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

}  // namespace detail

/// Causal self-attention forward: out = softmax(Q Kᵀ / √hd + mask) V per query head, with the row
/// log-sum-exp L_t = ln Σ_{k ≤ t} exp(S[t, k]) saved for backward (instead of the CPU backend's
/// (B, Hq, T, T) probabilities).
///   qkv (B*T, A + 2KV)  packed queries, keys, values (see the header comment)
///   out (B*T, A)        written (=)
///   lse (B, Hq, T)      contiguous float, written (=)
template <class T>
void attention_forward(const AttentionShape& shape, const MatrixView<const std::type_identity_t<T>, Device>& qkv,
                       const MatrixView<T, Device>& out, const TensorView<float, 3, Device>& lse) {
  detail::check_attention<T>("attention_forward", shape, qkv, "out", MatrixView<const T, Device>(out));
  detail::check_rows("attention_forward", "lse", shape, lse);
  const auto a = detail::attn_args(shape);
  const dim3 grid(static_cast<unsigned>(shape.batch * shape.heads),
                  static_cast<unsigned>((shape.seq + detail::attn_tile - 1) / detail::attn_tile));
  detail::dispatch_head_dim(shape.head_dim, [&](auto hd) {
    constexpr int D = decltype(hd)::value;
    if constexpr (std::is_same_v<T, bf16>) {
      if (detail::attn_tc_ok(qkv)) {
        constexpr std::size_t tc_smem = detail::attn_tc_forward_smem<D>;
        detail::allow_shared(detail::attention_forward_tc_kernel<D>, tc_smem);
        detail::attention_forward_tc_kernel<D><<<grid, detail::attn_mma_threads, tc_smem, runtime().stream()>>>(
            qkv.data(), qkv.ld(), out.data(), out.ld(), lse.data(), a);
        BONSAI_CUDA_CHECK_LAUNCH("attention_forward_tc_kernel");
        return;
      }
    }
    constexpr std::size_t smem = detail::attn_forward_smem<D>;
    detail::allow_shared(detail::attention_forward_kernel<T, D>, smem);
    detail::attention_forward_kernel<T, D><<<grid, detail::attn_threads, smem, runtime().stream()>>>(
        qkv.data(), qkv.ld(), out.data(), out.ld(), lse.data(), a);
    BONSAI_CUDA_CHECK_LAUNCH("attention_forward_kernel");
  });
}

/// Causal self-attention backward from the forward's output and log-sum-exp: with
/// P = exp(S − L), D = rowsum(dO ⊙ O) and dS = P ⊙ (dO Vᵀ − D), dQ = dS K / √hd,
/// dK = Σ_h dSᵀ Q / √hd, dV = Σ_h Pᵀ dO (kv heads summed over their query heads in a fixed order).
///   qkv   (B*T, A + 2KV)  the forward's input
///   out   (B*T, A)        the forward's output
///   lse   (B, Hq, T)      the forward's log-sum-exp
///   dout  (B*T, A)        gradient of the output
///   dqkv  (B*T, A + 2KV)  written (=): dQ, dK, dV in qkv's layout
///   delta (B, Hq, T)      contiguous float scratch (D); its contents are overwritten
template <class T>
void attention_backward(const AttentionShape& shape, const MatrixView<const std::type_identity_t<T>, Device>& qkv,
                        const MatrixView<const std::type_identity_t<T>, Device>& out,
                        const TensorView<const float, 3, Device>& lse,
                        const MatrixView<const std::type_identity_t<T>, Device>& dout, const MatrixView<T, Device>& dqkv,
                        const TensorView<float, 3, Device>& delta) {
  detail::check_attention<T>("attention_backward", shape, qkv, "out", out);
  detail::check_attention<T>("attention_backward", shape, qkv, "dout", dout);
  BONSAI_CHECK(dqkv.rows() == qkv.rows() && dqkv.cols() == qkv.cols() && dqkv.stride(1) == 1,
               "attention_backward: dqkv has shape ", ::bonsai::shape{dqkv.rows(), dqkv.cols()}, " but qkv has shape ",
               ::bonsai::shape{qkv.rows(), qkv.cols()}, " (rows must be contiguous)");
  BONSAI_CHECK(dqkv.data() != qkv.data() && dqkv.data() != dout.data(),
               "attention_backward: dqkv must not share memory with qkv or dout");
  detail::check_rows("attention_backward", "lse", shape, lse);
  detail::check_rows("attention_backward", "delta", shape, delta);
  BONSAI_CHECK(lse.data() != delta.data(), "attention_backward: lse and delta must be different buffers");
  const auto a = detail::attn_args(shape);
  const index_t rows = shape.batch * shape.heads * shape.seq;  // one warp each
  const index_t delta_blocks = (rows + 7) / 8;
  BONSAI_CHECK(delta_blocks <= index_t(0x7fffffff), "attention_backward: ", shape, " has too many rows");
  detail::attention_delta_kernel<T><<<static_cast<unsigned>(delta_blocks), 256, 0, runtime().stream()>>>(
      out.data(), out.ld(), dout.data(), dout.ld(), delta.data(), a, static_cast<int>(shape.head_dim), rows);
  BONSAI_CUDA_CHECK_LAUNCH("attention_delta_kernel");
  const unsigned tiles = static_cast<unsigned>((shape.seq + detail::attn_tile - 1) / detail::attn_tile);
  detail::dispatch_head_dim(shape.head_dim, [&](auto hd) {
    constexpr int D = decltype(hd)::value;
    if constexpr (std::is_same_v<T, bf16>) {
      if (detail::attn_tc_ok(qkv) && detail::attn_tc_ok(dout)) {
        constexpr std::size_t dkv_smem = detail::attn_tc_dkv_smem<D>, dq_smem = detail::attn_tc_dq_smem<D>;
        detail::allow_shared(detail::attention_dkv_tc_kernel<D>, dkv_smem);
        detail::attention_dkv_tc_kernel<D>
            <<<dim3(static_cast<unsigned>(shape.batch * shape.kv_heads), tiles), detail::attn_mma_threads, dkv_smem,
               runtime().stream()>>>(qkv.data(), qkv.ld(), dout.data(), dout.ld(), lse.data(), delta.data(),
                                     dqkv.data(), dqkv.ld(), a);
        BONSAI_CUDA_CHECK_LAUNCH("attention_dkv_tc_kernel");
        detail::allow_shared(detail::attention_dq_tc_kernel<D>, dq_smem);
        detail::attention_dq_tc_kernel<D>
            <<<dim3(static_cast<unsigned>(shape.batch * shape.heads), tiles), detail::attn_mma_threads, dq_smem,
               runtime().stream()>>>(qkv.data(), qkv.ld(), dout.data(), dout.ld(), lse.data(), delta.data(),
                                     dqkv.data(), dqkv.ld(), a);
        BONSAI_CUDA_CHECK_LAUNCH("attention_dq_tc_kernel");
        return;
      }
    }
    constexpr std::size_t dkv_smem = detail::attn_dkv_smem<D>, dq_smem = detail::attn_dq_smem<D>;
    detail::allow_shared(detail::attention_dkv_kernel<T, D>, dkv_smem);
    detail::attention_dkv_kernel<T, D>
        <<<dim3(static_cast<unsigned>(shape.batch * shape.kv_heads), tiles), detail::attn_threads, dkv_smem,
           runtime().stream()>>>(qkv.data(), qkv.ld(), dout.data(), dout.ld(), lse.data(), delta.data(), dqkv.data(),
                                 dqkv.ld(), a);
    BONSAI_CUDA_CHECK_LAUNCH("attention_dkv_kernel");
    detail::allow_shared(detail::attention_dq_kernel<T, D>, dq_smem);
    detail::attention_dq_kernel<T, D>
        <<<dim3(static_cast<unsigned>(shape.batch * shape.heads), tiles), detail::attn_threads, dq_smem,
           runtime().stream()>>>(qkv.data(), qkv.ld(), dout.data(), dout.ld(), lse.data(), delta.data(), dqkv.data(),
                                 dqkv.ld(), a);
    BONSAI_CUDA_CHECK_LAUNCH("attention_dq_kernel");
  });
}

/// attention_forward with the log-sum-exp in state.lse (B*Hq*T floats, grown once for a fixed
/// shape); the state also records the shape and `out`, which must stay unchanged until backward.
template <class T>
void attention_forward(const AttentionShape& shape, const MatrixView<const std::type_identity_t<T>, Device>& qkv,
                       const MatrixView<T, Device>& out, AttentionState<T>& state) {
  shape.validate();
  const auto lse = TensorView<float, 3, Device>(state.lse.reserve(shape.batch * shape.heads * shape.seq),
                                                {shape.batch, shape.heads, shape.seq});
  attention_forward<T>(shape, qkv, out, lse);
  state.shape = shape;
  state.out = out;
}

/// attention_backward from the state attention_forward filled (its log-sum-exp and output);
/// D goes to state.delta.
template <class T>
void attention_backward(const AttentionShape& shape, const MatrixView<const std::type_identity_t<T>, Device>& qkv,
                        AttentionState<T>& state, const MatrixView<const std::type_identity_t<T>, Device>& dout,
                        const MatrixView<T, Device>& dqkv) {
  shape.validate();
  BONSAI_CHECK(detail::same_shape(state.shape, shape), "attention_backward: the state holds a forward of ",
               state.shape, " but the call has ", shape, " (run attention_forward first)");
  const TensorView<float, 3, Device>::Shape rows{shape.batch, shape.heads, shape.seq};
  const auto lse = TensorView<const float, 3, Device>(state.lse.data(), rows);
  const auto delta = TensorView<float, 3, Device>(state.delta.reserve(shape.batch * shape.heads * shape.seq), rows);
  attention_backward<T>(shape, qkv, state.out, lse, dout, dqkv, delta);
}

}  // namespace bonsai::cuda
