// bonsai/structured/fit.hpp — fit_dense(map, W): sets a bound structured map to the member of
// its structure nearest to a dense W (out, in) in the Frobenius norm. Each structure here is a
// sum of low-rank pieces on disjoint parameters, so the nearest member is one truncated SVD per
// piece (Eckart-Young), with the singular values shared evenly between the two factors:
//   Dense         W itself;
//   LowRank       U V = the best rank-R approximation of W;
//   BlockDense    U_i V_i = the best rank-R/B approximation of W's column block i (in/B wide),
//                 U_i the columns iR/B .. (i+1)R/B of U;
//   BlockShuffle  block (c, i) of W (rows jB + c, columns of input block i) is a sum over the
//                 intermediate features that input block i sends to output block c, so it gets
//                 the best approximation of that rank (Monarch's projection, generalised to
//                 in != out).
// This is how a trained dense model starts a structured one (nn/from_dense.hpp).
#pragma once

#include <vector>

#include "block_dense.hpp"
#include "block_shuffle.hpp"
#include "dense.hpp"
#include "init.hpp"
#include "low_rank.hpp"

namespace bonsai {

namespace detail {

template <class M, class T>
void require_fit_shape(const M& map, const MatrixView<const T, Host>& w, const char* who) {
  require_bound(map, "fit_dense");
  BONSAI_CHECK(w.rows() == map.out_features() && w.cols() == map.in_features(), "fit_dense: ", who,
               " maps ", map.in_features(), " -> ", map.out_features(), " features but W is (",
               w.rows(), ", ", w.cols(), "); expected (", map.out_features(), ", ",
               map.in_features(), ")");
}

}  // namespace detail

/// Dense: the weight becomes W.
template <class T, index_t I, index_t O>
void fit_dense(const Dense<T, I, O>& f, const MatrixView<const T, Host>& w) {
  detail::require_fit_shape(f, w, "Dense");
  as_eigen(f.weight()) = as_eigen(w);
}

/// LowRank: U V = the best rank-R approximation of W; U and V share its singular values.
template <class T, index_t I, index_t O>
void fit_dense(const LowRank<T, I, O>& f, const MatrixView<const T, Host>& w) {
  detail::require_fit_shape(f, w, "LowRank");
  detail::balanced_svd_factors<T>(w, f.u(), f.v());
}

/// BlockDense U blockdiag(V_0..V_{B-1}): W's column block i (out, in/B) = U_i V_i, each the best
/// rank-R/B approximation of its block.
template <class T>
void fit_dense(const BlockDense<T>& f, const MatrixView<const T, Host>& w) {
  detail::require_fit_shape(f, w, "BlockDense");
  const auto& u = f.template factor<0>();  // Dense (out, R)
  const auto& v = f.template factor<1>();  // BlockDiag in -> R
  const index_t p = v.block_in(), r = v.block_out();
  for (index_t i = 0; i < v.blocks(); ++i)
    detail::balanced_svd_factors<T>(columns(w, i * p, p), columns(u.weight(), i * r, r), v.block(i));
}

/// BlockShuffle P_{B,s} blockdiag(U) P_{q,B} blockdiag(V): output block c (rows jB + c) reads the
/// intermediate features c, c + B, c + 2B, ...; those in input block i's range (rows r of V_i,
/// columns k of U_c) make block (c, i) of W a product of rank at most ceil(q/B), fitted by SVD.
template <class T>
void fit_dense(const BlockShuffle<T>& f, const MatrixView<const T, Host>& w) {
  detail::require_fit_shape(f, w, "BlockShuffle");
  const auto& u = f.template factor<1>();  // B blocks U_c (s, q)
  const auto& v = f.template factor<3>();  // B blocks V_i (q, p)
  const index_t B = v.blocks(), p = v.block_in(), q = v.block_out(), s = u.block_out();
  std::vector<index_t> ks;  // the columns k of U_c that input block i feeds
  for (index_t c = 0; c < B; ++c) {
    for (index_t i = 0; i < B; ++i) {
      ks.clear();
      for (index_t k = 0; k < q; ++k)
        if ((c + k * B) / q == i) ks.push_back(k);
      if (ks.empty()) continue;  // no path from input block i to output block c
      const index_t n = index_t(ks.size());
      // W's rows jB + c and columns ip .. ip + p - 1: (s, p) with row stride B in.
      const MatrixView<const T, Host> block(w.data() + c * w.stride(0) + i * p, {s, p},
                                            {B * w.stride(0), 1});
      Matrix<T> uc(s, n), vi(n, p);  // (s, n), (n, p)
      detail::balanced_svd_factors<T>(block, uc.view(), vi.view());
      const auto ub = u.block(c), vb = v.block(i), ut = uc.view(), vt = vi.view();
      for (index_t l = 0; l < n; ++l) {
        const index_t k = ks[std::size_t(l)], row = c + k * B - i * q;  // V_i's row for U_c's column k
        for (index_t j = 0; j < s; ++j) ub(j, k) = ut(j, l);
        for (index_t x = 0; x < p; ++x) vb(row, x) = vt(l, x);
      }
    }
  }
}

}  // namespace bonsai
