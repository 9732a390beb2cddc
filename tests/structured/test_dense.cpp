// Dense: forward/backward against to_dense, finite differences, counts, static extents, errors.
#include "../support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

TEST_CASE_TEMPLATE("Dense matches its dense matrix", T, float, double) {
  Rng rng(11);
  for (auto [n, m] : {std::pair<index_t, index_t>{16, 16}, {16, 40}, {40, 16}, {1, 7}}) {
    CAPTURE(n);
    CAPTURE(m);
    Owned f(Dense<T>(n, m));
    init_normal(f.map, rng, 1.0);
    for (index_t tokens : {1, 7, 33}) test::check_against_dense(f.map, tokens, rng);
  }
}

TEST_CASE("Dense gradients match finite differences, with every epilogue") {
  Rng rng(12);
  Owned f(Dense<double>(6, 9));
  init_normal(f.map, rng, 0.5);
  test::check_gradients(f, 5, rng, test::no_epilogue);
  test::check_gradients(f, 5, rng, test::bias_epilogue);
  test::check_gradients(f, 5, rng, test::bias_gelu_epilogue);
}

TEST_CASE("Dense counts and parameters") {
  Dense<float> f(768, 3072);
  CHECK(f.param_count() == 2359296);
  CHECK(f.flops(2048) == 2 * 2048 * f.param_count());
  REQUIRE(f.parameters().size() == 1);
  CHECK(f.parameters()[0] == ParamInfo{"weight", {3072, 768}});
}

TEST_CASE("Dense with static extents") {
  Dense<float, 8, 4> s;
  CHECK(s.in_features() == 8);
  CHECK(s.out_features() == 4);
  CHECK(Dense<float, 8, 4>::static_in == 8);
  using Static = Dense<float, 8, 4>;
  CHECK_NOTHROW(Static(8, 4));
  CHECK_THROWS_AS(Static(8, 5), Error);
  Rng rng(3);
  Owned f(s);
  init_normal(f.map, rng);
  test::check_against_dense(f.map, 5, rng);
}

TEST_CASE("Dense rejects bad shapes with both shapes named") {
  Rng rng(4);
  Owned f(Dense<float>(8, 4));
  Context<Dense<float>> ctx;
  Matrix<float> x(3, 6), y(3, 4);
  CHECK_THROWS_WITH_AS(forward(f.map, x.view(), y.view(), ctx),
                       doctest::Contains("x has shape (3, 6) but the map takes 8 input features"), Error);
  Matrix<float> x2(3, 8), y2(3, 5);
  CHECK_THROWS_WITH_AS(forward(f.map, x2.view(), y2.view(), ctx),
                       doctest::Contains("y has shape (3, 5) but x of shape (3, 8) maps to (3, 4)"), Error);
  CHECK_THROWS_WITH_AS(Dense<float>(0, 4), doctest::Contains("in_features must be positive"), Error);
  Dense<float> unbound(8, 4);
  CHECK_THROWS_WITH_AS(forward(unbound, x2.view(), y.view(), ctx), doctest::Contains("not bound"), Error);
  Vector<float> wrong(31);
  CHECK_THROWS_WITH_AS(bind(unbound, wrong.view()),
                       doctest::Contains("storage has 31 elements but the map has 32 parameters"), Error);
}

TEST_CASE("forward refuses an output that overlaps the input") {
  Owned f(Dense<float>(4, 4));
  Context<Dense<float>> ctx;
  Matrix<float> x(3, 4);
  CHECK_THROWS_WITH_AS(forward(f.map, MatrixView<const float>(x.view()), x.view(), ctx),
                       doctest::Contains("overlaps"), Error);
}

TEST_CASE("backward writes dx with = and accumulates parameter gradients with +=") {
  Rng rng(5);
  Owned f(Dense<double>(5, 3));
  init_normal(f.map, rng, 1.0);
  auto x = test::random_matrix<double>(4, 5, rng);
  auto dy = test::random_matrix<double>(4, 3, rng);
  Matrix<double> y(4, 3), dx(4, 5);
  Context<Dense<double>> ctx;
  forward(f.map, x.view(), y.view(), ctx);
  Owned g(f.map);
  backward(f.map, ctx, dy.view(), dx.view(), g.map);
  const Matrix<double> once = to_matrix(as_eigen(g.map.weight()));
  const Matrix<double> dx_once = to_matrix(as_eigen(dx));
  backward(f.map, ctx, dy.view(), dx.view(), g.map);
  CHECK(test::rel_error(as_eigen(g.map.weight()), 2 * as_eigen(once)) < 1e-14);
  CHECK(test::rel_error(as_eigen(dx), as_eigen(dx_once)) < 1e-14);
  // An empty dx skips the input gradient but still accumulates dW.
  backward(f.map, ctx, dy.view(), MatrixView<double>{}, g.map);
  CHECK(test::rel_error(as_eigen(g.map.weight()), 3 * as_eigen(once)) < 1e-14);
  Matrix<double> bad_dy(5, 3);
  CHECK_THROWS_WITH_AS(backward(f.map, ctx, bad_dy.view(), dx.view(), g.map),
                       doctest::Contains("dy has shape (5, 3) but the forward pass produced (4, 3)"), Error);
}
