// bonsai/backend/cpu/attention.hpp — causal multi-head and grouped-query self-attention on packed
// qkv activations. Query head h reads kv head g = h / (Hq / Hkv); with S = Q_h K_gᵀ / √hd,
// P = softmax(S + causal mask) row by row and O_h = P V_g. Backward: dV_g = Σ_h Pᵀ dO_h,
// dS = P ⊙ (dP − rowsum(dP ⊙ P)) with dP = dO_h V_gᵀ, dQ_h = dS K_g / √hd, dK_g = Σ_h dSᵀ Q_h / √hd.
//
// Layouts (row-major, token-major: row b*T + t):
//   qkv  (B*T, A + 2KV): query head h at columns [h*hd, (h+1)*hd), key head g at
//        [A + g*hd, ...), value head g at [A + KV + g*hd, ...), with A = Hq*hd, KV = Hkv*hd
//   out  (B*T, A): head h at columns [h*hd, (h+1)*hd)
//   probs (B, Hq, T, T): the softmax probabilities saved for backward (entries above the
//        diagonal are zero), B*Hq*T*T elements — AttentionShape::probs_size()
//
// Query rows are split into blocks of 64: row block i multiplies only keys [0, (i+1)·64), so the
// key blocks above the diagonal are skipped (at T = 256, 62.5% of the dense work; the exact
// causal half is 50%). Each block is two single-threaded GEMMs (Eigen and oneDNN run serially
// inside an OpenMP parallel region) and a vectorised softmax. Threads share whole heads (or, when
// there are too few heads, row blocks); every result is computed by one thread with the same
// calls in the same order whatever the schedule, so outputs are bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <type_traits>

#if defined(__AVX512F__)
#  include <immintrin.h>
#endif

#include "../../core/parallel.hpp"
#include "../../core/tensor.hpp"
#include "../attention_shape.hpp"
#include "gemm.hpp"

// OpenMP pragmas that vanish without OpenMP (no -Wunknown-pragmas noise).
#if !defined(BONSAI_OMP)
#  if defined(_OPENMP)
#    define BONSAI_OMP(directive) _Pragma(#directive)
#  else
#    define BONSAI_OMP(directive)
#  endif
#endif

namespace bonsai::cpu {

/// A per-layer cache of past keys and values for decoding, head-major so that one head's keys
/// are one contiguous (length, hd) matrix: keys and values (B, Hkv, max_T, hd). Positions
/// [0, length()) are filled.
template <class T>
class KvCache {
 public:
  KvCache() = default;
  KvCache(index_t batch, index_t kv_heads, index_t max_seq, index_t head_dim)
      : m_keys(batch, kv_heads, max_seq, head_dim), m_values(batch, kv_heads, max_seq, head_dim) {}

  index_t batch() const noexcept { return m_keys.extent(0); }
  index_t kv_heads() const noexcept { return m_keys.extent(1); }
  index_t max_seq() const noexcept { return m_keys.extent(2); }
  index_t head_dim() const noexcept { return m_keys.extent(3); }
  /// Positions filled so far.
  index_t length() const noexcept { return m_length; }
  /// Forgets every position (the memory is kept).
  void reset() noexcept { m_length = 0; }
  /// Marks positions [0, n) as filled; attention_decode sets it.
  void set_length(index_t n) {
    BONSAI_CHECK(n >= 0 && n <= max_seq(), "KvCache: length ", n, " outside [0, ", max_seq(), "]");
    m_length = n;
  }

  TensorView<T, 4> keys() { return m_keys.view(); }      // (B, Hkv, max_T, hd)
  TensorView<T, 4> values() { return m_values.view(); }  // (B, Hkv, max_T, hd)
  TensorView<const T, 4> keys() const { return m_keys.view(); }
  TensorView<const T, 4> values() const { return m_values.view(); }

