// BlockDense = Dense * BlockDiag: against to_dense, B = 1 equals LowRank, counts, errors.
#include "support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

TEST_CASE_TEMPLATE("BlockDense matches U blockdiag(V)", T, float, double) {
  Rng rng(61);
  for (auto [n, m] : {std::pair<index_t, index_t>{16, 16}, {8, 24}, {24, 8}}) {
    for (index_t b : {1, 2, 4}) {
      for (index_t r : {b, 2 * b, index_t{8}}) {
        if (r % b != 0 || r > std::min(n, m)) continue;
        CAPTURE(n);
        CAPTURE(m);
        CAPTURE(b);
        CAPTURE(r);
        Owned f(block_dense<T>(n, m, r, b));
        initialize(f.map, rng);
        for (index_t tokens : {1, 7}) test::check_against_dense(f.map, tokens, rng);
        Eigen::FullPivLU<EigenRowMajor<T>> lu(as_eigen(f.map.to_dense()));
        CHECK(lu.rank() <= r);
      }
    }
  }
}

TEST_CASE("BlockDense with one block equals LowRank with the same U and V") {
  Rng rng(62);
  const index_t n = 10, m = 14, r = 4;
  BlockDense<double> bd = block_dense<double>(n, m, r, 1);
  LowRank<double> lr(n, m, r);
  REQUIRE(bd.param_count() == lr.param_count());
  Vector<double> storage(lr.param_count());
  fill_normal(storage.view(), rng);
  // Same layout: blocks (1, R, N) = V, then weight (M, R) = U.
  auto a = bind(bd, storage.view());
  auto b = bind(lr, storage.view());
  CHECK(test::rel_error(as_eigen(a.to_dense()), as_eigen(b.to_dense())) < 1e-14);
  auto x = test::random_matrix<double>(5, n, rng);
  Matrix<double> ya(5, m), yb(5, m);
  Context<BlockDense<double>> ca;
  Context<LowRank<double>> cb;
  forward(a, x.view(), ya.view(), ca);
  forward(b, x.view(), yb.view(), cb);
  CHECK(test::rel_error(as_eigen(ya), as_eigen(yb)) < 1e-14);
}

TEST_CASE("BlockDense gradients match finite differences") {
  Rng rng(63);
  Owned f(block_dense<double>(8, 6, 4, 2));
  initialize(f.map, rng);
  test::check_gradients(f, 3, rng, test::no_epilogue);
  test::check_gradients(f, 3, rng, test::bias_gelu_epilogue);
}

TEST_CASE("BlockDense parameter counts of the paper") {
  CHECK(block_dense<float>(768, 3072, 512, 2).param_count() == 1769472);
  CHECK(block_dense<float>(3072, 768, 512, 2).param_count() == 1179648);
  CHECK(block_dense<float>(768, 3072, 512, 2).param_count() + block_dense<float>(3072, 768, 512, 2).param_count() ==
        2949120);
  // xl, B = 4, R = 768: 9,830,400 for the pair (29.3% of dense).
  CHECK(block_dense<float>(2048, 8192, 768, 4).param_count() + block_dense<float>(8192, 2048, 768, 4).param_count() ==
        9830400);
  const auto p = block_dense<float>(768, 3072, 512, 2).parameters();
  REQUIRE(p.size() == 2);
  CHECK(p[0] == ParamInfo{"0.blocks", {2, 256, 384}});
  CHECK(p[1] == ParamInfo{"1.weight", {3072, 512}});
}

TEST_CASE("BlockDense rejects bad structure parameters") {
  CHECK_THROWS_WITH_AS(block_dense<float>(768, 3072, 510, 4), doctest::Contains("rank = 510 is not divisible by blocks = 4"), Error);
  CHECK_THROWS_WITH_AS(block_dense<float>(770, 3072, 512, 4), doctest::Contains("in_features = 770 is not divisible"), Error);
  CHECK_THROWS_WITH_AS(block_dense<float>(768, 512, 1024, 2), doctest::Contains("rank = 1024 exceeds"), Error);
}
