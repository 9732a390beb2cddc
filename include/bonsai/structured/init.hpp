// bonsai/structured/init.hpp — the Structured-FFN paper's initialisers (spec §5), seeded by an
// Rng, on maps bound to host memory:
//  - init_normal: every weight ~ N(0, std^2) (std = 0.02);
//  - init_svd (LowRank): draw W0 ~ N(0, std^2) of shape (out, in), W0 = P S Q^T, then
//    V = sqrt(S_R) Q_R^T and U = P_R sqrt(S_R): U V is the best rank-R approximation of W0;
//  - init_ortho: draw N(0, std^2), then replace every matrix (each block, each dense factor) by
//    its orthogonal polar factor A <- P Q^T, so all its singular values are 1;
//  - initialize: the paper's default per type: Dense normal, LowRank svd, block types ortho;
//    SelfGuided: its structured map's default, then the guide W = S.to_dense() (init_guide),
//    for BlockShuffle with both shuffles, so the guided layer starts as the structured one.
#pragma once

#include <Eigen/SVD>
#include <cmath>

#include "../core/rng.hpp"
#include "block_dense.hpp"
#include "block_shuffle.hpp"
#include "dense.hpp"
#include "low_rank.hpp"
#include "self_guided.hpp"

namespace bonsai {

/// The paper's weight scale, N(0, 0.02^2).
inline constexpr double default_init_std = 0.02;

namespace detail {

template <class M>
void require_bound(const M& m, const char* who) {
  BONSAI_CHECK(m.is_bound(), who, ": the map's parameters are not bound to storage");
}

template <class T>
void fill_normal_matrix(const MatrixView<T, Host>& a, Rng& rng, double stddev) {
  for (index_t i = 0; i < a.rows(); ++i)
    for (index_t j = 0; j < a.cols(); ++j) a(i, j) = static_cast<T>(rng.normal(0.0, stddev));
}

// The two functions below are bonsai's only uses of Eigen's SVD, by far its costliest template
// to compile (about 30 s and 1.3 GB per scalar type, at any optimisation level). They are
// out-of-line templates, so a program can compile them once: BONSAI_SVD_INSTANCES in
// bonsai/instances.hpp.

/// A <- P Q^T where A = P S Q^T (thin SVD): the nearest matrix with orthonormal rows or columns.
template <class T>
void to_polar_factor(const MatrixView<T, Host>& a) {
  auto e = as_eigen(a);
  Eigen::BDCSVD<EigenRowMajor<T>> svd(e, Eigen::ComputeThinU | Eigen::ComputeThinV);
  e = svd.matrixU() * svd.matrixV().transpose();
}

/// V = sqrt(S_R) Q_R^T (R, in) and U = P_R sqrt(S_R) (out, R) from W0 = P S Q^T (out, in): U V
/// is the best rank-R approximation of W0, with U and V sharing its singular values evenly.
template <class T>
void balanced_svd_factors(const MatrixView<const T, Host>& w0, const MatrixView<T, Host>& u,
                          const MatrixView<T, Host>& v) {
  Eigen::BDCSVD<EigenRowMajor<T>> svd(as_eigen(w0), Eigen::ComputeThinU | Eigen::ComputeThinV);
  const index_t r = v.rows();
  const auto root = svd.singularValues().head(r).cwiseSqrt().asDiagonal();
  as_eigen(v) = root * svd.matrixV().leftCols(r).transpose();  // (R, in)
  as_eigen(u) = svd.matrixU().leftCols(r) * root;              // (out, R)
}

template <class T>
void ortho_matrix(const MatrixView<T, Host>& a, Rng& rng, double stddev) {
  fill_normal_matrix(a, rng, stddev);
  to_polar_factor(a);
}

}  // namespace detail

// ---- every weight matrix of a map --------------------------------------------------------

/// Calls f(matrix view) for every weight matrix of a bound map, in parameter order: Dense's
/// weight, LowRank's V then U, each block of a BlockDiag, the factors of a product in
/// application order.
template <class T, index_t I, index_t O, class F>
void for_each_weight_matrix(const Dense<T, I, O>& f, F&& fn) {
  detail::require_bound(f, "initialiser");
  fn(f.weight());
}
template <class T, index_t I, index_t O, class F>
void for_each_weight_matrix(const LowRank<T, I, O>& f, F&& fn) {
  detail::require_bound(f, "initialiser");
  fn(f.v());
  fn(f.u());
}
template <class T, index_t I, index_t O, class F>
void for_each_weight_matrix(const BlockDiag<T, I, O>& f, F&& fn) {
  detail::require_bound(f, "initialiser");
  for (index_t i = 0; i < f.blocks(); ++i) fn(f.block(i));
}
template <index_t N, class F>
void for_each_weight_matrix(const Shuffle<N>&, F&&) {}
template <class... Fs, class F>
void for_each_weight_matrix(const Product<Fs...>& p, F&& fn) {
  p.for_each_applied([&](std::size_t, const auto& f) { for_each_weight_matrix(f, fn); });
}
template <class S, class F>
void for_each_weight_matrix(const SelfGuided<S>& f, F&& fn) {
  for_each_weight_matrix(f.structured(), fn);
  for_each_weight_matrix(f.guide(), fn);
}

// ---- init_normal ---------------------------------------------------------------------------

/// Every weight ~ N(0, std^2).
template <LinearMap M>
void init_normal(const M& map, Rng& rng, double stddev = default_init_std) {
  for_each_weight_matrix(map, [&](const auto& w) { detail::fill_normal_matrix(w, rng, stddev); });
}

// ---- init_svd ------------------------------------------------------------------------------

/// SVD-balanced LowRank: U V = best rank-R approximation of a dense N(0, std^2) draw, and the
/// singular values of U and of V both equal sqrt(S_R).
template <class T, index_t I, index_t O>
void init_svd(const LowRank<T, I, O>& f, Rng& rng, double stddev = default_init_std) {
  detail::require_bound(f, "initialiser");
  Matrix<T> w0(f.out_features(), f.in_features());  // (out, in)
  detail::fill_normal_matrix(w0.view(), rng, stddev);
  detail::balanced_svd_factors<T>(MatrixView<const T, Host>(w0.view()), f.u(), f.v());
}

// ---- init_ortho ----------------------------------------------------------------------------

/// Every weight matrix (each block, each dense factor) drawn N(0, std^2), then replaced by its
/// orthogonal polar factor.
template <LinearMap M>
void init_ortho(const M& map, Rng& rng, double stddev = default_init_std) {
  for_each_weight_matrix(map, [&](const auto& w) { detail::ortho_matrix(w, rng, stddev); });
}

// ---- the paper's default per type ---------------------------------------------------------

template <class T, index_t I, index_t O>
void initialize(const Dense<T, I, O>& f, Rng& rng) { init_normal(f, rng); }
template <class T, index_t I, index_t O>
void initialize(const LowRank<T, I, O>& f, Rng& rng) { init_svd(f, rng); }
template <class T, index_t I, index_t O>
void initialize(const BlockDiag<T, I, O>& f, Rng& rng) { init_ortho(f, rng); }
template <index_t N>
void initialize(const Shuffle<N>&, Rng&) {}
/// BlockDense and BlockShuffle (and any other product): every factor ortho.
template <class... Fs>
void initialize(const Product<Fs...>& p, Rng& rng) { init_ortho(p, rng); }

/// The guide W <- S.to_dense(), so that a SelfGuided layer computes S x at every a.
template <class S>
void init_guide(const SelfGuided<S>& f) {
  detail::require_bound(f, "init_guide");
  as_eigen(f.guide().weight()) = as_eigen(f.structured().to_dense());
}
/// S by its own default, then the guide from it.
template <class S>
void initialize(const SelfGuided<S>& f, Rng& rng) {
  initialize(f.structured(), rng);
  init_guide(f);
}

}  // namespace bonsai