 private:
  Tensor<T, 4> m_keys, m_values;  // (B, Hkv, max_T, hd)
  index_t m_length = 0;
};

namespace detail {

/// Query rows per task: row block i attends to keys [0, (i+1)*block).
inline constexpr index_t attention_block = 64;

/// Runs f(k) for k in [0, n) with dynamic scheduling (tasks of unequal cost, listed heaviest
/// first). Each task runs on one thread, so the result does not depend on the thread count.
template <class F>
void parallel_tasks(index_t n, F&& f) {
#if defined(_OPENMP)
  if (n > 1 && omp_get_max_threads() > 1) {
#  pragma omp parallel for schedule(dynamic, 1)
    for (index_t k = 0; k < n; ++k) f(k);
    return;
  }
#endif
  for (index_t k = 0; k < n; ++k) f(k);
}

/// exp(x) for x <= 0 (a softmax's shifted scores). float: 2^n · e^r with n = round(x / ln 2),
/// r = x − n ln 2 in [−ln2/2, ln2/2] (two-part ln 2, so r is exact to rounding) and e^r by its
/// degree-7 Taylor polynomial: relative error below 1e-7, and a loop of it vectorises, unlike
/// std::exp. Inputs below −87 return about 2^−125 instead of underflowing. double: std::exp.
template <class T>
inline T exp_nonpositive(T x) {
  if constexpr (std::is_same_v<T, float>) {
    x = x < -87.0f ? -87.0f : x;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
    const float r = std::fma(n, -1.4286068203094173e-06f, std::fma(n, -0.693145751953125f, x));
    float p = 1.0f / 5040.0f;
    p = std::fma(p, r, 1.0f / 720.0f);
    p = std::fma(p, r, 1.0f / 120.0f);
    p = std::fma(p, r, 1.0f / 24.0f);
    p = std::fma(p, r, 1.0f / 6.0f);
    p = std::fma(p, r, 0.5f);
    p = std::fma(p, r, 1.0f);
    p = std::fma(p, r, 1.0f);
    return p * std::bit_cast<float>((static_cast<std::int32_t>(n) + 127) << 23);  // p · 2^n
  } else {
    return std::exp(x);
  }
}

#if defined(__AVX512F__)
/// exp_nonpositive on 16 lanes: the same reduction and polynomial, 2^n applied by scalef.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.4286068203094173e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

/// Lanes [0, n) of a 16-lane mask, n in [0, 16).
inline __mmask16 first_lanes(index_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

inline void softmax_row_avx512(float* row, index_t len) {
  const index_t full = len & ~index_t(15);
  const __mmask16 tail = first_lanes(len - full);
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (index_t i = 0; i < full; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(row + i));
  vmax = _mm512_mask_max_ps(vmax, tail, vmax, _mm512_maskz_loadu_ps(tail, row + full));
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 vsum = _mm512_setzero_ps();
  for (index_t i = 0; i < full; i += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + i), mx));
    _mm512_storeu_ps(row + i, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, row + full), mx));
  _mm512_mask_storeu_ps(row + full, tail, e);
  vsum = _mm512_mask_add_ps(vsum, tail, vsum, e);
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
  for (index_t i = 0; i < full; i += 16) _mm512_storeu_ps(row + i, _mm512_mul_ps(_mm512_loadu_ps(row + i), inv));
  _mm512_mask_storeu_ps(row + full, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, row + full), inv));
}

inline void softmax_backward_row_avx512(float* ds, const float* p, index_t len) {
  const index_t full = len & ~index_t(15);
  const __mmask16 tail = first_lanes(len - full);
  __m512 vdot = _mm512_setzero_ps();
  for (index_t i = 0; i < full; i += 16)
    vdot = _mm512_fmadd_ps(_mm512_loadu_ps(ds + i), _mm512_loadu_ps(p + i), vdot);
  vdot = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, ds + full), _mm512_maskz_loadu_ps(tail, p + full), vdot);
  const __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(vdot));
  for (index_t i = 0; i < full; i += 16)
    _mm512_storeu_ps(ds + i, _mm512_mul_ps(_mm512_loadu_ps(p + i), _mm512_sub_ps(_mm512_loadu_ps(ds + i), dot)));
  _mm512_mask_storeu_ps(ds + full, tail,
                        _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, p + full),
                                      _mm512_sub_ps(_mm512_maskz_loadu_ps(tail, ds + full), dot)));
}
#endif

/// row[0, len) = softmax(row[0, len)) with max subtraction; row[len, width) = 0.
template <class T>
void softmax_row(T* row, index_t len, index_t width) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    softmax_row_avx512(row, len);
    std::fill(row + len, row + width, T(0));
    return;
  }
