// The paper's initialisers: normal scale, SVD-balanced LowRank, orthogonal polar factors,
// reproducibility from the seed.
#include "support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

TEST_CASE("init_normal draws N(0, 0.02^2)") {
  Rng rng(81);
  Owned f(Dense<double>(256, 512));
  init_normal(f.map, rng);
  const auto w = as_eigen(f.map.weight());
  const double mean = w.mean();
  const double stddev = std::sqrt((w.array() - mean).square().mean());
  CHECK(std::abs(mean) < 1e-3);
  CHECK(stddev == doctest::Approx(0.02).epsilon(0.01));
}

TEST_CASE("init_svd gives the best rank-R approximation of the dense draw, balanced") {
  const index_t n = 24, m = 40, r = 6;
  Owned f(LowRank<double>(n, m, r));
  Rng rng(82);
  init_svd(f.map, rng);
  // Redraw W0 from the same seed, in the same order.
  Rng again(82);
  Matrix<double> w0(m, n);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) w0(i, j) = again.normal(0.0, 0.02);
  // The oracle: Jacobi SVD, another algorithm than the initialiser's BDCSVD.
  Eigen::JacobiSVD<EigenRowMajor<double>> svd(as_eigen(w0), Eigen::ComputeThinU | Eigen::ComputeThinV);
  const EigenRowMajor<double> best = svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal() *
                                     svd.matrixV().leftCols(r).transpose();
  CHECK(test::rel_error(as_eigen(f.map.to_dense()), best) < 1e-12);
  const Eigen::VectorXd root = svd.singularValues().head(r).cwiseSqrt();
  Eigen::JacobiSVD<EigenRowMajor<double>> su(as_eigen(f.map.u())), sv(as_eigen(f.map.v()));
  CHECK((su.singularValues() - root).cwiseAbs().maxCoeff() < 1e-12);
  CHECK((sv.singularValues() - root).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("init_ortho makes every block an orthogonal polar factor") {
  Rng rng(83);
  for (auto [n, m] : {std::pair<index_t, index_t>{16, 48}, {48, 16}}) {
    Owned f(block_shuffle<double>(n, m, 4));
    initialize(f.map, rng);  // BlockShuffle default: ortho
    auto check_block = [](const MatrixView<double>& a) {
      const auto e = as_eigen(a);
      if (a.rows() <= a.cols())
        CHECK((e * e.transpose()).isIdentity(1e-12));  // wide: A A^T = I
      else
        CHECK((e.transpose() * e).isIdentity(1e-12));  // tall: A^T A = I
    };
    for (index_t i = 0; i < 4; ++i) {
      check_block(f.map.factor<3>().block(i));
      check_block(f.map.factor<1>().block(i));
    }
  }
  Owned bd(block_dense<double>(16, 32, 8, 2));
  initialize(bd.map, rng);
  Eigen::JacobiSVD<EigenRowMajor<double>> s(as_eigen(bd.map.factor<0>().weight()));
  CHECK((s.singularValues().array() - 1.0).abs().maxCoeff() < 1e-12);
}

TEST_CASE("initialisation is reproducible from the seed") {
  Owned a(block_dense<float>(32, 64, 16, 2)), b(block_dense<float>(32, 64, 16, 2));
  Rng ra(7), rb(7), rc(8);
  initialize(a.map, ra);
  initialize(b.map, rb);
  CHECK(std::equal(a.storage.data(), a.storage.data() + a.storage.size(), b.storage.data()));
  initialize(b.map, rc);
  CHECK(!std::equal(a.storage.data(), a.storage.data() + a.storage.size(), b.storage.data()));
}

TEST_CASE("initialisers refuse an unbound map") {
  Rng rng(1);
  CHECK_THROWS_WITH_AS(init_normal(Dense<float>(4, 4), rng), doctest::Contains("not bound"), Error);
}
