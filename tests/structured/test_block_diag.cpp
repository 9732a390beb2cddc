// BlockDiag: against to_dense for B in {1, 2, 4}, finite differences, counts, errors.
#include "support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

TEST_CASE_TEMPLATE("BlockDiag matches its block-diagonal matrix", T, float, double) {
  Rng rng(31);
  for (auto [n, m] : {std::pair<index_t, index_t>{16, 16}, {8, 24}, {24, 8}}) {
    for (index_t b : {1, 2, 4}) {
      CAPTURE(n);
      CAPTURE(m);
      CAPTURE(b);
      Owned f(BlockDiag<T>(n, m, b));
      init_normal(f.map, rng, 0.5);
      for (index_t tokens : {1, 7, 33}) test::check_against_dense(f.map, tokens, rng);
      // Off-diagonal blocks of W_merged are exactly zero.
      const Matrix<T> w = f.map.to_dense();
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j)
          if (i / (m / b) != j / (n / b)) REQUIRE(w(i, j) == T(0));
    }
  }
}

TEST_CASE("BlockDiag gradients match finite differences") {
  Rng rng(32);
  Owned f(BlockDiag<double>(6, 9, 3));
  init_normal(f.map, rng, 0.5);
  test::check_gradients(f, 4, rng, test::no_epilogue);
  test::check_gradients(f, 4, rng, test::bias_epilogue);
  test::check_gradients(f, 4, rng, test::bias_gelu_epilogue);
}

TEST_CASE("BlockDiag counts and parameter shapes") {
  BlockDiag<float> f(768, 3072, 4);
  CHECK(f.param_count() == 768 * 3072 / 4);
  CHECK(f.flops(3) == 2 * 3 * f.param_count());
  REQUIRE(f.parameters().size() == 1);
  CHECK(f.parameters()[0] == ParamInfo{"blocks", {4, 768, 192}});
}

TEST_CASE("BlockDiag rejects widths not divisible by the block count") {
  CHECK_THROWS_WITH_AS(BlockDiag<float>(10, 8, 4),
                       doctest::Contains("in_features = 10 is not divisible by blocks = 4"), Error);
  CHECK_THROWS_WITH_AS(BlockDiag<float>(8, 10, 4),
                       doctest::Contains("out_features = 10 is not divisible by blocks = 4"), Error);
}