#endif
  T mx = row[0];
  BONSAI_OMP(omp simd reduction(max : mx))
  for (index_t i = 0; i < len; ++i) mx = row[i] > mx ? row[i] : mx;
  T sum = 0;
  BONSAI_OMP(omp simd reduction(+ : sum))
  for (index_t i = 0; i < len; ++i) {
    const T e = exp_nonpositive(row[i] - mx);
    row[i] = e;
    sum += e;
  }
  const T inv = T(1) / sum;
  BONSAI_OMP(omp simd)
  for (index_t i = 0; i < len; ++i) row[i] *= inv;
  std::fill(row + len, row + width, T(0));
}

/// ds[0, len) = p ⊙ (dp − ⟨dp, p⟩) over [0, len) with dp read from ds; ds[len, width) = 0.
template <class T>
void softmax_backward_row(T* ds, const T* p, index_t len, index_t width) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    softmax_backward_row_avx512(ds, p, len);
    std::fill(ds + len, ds + width, T(0));
    return;
  }
#endif
  T dot = 0;
  BONSAI_OMP(omp simd reduction(+ : dot))
  for (index_t i = 0; i < len; ++i) dot += ds[i] * p[i];
  BONSAI_OMP(omp simd)
  for (index_t i = 0; i < len; ++i) ds[i] = p[i] * (ds[i] - dot);
  std::fill(ds + len, ds + width, T(0));
}

template <class T>
void check_attention_views(const char* who, const AttentionShape& s, const MatrixView<const T>& qkv,
                           const char* out_name, index_t out_rows, index_t out_cols, index_t out_col_stride) {
  s.validate();
  BONSAI_CHECK(qkv.rows() == s.tokens() && qkv.cols() == s.qkv_width(), who, ": qkv has shape ",
               shape{qkv.rows(), qkv.cols()}, " but ", s, " takes ", shape{s.tokens(), s.qkv_width()});
  BONSAI_CHECK(out_rows == s.tokens() && out_cols == s.q_width(), who, ": ", out_name, " has shape ",
               shape{out_rows, out_cols}, " but ", s, " needs ", shape{s.tokens(), s.q_width()},
               " (qkv shape ", shape{qkv.rows(), qkv.cols()}, ")");
  BONSAI_CHECK(qkv.stride(1) == 1 && out_col_stride == 1, who, ": qkv and ", out_name,
               " need contiguous rows (column strides ", qkv.stride(1), " and ", out_col_stride, ")");
}

template <class T>
void check_scores(const char* who, const char* name, const AttentionShape& s, const TensorView<T, 4>& p) {
  const auto want = typename TensorView<T, 4>::Shape{s.batch, s.heads, s.seq, s.seq};
  BONSAI_CHECK(p.shape() == want && p.is_contiguous() && p.data() != nullptr, who, ": ", name,
               " has shape ", shape{p.extent(0), p.extent(1), p.extent(2), p.extent(3)},
               p.is_contiguous() ? "" : " (not contiguous)", " but ", s, " needs a contiguous ",
               shape{s.batch, s.heads, s.seq, s.seq});
}

/// The per-block steps of attention_forward / attention_backward on one batch of views. Query
/// rows are split into blocks of `block` rows; block i of head h reads keys [0, r1) with
/// r1 = min(T, (i+1) block), so its scores are a (rows, r1) slice of P's (T, T) matrix.
template <class T>
struct AttentionBlocks {
  AttentionShape s;
  index_t block, blocks;                // rows per block, ceil(T / block)
  const T* qkv;                         // (B*T, A + 2KV), leading dimension ldq
  index_t ldq;
  const T* probs;                       // (B, Hq, T, T), as forward writes it
  T scale;                              // 1 / √hd

  AttentionBlocks(const AttentionShape& shape, const MatrixView<const T>& x, const T* p, index_t rows_per_block)
      : s(shape), block(rows_per_block), blocks((shape.seq + rows_per_block - 1) / rows_per_block),
        qkv(x.data()), ldq(x.ld()), probs(p), scale(T(1) / std::sqrt(T(shape.head_dim))) {}

