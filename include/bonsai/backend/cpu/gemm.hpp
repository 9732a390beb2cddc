// bonsai/backend/cpu/gemm.hpp — the CPU backend's one matrix-product entry point, row-major:
// C = alpha op(A) op(B) + beta C, op(X) = X or X^T. float runs on oneDNN's dnnl_sgemm when the
// program is built with BONSAI_USE_ONEDNN=1 (the bonsai::onednn CMake target; about 1.6x
// Eigen's speed on AVX-512 machines); everything else runs on Eigen's GEMM. A whole program must
// use one choice.
#pragma once

#include <type_traits>

#include "../../core/eigen.hpp"
#include "../../core/tensor.hpp"
#include "../ops.hpp"
#include "transpose.hpp"

#if !defined(BONSAI_USE_ONEDNN)
#  define BONSAI_USE_ONEDNN 0
#endif
#if BONSAI_USE_ONEDNN
#  include <dnnl.h>
#endif

namespace bonsai::cpu {

/// The library behind float GEMMs in this build: "oneDNN" or "Eigen".
inline const char* gemm_library() noexcept { return BONSAI_USE_ONEDNN ? "oneDNN" : "Eigen"; }

namespace detail {

/// Widest op(B) = B^T that gemm transposes into a workspace before calling oneDNN.
inline constexpr index_t transpose_b_max_cols = 512;

template <class T>
void gemm_eigen(T alpha, const MatrixView<const T, Host>& a, Op opa,
                const MatrixView<const T, Host>& b, Op opb, T beta, const MatrixView<T, Host>& c) {
  auto A = as_eigen(a);
  auto B = as_eigen(b);
  auto C = as_eigen(c);
  if (beta == T(0))
    C.setZero();
  else if (beta != T(1))
    C *= beta;
  if (opa == Op::N && opb == Op::N)
    C.noalias() += alpha * A * B;
  else if (opa == Op::N)
    C.noalias() += alpha * A * B.transpose();
  else if (opb == Op::N)
    C.noalias() += alpha * A.transpose() * B;
  else
    C.noalias() += alpha * A.transpose() * B.transpose();
}

}  // namespace detail

/// C (m, n) = alpha op(A) op(B) + beta C with op(A) (m, k) and op(B) (k, n); all row-major with
/// contiguous rows. beta = 0 ignores C's old contents (NaNs included).
template <class T>
void gemm(T alpha, const MatrixView<const std::type_identity_t<T>, Host>& a, Op opa,
          const MatrixView<const std::type_identity_t<T>, Host>& b, Op opb, std::type_identity_t<T> beta,
          const MatrixView<std::type_identity_t<T>, Host>& c) {
  const index_t m = opa == Op::N ? a.rows() : a.cols();
  const index_t k = opa == Op::N ? a.cols() : a.rows();
  const index_t kb = opb == Op::N ? b.rows() : b.cols();
  const index_t n = opb == Op::N ? b.cols() : b.rows();
  BONSAI_CHECK(k == kb && m == c.rows() && n == c.cols(), "gemm: op(A) has shape ", shape{m, k},
               " and op(B) has shape ", shape{kb, n}, " but C has shape ",
               shape{c.rows(), c.cols()});
  if (m == 0 || n == 0) return;
#if BONSAI_USE_ONEDNN
  if constexpr (std::is_same_v<T, float>) {
    // dnnl_sgemm runs at ~260 GFLOP/s on op(B) = B^T with few output columns (n <= 256, the
    // low-rank and block shapes) but at ~410 on B stored (k, n): transpose the small B first.
    if (opb == Op::T && n <= detail::transpose_b_max_cols && m >= 4 * n) {
      thread_local Workspace<float> bt_storage;
      const auto bt = bt_storage.matrix(k, n);  // (k, n) = B^T
      transpose<float>(b, bt);
      return gemm(alpha, a, opa, MatrixView<const float, Host>(bt), Op::N, beta, c);
    }
    const dnnl_status_t st =
        dnnl_sgemm(opa == Op::N ? 'N' : 'T', opb == Op::N ? 'N' : 'T', m, n, k, alpha, a.data(),
                   a.ld(), b.data(), b.ld(), beta, c.data(), c.ld());
    BONSAI_CHECK(st == dnnl_success, "gemm: dnnl_sgemm failed with status ", int(st),
                 " for shapes ", shape{m, k}, " x ", shape{k, n});
    return;
  }
#endif
  detail::gemm_eigen(alpha, a, opa, b, opb, beta, c);
}

}  // namespace bonsai::cpu
