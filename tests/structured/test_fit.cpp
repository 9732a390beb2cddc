// fit_dense: the member of a structure nearest to a dense W. A member is reproduced exactly, the
// fit is a projection (fitting its own result changes nothing), LowRank's error is the
// Eckart-Young tail, and no small move of the fitted parameters gets closer to W.
#include <Eigen/SVD>

#include <array>

#include <bonsai/structured/fit.hpp>

#include "support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

namespace {

template <class Map>
double distance(const Map& map, const Matrix<double>& w) {
  return (as_eigen(map.to_dense()) - as_eigen(w)).norm();
}

/// A member is reproduced, a random W is projected (fit of the fit is the fit), and random
/// small moves of the fitted parameters never bring it closer to W.
template <class Map>
void check_fit(const Map& shape, Rng& rng) {
  Owned member(shape), fit(shape), again(shape);
  init_normal(member.map, rng, 0.5);
  const Matrix<double> m = member.map.to_dense();  // (out, in)
  fit_dense(fit.map, MatrixView<const double, Host>(m.view()));
  CHECK(distance(fit.map, m) < 1e-10 * as_eigen(m).norm());

  const Matrix<double> w = test::random_matrix<double>(shape.out_features(), shape.in_features(), rng);
  fit_dense(fit.map, MatrixView<const double, Host>(w.view()));
  const Matrix<double> f = fit.map.to_dense();
  fit_dense(again.map, MatrixView<const double, Host>(f.view()));
  CHECK(distance(again.map, f) < 1e-10 * as_eigen(f).norm());

  const double best = distance(fit.map, w);
  Owned moved(shape);
  for (int trial = 0; trial < 20; ++trial) {
    for (index_t i = 0; i < fit.storage.size(); ++i)
      moved.storage.data()[i] = fit.storage.data()[i] + rng.normal(0.0, 1e-3);
    CHECK(distance(moved.map, w) >= best * (1 - 1e-12));
  }
}

}  // namespace

TEST_CASE("fit_dense: LowRank is the truncated SVD (Eckart-Young)") {
  Rng rng(5);
  for (const auto& shape : {std::array<index_t, 3>{12, 20, 4}, {20, 12, 5}, {9, 9, 9}}) {
    CAPTURE(shape);
    const index_t in = shape[0], out = shape[1], rank = shape[2];
    check_fit(LowRank<double>(in, out, rank), rng);
    Owned fit(LowRank<double>(in, out, rank));
    const Matrix<double> w = test::random_matrix<double>(out, in, rng);
    fit_dense(fit.map, MatrixView<const double, Host>(w.view()));
    Eigen::JacobiSVD<Eigen::MatrixXd> svd(as_eigen(w));
    const auto s = svd.singularValues();
    const double tail = s.tail(s.size() - rank).norm();
    CHECK(distance(fit.map, w) == doctest::Approx(tail).epsilon(1e-9));
    // U and V share the singular values: both have the column/row norms sqrt(s_k).
    for (index_t k = 0; k < rank; ++k) {
      CHECK(as_eigen(fit.map.u()).col(k).norm() == doctest::Approx(std::sqrt(s(k))).epsilon(1e-9));
      CHECK(as_eigen(fit.map.v()).row(k).norm() == doctest::Approx(std::sqrt(s(k))).epsilon(1e-9));
    }
  }
}

TEST_CASE("fit_dense: Dense, BlockDense and BlockShuffle reproduce members and project the rest") {
  Rng rng(6);
  check_fit(Dense<double>(7, 5), rng);
  for (const auto& s : {std::array<index_t, 4>{16, 12, 8, 4}, {12, 20, 6, 3}, {8, 8, 8, 1}}) {
    CAPTURE(s);  // in, out, rank, blocks
    check_fit(block_dense<double>(s[0], s[1], s[2], s[3]), rng);
  }
  // q = min(in, out)/B above and below B: every (output block, input block) pair fitted by SVD.
  for (const auto& s : {std::array<index_t, 3>{16, 16, 2}, {16, 16, 4}, {8, 24, 2}, {24, 8, 4},
                        {12, 36, 3}, {8, 8, 4}, {6, 6, 1}}) {
    CAPTURE(s);  // in, out, blocks
    check_fit(block_shuffle<double>(s[0], s[1], s[2]), rng);
  }
}

TEST_CASE("fit_dense names both shapes when W does not fit the map") {
  Owned fit(LowRank<double>(6, 4, 2));
  const Matrix<double> w(6, 4);  // (in, out): transposed
  CHECK_THROWS_WITH(fit_dense(fit.map, MatrixView<const double, Host>(w.view())),
                    doctest::Contains("maps 6 -> 4 features but W is (6, 4); expected (4, 6)"));
}