  index_t row_begin(index_t i) const { return i * block; }
  index_t row_end(index_t i) const { return std::min(s.seq, (i + 1) * block); }
  const T* batch(index_t b) const { return qkv + b * s.seq * ldq; }
  index_t kv_head(index_t h) const { return h / s.group(); }
  /// (r1, hd) keys [0, r1) and values of kv head g in batch b.
  MatrixView<const T> keys(index_t b, index_t g, index_t r1) const {
    return matrix_view(batch(b) + s.q_width() + g * s.head_dim, r1, s.head_dim, ldq);
  }
  MatrixView<const T> values(index_t b, index_t g, index_t r1) const {
    return matrix_view(batch(b) + s.q_width() + s.kv_width() + g * s.head_dim, r1, s.head_dim, ldq);
  }
  template <class U>
  U* scores(U* base, index_t b, index_t h) const { return base + (b * s.heads + h) * s.seq * s.seq; }

  /// Forward of row block i of (b, h): P rows = softmax(scale Q_i K[0, r1)ᵀ) into `probs_out`
  /// (the buffer `probs` points to), O_i = P V[0, r1).
  void forward(index_t b, index_t h, index_t i, const MatrixView<T>& out, T* probs_out) const {
    const index_t Tn = s.seq, hd = s.head_dim, g = kv_head(h);
    const index_t r0 = row_begin(i), r1 = row_end(i), rows = r1 - r0;
    T* pb = scores(probs_out, b, h);
    const auto q = matrix_view(batch(b) + r0 * ldq + h * hd, rows, hd, ldq);  // (rows, hd)
    const auto p = matrix_view(pb + r0 * Tn, rows, r1, Tn);                   // (rows, r1)
    gemm<T>(scale, q, Op::N, keys(b, g, r1), Op::T, T(0), p);
    for (index_t t = r0; t < r1; ++t) softmax_row(pb + t * Tn, t + 1, Tn);
    const auto o = matrix_view(out.data() + (b * Tn + r0) * out.ld() + h * hd, rows, hd, out.ld());  // (rows, hd)
    gemm<T>(T(1), p, Op::N, values(b, g, r1), Op::N, T(0), o);
  }

  /// Backward of row block i of (b, h): dP = dO_i V[0, r1)ᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P))
  /// into dscores' rows, dQ_i = scale dS K[0, r1).
  void backward_rows(index_t b, index_t h, index_t i, const MatrixView<const T>& dout, const MatrixView<T>& dqkv,
                     T* dscores) const {
    const index_t Tn = s.seq, hd = s.head_dim, g = kv_head(h);
    const index_t r0 = row_begin(i), r1 = row_end(i), rows = r1 - r0;
    const T* pb = scores(probs, b, h);
    T* db = scores(dscores, b, h);
    const auto dO = matrix_view(dout.data() + (b * Tn + r0) * dout.ld() + h * hd, rows, hd, dout.ld());  // (rows, hd)
    const auto ds = matrix_view(db + r0 * Tn, rows, r1, Tn);                                            // (rows, r1)
    gemm<T>(T(1), dO, Op::N, values(b, g, r1), Op::T, T(0), ds);
    for (index_t t = r0; t < r1; ++t) softmax_backward_row(db + t * Tn, pb + t * Tn, t + 1, r1);
    const auto dq = matrix_view(dqkv.data() + (b * Tn + r0) * dqkv.ld() + h * hd, rows, hd, dqkv.ld());  // (rows, hd)
    gemm<T>(scale, ds, Op::N, keys(b, g, r1), Op::N, T(0), dq);
  }

  /// Key/value block c (keys [c0, c1)) of kv head g, from query head h = g·group + j and its
  /// rows [c0, T): dK += scale dS[c0:T, c0:c1]ᵀ Q[c0:T], dV += P[c0:T, c0:c1]ᵀ dO[c0:T]
  /// (assigned for j = 0, so the group's heads are summed in order j = 0, 1, ...).
  void backward_cols(index_t b, index_t g, index_t j, index_t c, const MatrixView<const T>& dout,
                     const MatrixView<T>& dqkv, const T* dscores) const {
    const index_t Tn = s.seq, hd = s.head_dim, h = g * s.group() + j;
    const index_t c0 = row_begin(c), cols = row_end(c) - c0, rows = Tn - c0;
    const T beta = j == 0 ? T(0) : T(1);
    const index_t off = (b * s.heads + h) * Tn * Tn + c0 * Tn + c0;
    const auto ds = matrix_view(dscores + off, rows, cols, Tn);                                           // (rows, cols)
    const auto p = matrix_view<Host, const T>(probs + off, rows, cols, Tn);                               // (rows, cols)
    const auto q = matrix_view(batch(b) + c0 * ldq + h * hd, rows, hd, ldq);                              // (rows, hd)
    const auto dO = matrix_view(dout.data() + (b * Tn + c0) * dout.ld() + h * hd, rows, hd, dout.ld());  // (rows, hd)
    T* dx = dqkv.data() + (b * Tn + c0) * dqkv.ld() + s.q_width() + g * hd;
    gemm<T>(scale, ds, Op::T, q, Op::N, beta, matrix_view(dx, cols, hd, dqkv.ld()));                 // dK (cols, hd)
    gemm<T>(T(1), p, Op::T, dO, Op::N, beta, matrix_view(dx + s.kv_width(), cols, hd, dqkv.ld()));  // dV (cols, hd)
  }
};

