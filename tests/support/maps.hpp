// tests/support/maps.hpp — shared test helpers: maps bound to owned random parameters, dense
// references, and finite-difference gradient checks.
#pragma once

#include <doctest/doctest.h>

#include <Eigen/LU>
#include <Eigen/SVD>
#include <bonsai/bonsai.hpp>
#include <cmath>
#include <string>

namespace bonsai::test {

/// A map together with the storage its parameters are bound to.
template <class Map>
struct Owned {
  using T = scalar_of<Map>;
  Vector<T> storage;
  Map map;
  explicit Owned(const Map& m) : storage(m.param_count()), map(bind(m, storage.view())) {}
  Owned(const Owned&) = delete;
};

template <class T>
Matrix<T> random_matrix(index_t rows, index_t cols, Rng& rng, double stddev = 1.0) {
  Matrix<T> m(rows, cols);
  fill_normal(m.view(), rng, 0.0, stddev);
  return m;
}

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

/// max |a - b| / max(1, max |b|)
template <class A, class B>
double rel_error(const A& a, const B& b) {
  const double scale = std::max(1.0, double(b.cwiseAbs().maxCoeff()));
  return double((a - b).cwiseAbs().maxCoeff()) / scale;
}

/// y = forward(map, x) equals x W_merged^T and dx = backward(dy) equals dy W_merged.
template <class Map>
void check_against_dense(const Map& map, index_t tokens, Rng& rng) {
  using T = scalar_of<Map>;
  const index_t n = map.in_features(), m = map.out_features();
  const Matrix<T> w = map.to_dense();  // (out, in)
  REQUIRE(w.rows() == m);
  REQUIRE(w.cols() == n);
  auto x = random_matrix<T>(tokens, n, rng);
  Matrix<T> y(tokens, m);
  Context<Map> ctx;
  forward(map, x.view(), y.view(), ctx);
  CHECK(rel_error(as_eigen(y), as_eigen(x) * as_eigen(w).transpose()) < tolerance<T>());

  Owned<Map> grads(map);
  auto dy = random_matrix<T>(tokens, m, rng);
  Matrix<T> dx(tokens, n);
  as_eigen(dx).setConstant(T(NAN));  // dx is written with =, never read
  backward(map, ctx, dy.view(), dx.view(), grads.map);
  CHECK(rel_error(as_eigen(dx), as_eigen(dy) * as_eigen(w)) < tolerance<T>());
}

/// The epilogues, made from (bias, dbias).
inline auto no_epilogue = [](auto&, auto&) { return epilogue::None{}; };
inline auto bias_epilogue = [](auto& b, auto& db) { return epilogue::Bias<double>{b.view(), db.view()}; };
inline auto bias_gelu_epilogue = [](auto& b, auto& db) {
  return epilogue::BiasGelu<double>{b.view(), db.view()};
};

/// Central finite differences of L = sum(epi(x W^T) .* R) against backward, in double, for
/// every parameter, every entry of x, and dbias when the epilogue has one.
template <class Map, class MakeEpi>
void check_gradients(Owned<Map>& owned, index_t tokens, Rng& rng, MakeEpi make_epi) {
  const Map& map = owned.map;
  static_assert(std::is_same_v<scalar_of<Map>, double>, "gradient checks run in double");
  const index_t n = map.in_features(), m = map.out_features();
  auto x = random_matrix<double>(tokens, n, rng);
  auto r = random_matrix<double>(tokens, m, rng);  // dL/dy
  Vector<double> bias(m), dbias(m);
  fill_normal(bias.view(), rng);
  Context<Map> ctx;

  auto loss = [&] {
    Matrix<double> y(tokens, m);
    forward(map, x.view(), y.view(), ctx, make_epi(bias, dbias));
    return (as_eigen(y).array() * as_eigen(r).array()).sum();
  };
  Owned<Map> grads(map);
  Matrix<double> dx(tokens, n);
  loss();
  backward(map, ctx, r.view(), dx.view(), grads.map, make_epi(bias, dbias));

  const double eps = 1e-6;
  auto numeric = [&](double& v) {
    const double saved = v;
    v = saved + eps;
    const double lp = loss();
    v = saved - eps;
    const double lm = loss();
    v = saved;
    return (lp - lm) / (2 * eps);
  };
  auto close = [](double analytic, double fd) {
    return std::abs(analytic - fd) <= 1e-6 * std::max(1.0, std::abs(fd));
  };
  const auto params = map.parameters();
  index_t offset = 0;
  for (const auto& p : params) {
    for (index_t i = 0; i < p.size(); ++i) {
      double& v = owned.storage.data()[offset + i];
      const double fd = numeric(v);
      const double an = grads.storage.data()[offset + i];
      INFO("parameter ", p.name, " entry ", i);
      CHECK(close(an, fd));
    }
    offset += p.size();
  }
  for (index_t i = 0; i < tokens * n; ++i) {
    const double fd = numeric(x.data()[i]);
    INFO("dx entry ", i);
    CHECK(close(dx.data()[i], fd));
  }
  if constexpr (epilogue::has_bias<decltype(make_epi(bias, dbias))>) {
    for (index_t j = 0; j < m; ++j) {
      const double fd = numeric(bias.data()[j]);
      INFO("dbias entry ", j);
      CHECK(close(dbias.data()[j], fd));
    }
  }
}

}  // namespace bonsai::test
