// LowRank: against to_dense for ranks 1..full, finite differences, counts, errors.
#include "support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

TEST_CASE_TEMPLATE("LowRank matches U V for every rank", T, float, double) {
  Rng rng(21);
  for (auto [n, m] : {std::pair<index_t, index_t>{16, 16}, {12, 36}, {36, 12}}) {
    for (index_t r = 1; r <= std::min(n, m); r += 5) {
      CAPTURE(n);
      CAPTURE(m);
      CAPTURE(r);
      Owned f(LowRank<T>(n, m, r));
      init_normal(f.map, rng, 0.5);
      for (index_t tokens : {1, 9}) test::check_against_dense(f.map, tokens, rng);
      // rank(W_merged) = R for random factors.
      const Matrix<T> w = f.map.to_dense();
      Eigen::FullPivLU<EigenRowMajor<T>> lu(as_eigen(w));
      CHECK(lu.rank() == r);
    }
  }
}

TEST_CASE("LowRank gradients match finite differences") {
  Rng rng(22);
  Owned f(LowRank<double>(7, 10, 3));
  init_normal(f.map, rng, 0.5);
  test::check_gradients(f, 4, rng, test::no_epilogue);
  test::check_gradients(f, 4, rng, test::bias_gelu_epilogue);
}

TEST_CASE("LowRank parameter counts of the paper") {
  CHECK(LowRank<float>(768, 3072, 192).param_count() == 737280);
  CHECK(LowRank<float>(768, 3072, 384).param_count() == 1474560);
  const index_t pair = LowRank<float>(768, 3072, 384).param_count() + LowRank<float>(3072, 768, 384).param_count();
  CHECK(pair == 2949120);
  CHECK(double(pair) / (2 * 768 * 3072) == doctest::Approx(0.625));
  // xl: d = 2048, R = 512 pair is 31.25% of the dense pair 33,554,432.
  CHECK(2 * LowRank<float>(2048, 8192, 512).param_count() == 10485760);
  CHECK(LowRank<float>(768, 3072, 192).flops(10) == 2 * 10 * 737280);
  const auto p = LowRank<float>(8, 6, 2).parameters();
  REQUIRE(p.size() == 2);
  CHECK(p[0] == ParamInfo{"V", {2, 8}});
  CHECK(p[1] == ParamInfo{"U", {6, 2}});
}

TEST_CASE("LowRank with full rank represents any matrix") {
  Rng rng(23);
  const index_t n = 9, m = 6;
  auto w = test::random_matrix<double>(m, n, rng);
  Owned f(LowRank<double>(n, m, std::min(n, m)));
  Eigen::JacobiSVD<EigenRowMajor<double>> svd(as_eigen(w), Eigen::ComputeThinU | Eigen::ComputeThinV);
  const auto root = svd.singularValues().cwiseSqrt().asDiagonal();
  as_eigen(f.map.v()) = root * svd.matrixV().transpose();
  as_eigen(f.map.u()) = svd.matrixU() * root;
  CHECK(test::rel_error(as_eigen(f.map.to_dense()), as_eigen(w)) < 1e-12);
}

TEST_CASE("LowRank rejects a rank above min(in, out)") {
  CHECK_THROWS_WITH_AS(LowRank<float>(768, 512, 600),
                       doctest::Contains("rank = 600 exceeds min(in_features, out_features) = min(768, 512)"),
                       Error);
  CHECK_THROWS_AS(LowRank<float>(8, 8, 0), Error);
}