/// Whether `tasks` whole-head tasks keep every thread busy (else the work is split finer).
inline bool enough_tasks(index_t tasks) { return tasks >= 4 * index_t(max_threads()); }

/// attention_forward with query-row blocks of `block` rows (block >= T: no causal skipping).
template <class T>
void attention_forward_blocked(const AttentionShape& s, const MatrixView<const T>& qkv,
                               const MatrixView<T>& out, const TensorView<T, 4>& probs, index_t block) {
  check_attention_views<T>("attention_forward", s, qkv, "out", out.rows(), out.cols(), out.stride(1));
  check_scores<T>("attention_forward", "probs", s, probs);
  BONSAI_CHECK(block > 0, "attention_forward: block = ", block, " must be positive");
  const AttentionBlocks<T> k(s, qkv, probs.data(), block);
  const index_t BH = s.batch * s.heads, nb = k.blocks;
  if (enough_tasks(BH)) {  // one task per (b, h): its keys and values stay in cache
    parallel_tasks(BH, [&](index_t bh) {
      for (index_t i = 0; i < nb; ++i) k.forward(bh / s.heads, bh % s.heads, i, out, probs.data());
    });
  } else {  // one task per (b, h, row block), heaviest blocks first
    parallel_tasks(BH * nb, [&](index_t t) {
      const index_t i = nb - 1 - t / BH, bh = t % BH;
      k.forward(bh / s.heads, bh % s.heads, i, out, probs.data());
    });
  }
}

/// attention_backward with query-row (and key-column) blocks of `block` rows.
template <class T>
void attention_backward_blocked(const AttentionShape& s, const MatrixView<const T>& qkv,
                                const TensorView<const T, 4>& probs, const MatrixView<const T>& dout,
                                const MatrixView<T>& dqkv, const TensorView<T, 4>& dscores, index_t block) {
  check_attention_views<T>("attention_backward", s, qkv, "dout", dout.rows(), dout.cols(), dout.stride(1));
  BONSAI_CHECK(dqkv.rows() == qkv.rows() && dqkv.cols() == qkv.cols() && dqkv.stride(1) == 1,
               "attention_backward: dqkv has shape ", shape{dqkv.rows(), dqkv.cols()},
               " but qkv has shape ", shape{qkv.rows(), qkv.cols()}, " (rows must be contiguous)");
  check_scores<const T>("attention_backward", "probs", s, probs);
  check_scores<T>("attention_backward", "dscores", s, dscores);
  BONSAI_CHECK(block > 0, "attention_backward: block = ", block, " must be positive");
  const AttentionBlocks<T> k(s, qkv, probs.data(), block);
  const index_t B = s.batch, H = s.heads, Hkv = s.kv_heads, G = s.group(), nb = k.blocks;
  T* ds = dscores.data();
  // Both schedules make the same GEMM calls with the same operands and, per key block, the same
  // head order, so they give identical results.
  if (enough_tasks(B * Hkv)) {  // one task per (b, g): each head's P and dS stay in cache
    parallel_tasks(B * Hkv, [&](index_t bg) {
      const index_t b = bg / Hkv, g = bg % Hkv;
      for (index_t j = 0; j < G; ++j) {
        for (index_t i = 0; i < nb; ++i) k.backward_rows(b, g * G + j, i, dout, dqkv, ds);
        for (index_t c = 0; c < nb; ++c) k.backward_cols(b, g, j, c, dout, dqkv, ds);
      }
    });
  } else {
    // Phase 1, per (b, h, row block): dS and dQ.
    parallel_tasks(B * H * nb, [&](index_t t) {
      const index_t i = nb - 1 - t / (B * H), bh = t % (B * H);
      k.backward_rows(bh / H, bh % H, i, dout, dqkv, ds);
    });
    // Phase 2, per (b, g, key block c), c = 0 (the most rows) first: dK and dV.
    parallel_tasks(B * Hkv * nb, [&](index_t t) {
      const index_t c = t / (B * Hkv), bg = t % (B * Hkv);
      for (index_t j = 0; j < G; ++j) k.backward_cols(bg / Hkv, bg % Hkv, j, c, dout, dqkv, ds);
    });
  }
}

