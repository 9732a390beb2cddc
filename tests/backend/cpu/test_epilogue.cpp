// The fused output stage: GELU values, bias, dbias reductions over many threads, and the
// multi-threaded paths of every structured map at sizes where they split work.
#include "support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

TEST_CASE("gelu_tanh matches known values and its derivative") {
  CHECK(epilogue::gelu(0.0) == 0.0);
  CHECK(epilogue::gelu(1.0) == doctest::Approx(0.8411919906082768).epsilon(1e-12));
  CHECK(epilogue::gelu(-1.0) == doctest::Approx(-0.15880800939172324).epsilon(1e-12));
  for (double u : {-3.0, -0.7, 0.0, 0.4, 2.5}) {
    const double fd = (epilogue::gelu(u + 1e-6) - epilogue::gelu(u - 1e-6)) / 2e-6;
    CHECK(epilogue::gelu_grad(u) == doctest::Approx(fd).epsilon(1e-8));
  }
}

TEST_CASE_TEMPLATE("fused bias + GELU equals the unfused reference on large inputs", T, float, double) {
  Rng rng(101);
  const index_t tokens = 512, n = 96, m = 384;  // large enough for every thread to take rows
  Owned f(Dense<T>(n, m));
  init_normal(f.map, rng, 0.1);
  auto x = test::random_matrix<T>(tokens, n, rng);
  Vector<T> bias(m), dbias(m);
  fill_normal(bias.view(), rng);
  Matrix<T> y(tokens, m);
  Context<Dense<T>> ctx;
  forward(f.map, x.view(), y.view(), ctx, epilogue::BiasGelu<T>{bias.view(), dbias.view()});
  EigenRowMajor<T> pre = as_eigen(x) * as_eigen(f.map.weight()).transpose();
  pre.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias.data(), m);
  const EigenRowMajor<T> ref = pre.unaryExpr([](T u) { return epilogue::gelu(u); });
  CHECK(test::rel_error(as_eigen(y), ref) < test::tolerance<T>() * 5);

  auto dy = test::random_matrix<T>(tokens, m, rng);
  Owned g(f.map);
  Matrix<T> dx(tokens, n);
  backward(f.map, ctx, dy.view(), dx.view(), g.map, epilogue::BiasGelu<T>{bias.view(), dbias.view()});
  const EigenRowMajor<T> dpre = as_eigen(dy).cwiseProduct(pre.unaryExpr([](T u) { return epilogue::gelu_grad(u); }));
  const Eigen::Matrix<T, 1, Eigen::Dynamic> db = dpre.colwise().sum();
  CHECK(test::rel_error(Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(dbias.data(), m), db) <
        test::tolerance<T>() * 20);
  CHECK(test::rel_error(as_eigen(dx), dpre * as_eigen(f.map.weight())) < test::tolerance<T>() * 20);
  CHECK(test::rel_error(as_eigen(g.map.weight()), dpre.transpose() * as_eigen(x)) < test::tolerance<T>() * 20);
}

TEST_CASE_TEMPLATE("every structured map is exact on the multi-threaded path", T, float, double) {
  Rng rng(102);
  const index_t tokens = 300;
  Owned lr(LowRank<T>(128, 256, 32));
  Owned bd(block_dense<T>(128, 256, 64, 4));
  Owned bs(block_shuffle<T>(128, 256, 4));
  Owned bs2(block_shuffle<T>(256, 128, 4));
  initialize(lr.map, rng);
  initialize(bd.map, rng);
  initialize(bs.map, rng);
  initialize(bs2.map, rng);
  test::check_against_dense(lr.map, tokens, rng);
  test::check_against_dense(bd.map, tokens, rng);
  test::check_against_dense(bs.map, tokens, rng);
  test::check_against_dense(bs2.map, tokens, rng);
}

TEST_CASE("bias shapes are checked") {
  Owned f(Dense<float>(4, 6));
  Vector<float> bias(5);
  Matrix<float> x(2, 4), y(2, 6);
  Context<Dense<float>> ctx;
  CHECK_THROWS_WITH_AS(forward(f.map, x.view(), y.view(), ctx, epilogue::Bias<float>{bias.view()}),
                       doctest::Contains("bias has shape (5) but the map has 6 output features"), Error);
}
