// Shuffle: the stride permutation's index map, inverse, and its lowering.
#include "support/maps.hpp"

using namespace bonsai;

TEST_CASE("Shuffle(a, b) moves feature i b + j to j a + i") {
  const index_t a = 3, b = 5, n = a * b, tokens = 2;
  Shuffle<> p(a, b);
  Matrix<double> x(tokens, n), y(tokens, n);
  for (index_t t = 0; t < tokens; ++t)
    for (index_t k = 0; k < n; ++k) x(t, k) = double(100 * t + k);
  Context<Shuffle<>, Host, double> ctx;
  forward(p, x.view(), y.view(), ctx);
  for (index_t t = 0; t < tokens; ++t)
    for (index_t i = 0; i < a; ++i)
      for (index_t j = 0; j < b; ++j) CHECK(y(t, j * a + i) == x(t, i * b + j));
  // to_dense is the same permutation.
  const Matrix<double> pm = p.to_dense<double>();
  CHECK(test::rel_error(as_eigen(y), as_eigen(x) * as_eigen(pm).transpose()) == 0.0);
}

TEST_CASE("Shuffle(b, a) is the inverse of Shuffle(a, b) and backward applies it") {
  Shuffle<> p(4, 6);
  const Matrix<double> forward_m = p.to_dense<double>();
  const Matrix<double> inverse_m = p.inverse().to_dense<double>();
  CHECK((as_eigen(inverse_m) * as_eigen(forward_m)).isIdentity(0.0));
  // Every index is hit exactly once (a bijection).
  std::vector<int> hits(24, 0);
  for (index_t k = 0; k < 24; ++k) ++hits[p.destination(k)];
  CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));

  Rng rng(41);
  auto x = test::random_matrix<double>(3, 24, rng);
  auto dy = test::random_matrix<double>(3, 24, rng);
  Matrix<double> y(3, 24), dx(3, 24);
  Context<Shuffle<>, Host, double> ctx;
  forward(p, x.view(), y.view(), ctx);
  backward(p, ctx, dy.view(), dx.view(), p);
  CHECK(test::rel_error(as_eigen(dx), as_eigen(dy) * as_eigen(forward_m)) == 0.0);
}

TEST_CASE("Shuffle has no parameters and no FLOPs") {
  Shuffle<> p(8, 2);
  CHECK(p.param_count() == 0);
  CHECK(p.flops(100) == 0);
  CHECK(p.parameters().empty());
  CHECK(p.in_features() == 16);
  CHECK(p.out_features() == 16);
}