/// Per-thread scores of attention_decode, grown once.
template <class T>
Workspace<T>& decode_scratch() {
  thread_local Workspace<T> ws;
  return ws;
}

/// The calling thread's dS scratch for attention_backward's Workspace overload, grown once and
/// shared by every layer.
template <class T>
Workspace<T>& backward_scratch() {
  thread_local Workspace<T> ws;
  return ws;
}

/// A (B, Hq, T, T) view of the first probs_size() elements of a workspace.
template <class T>
TensorView<T, 4> scores_view(const AttentionShape& s, T* data) {
  return TensorView<T, 4>(data, {s.batch, s.heads, s.seq, s.seq});
}

}  // namespace detail

/// Causal self-attention forward: out = softmax(Q Kᵀ / √hd + mask) V per query head, with the
/// probabilities saved in `probs` for backward.
///   qkv   (B*T, A + 2KV)  packed queries, keys, values (see the header comment)
///   out   (B*T, A)        written (=)
///   probs (B, Hq, T, T)   contiguous, B*Hq*T*T elements (shape.probs_size()); written (=),
///                         zero above the diagonal
template <class T>
void attention_forward(const AttentionShape& shape, const MatrixView<const std::type_identity_t<T>>& qkv,
                       const MatrixView<T>& out, const TensorView<T, 4>& probs) {
  detail::attention_forward_blocked<T>(shape, qkv, out, probs, detail::attention_block);
}

/// Causal self-attention backward from the probabilities that attention_forward saved.
///   qkv      (B*T, A + 2KV)  the forward's input
///   probs    (B, Hq, T, T)   the forward's probabilities (read only)
///   dout     (B*T, A)        gradient of the output
///   dqkv     (B*T, A + 2KV)  written (=): dQ, dK, dV in qkv's layout; for GQA the kv heads'
///                            gradients are summed over their query heads in a fixed order
///   dscores  (B, Hq, T, T)   scratch of shape.probs_size() elements (dS); may be shared by
///                            every layer, its contents are overwritten
template <class T>
void attention_backward(const AttentionShape& shape, const MatrixView<const std::type_identity_t<T>>& qkv,
                        const TensorView<const std::type_identity_t<T>, 4>& probs,
                        const MatrixView<const std::type_identity_t<T>>& dout, const MatrixView<T>& dqkv,
                        const TensorView<T, 4>& dscores) {
  BONSAI_CHECK(probs.data() != dscores.data(), "attention_backward: probs and dscores must be different buffers");
  detail::attention_backward_blocked<T>(shape, qkv, probs, dout, dqkv, dscores, detail::attention_block);
}

/// attention_forward with the probabilities in a workspace, grown to shape.probs_size()
/// elements (once, for a fixed shape); pass the same workspace to attention_backward.
template <class T>
void attention_forward(const AttentionShape& shape, const MatrixView<const std::type_identity_t<T>>& qkv,
                       const MatrixView<T>& out, Workspace<T>& probs) {
  shape.validate();
  attention_forward<T>(shape, qkv, out, detail::scores_view(shape, probs.reserve(shape.probs_size())));
}

