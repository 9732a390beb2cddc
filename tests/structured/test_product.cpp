// Product: composition order, flattening, parameter names and layout, chain errors, and the
// epilogue fused into a product that ends in a Shuffle.
#include "support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

TEST_CASE_TEMPLATE("a * b applies b first and equals the product of the dense matrices", T, float, double) {
  Rng rng(51);
  auto p = Dense<T>(6, 5) * LowRank<T>(8, 6, 3) * BlockDiag<T>(12, 8, 4);
  static_assert(std::is_same_v<decltype(p), Product<Dense<T>, LowRank<T>, BlockDiag<T>>>,
                "products flatten");
  CHECK(p.in_features() == 12);
  CHECK(p.out_features() == 5);
  Owned f(p);
  init_normal(f.map, rng, 0.5);
  const Matrix<T> w = f.map.to_dense();
  const Matrix<T> expect = to_matrix(as_eigen(f.map.template factor<0>().to_dense()) *
                                     as_eigen(f.map.template factor<1>().to_dense()) *
                                     as_eigen(f.map.template factor<2>().to_dense()));
  CHECK(test::rel_error(as_eigen(w), as_eigen(expect)) < test::tolerance<T>());
  for (index_t tokens : {1, 6, 31}) test::check_against_dense(f.map, tokens, rng);
}

TEST_CASE("Product parameters are named and laid out in application order") {
  auto p = Dense<float>(4, 3) * BlockDiag<float>(6, 4, 2);
  const auto params = p.parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0] == ParamInfo{"0.blocks", {2, 2, 3}});
  CHECK(params[1] == ParamInfo{"1.weight", {3, 4}});
  CHECK(p.param_count() == 12 + 12);
  CHECK(p.flops(5) == 2 * 5 * 24);
  Vector<float> storage(p.param_count());
  auto b = bind(p, storage.view());
  CHECK(b.factor<1>().weights().data() == storage.data());
  CHECK(b.factor<0>().weight().data() == storage.data() + 12);
}

TEST_CASE("Product gradients match finite differences") {
  Rng rng(52);
  Owned f(Dense<double>(4, 5) * Shuffle<>(2, 2) * LowRank<double>(6, 4, 2));
  init_normal(f.map, rng, 0.5);
  test::check_gradients(f, 3, rng, test::no_epilogue);
  test::check_gradients(f, 3, rng, test::bias_gelu_epilogue);
}

TEST_CASE("a product ending in a Shuffle fuses bias and GELU into the permuted store") {
  Rng rng(53);
  Owned f(Shuffle<>(3, 4) * Dense<double>(5, 12));
  init_normal(f.map, rng, 0.5);
  auto x = test::random_matrix<double>(7, 5, rng);
  Vector<double> bias(12), dbias(12);
  fill_normal(bias.view(), rng);
  Matrix<double> y(7, 12);
  Context<decltype(f.map)> ctx;
  forward(f.map, x.view(), y.view(), ctx, epilogue::BiasGelu<double>{bias.view(), dbias.view()});
  const Matrix<double> w = f.map.to_dense();
  EigenRowMajor<double> pre = as_eigen(x) * as_eigen(w).transpose();
  pre.rowwise() += Eigen::Map<const Eigen::RowVectorXd>(bias.data(), 12);
  for (index_t t = 0; t < 7; ++t)
    for (index_t j = 0; j < 12; ++j) CHECK(y(t, j) == doctest::Approx(epilogue::gelu(pre(t, j))).epsilon(1e-12));
  test::check_gradients(f, 4, rng, test::bias_gelu_epilogue);
  test::check_gradients(f, 4, rng, test::bias_epilogue);
}

TEST_CASE("Product rejects a factor chain whose widths disagree, naming both shapes") {
  CHECK_THROWS_WITH_AS(Dense<float>(3072, 768) * Dense<float>(512, 1024),
                       doctest::Contains("factor 1 maps 512 -> 1024 features but factor 0 to its left takes 3072"),
                       Error);
  CHECK_THROWS_WITH_AS(Dense<float>(3072, 768) * Dense<float>(512, 1024),
                       doctest::Contains("(1024, 512) and (768, 3072)"), Error);
}

TEST_CASE("Products of static extents check the chain at compile time") {
  auto p = Dense<float, 16, 4>() * Dense<float, 8, 16>();
  static_assert(decltype(p)::static_in == 8 && decltype(p)::static_out == 4);
  CHECK(p.in_features() == 8);
  // Mixed static and dynamic extents are checked at run time.
  using Static = Dense<float, 16, 4>;
  CHECK_THROWS_AS(Static() * Dense<float>(8, 15), Error);
}