/// attention_backward from a workspace filled by attention_forward's Workspace overload; dS goes
/// to a per-thread scratch of shape.probs_size() elements that grows once and is shared by
/// every layer.
template <class T>
void attention_backward(const AttentionShape& shape, const MatrixView<const std::type_identity_t<T>>& qkv,
                        const Workspace<T>& probs, const MatrixView<const std::type_identity_t<T>>& dout,
                        const MatrixView<T>& dqkv) {
  shape.validate();
  BONSAI_CHECK(probs.capacity() >= shape.probs_size(), "attention_backward: the probs workspace holds ",
               probs.capacity(), " elements but ", shape, " saved ", shape.probs_size(),
               " (run attention_forward first)");
  Workspace<T>& scratch = detail::backward_scratch<T>();
  attention_backward<T>(shape, qkv, detail::scores_view(shape, probs.data()), dout, dqkv,
                        detail::scores_view(shape, scratch.reserve(shape.probs_size())));
}

/// Decoding step with a KV cache: appends the keys and values of n = shape.seq new tokens at
/// positions [pos, pos + n) to `cache` and attends each new query at position p to the cached
/// positions [0, p]. Its rows equal attention_forward's rows for those positions (up to
/// rounding). Apply RoPE with position offset `pos` to qkv_new before calling.
///   qkv_new (B*n, A + 2KV)  row b*n + r is token r of sequence b
///   cache   (B, Hkv, max_T, hd) keys and values; positions [0, pos) must be filled
///           (pos <= cache.length()); afterwards cache.length() == pos + n
///   out     (B*n, A)        written (=)
template <class T>
void attention_decode(const AttentionShape& s, const MatrixView<const std::type_identity_t<T>>& qkv_new,
                      index_t pos, KvCache<T>& cache, const MatrixView<T>& out) {
  detail::check_attention_views<T>("attention_decode", s, qkv_new, "out", out.rows(), out.cols(), out.stride(1));
  const index_t B = s.batch, n = s.seq, H = s.heads, Hkv = s.kv_heads,
                hd = s.head_dim, A = s.q_width(), KV = s.kv_width(), G = s.group();
  BONSAI_CHECK(cache.batch() == B && cache.kv_heads() == Hkv && cache.head_dim() == hd,
               "attention_decode: the cache holds ",
               shape{cache.batch(), cache.kv_heads(), cache.max_seq(), cache.head_dim()},
               " (B, Hkv, max_T, hd) but the call has ", s);
  BONSAI_CHECK(pos >= 0 && pos <= cache.length() && pos + n <= cache.max_seq(),
               "attention_decode: tokens at positions [", pos, ", ", pos + n,
               ") do not follow the cache's filled positions [0, ", cache.length(), ") within max_T = ",
               cache.max_seq());
  const index_t L = pos + n, maxT = cache.max_seq(), ldq = qkv_new.ld(), ldo = out.ld();
  T* keys = cache.keys().data();
  T* values = cache.values().data();
  const T scale = T(1) / std::sqrt(T(hd));

  // Append: cache[b, g, pos + r, :] = k, v of row b*n + r.
  parallel_for(
      B * Hkv,
      [&](index_t bg) {
        const index_t b = bg / Hkv, g = bg % Hkv;
        for (index_t r = 0; r < n; ++r) {
          const T* x = qkv_new.data() + (b * n + r) * ldq;
          std::copy(x + A + g * hd, x + A + (g + 1) * hd, keys + (bg * maxT + pos + r) * hd);
          std::copy(x + A + KV + g * hd, x + A + KV + (g + 1) * hd, values + (bg * maxT + pos + r) * hd);
        }
      },
      2 * n * hd);
  cache.set_length(L);

  detail::parallel_tasks(B * H, [&](index_t bh) {
    const index_t b = bh / H, h = bh % H, bg = b * Hkv + h / G;
    const auto sc = detail::decode_scratch<T>().matrix(n, L);               // (n, L) scores
    const auto q = matrix_view(qkv_new.data() + b * n * ldq + h * hd, n, hd, ldq);  // (n, hd)
    const auto k = matrix_view<Host, const T>(keys + bg * maxT * hd, L, hd);       // (L, hd)
    const auto v = matrix_view<Host, const T>(values + bg * maxT * hd, L, hd);     // (L, hd)
    gemm<T>(scale, q, Op::N, k, Op::T, T(0), sc);
    for (index_t r = 0; r < n; ++r) detail::softmax_row(sc.data() + r * L, pos + r + 1, L);
    gemm<T>(T(1), sc, Op::N, v, Op::N, T(0), matrix_view(out.data() + b * n * ldo + h * hd, n, hd, ldo));
  });
}

}  // namespace bonsai::cpu
