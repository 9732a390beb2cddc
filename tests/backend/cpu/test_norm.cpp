// Mask-weighted norms (MSG's growth masks, spec growth.md §12.1-12d): a mask of ones is the plain
// norm up to rounding, a mask [1..1, 0..0] is the narrower norm on the first units and 0 after, and
// the masked backward matches central differences.
#include <doctest/doctest.h>

#include <bonsai/backend/cpu/norm.hpp>
#include <bonsai/core/rng.hpp>
#include <cmath>
#include <vector>

using namespace bonsai;

namespace {

struct Rows {
  index_t n, c;
  std::vector<double> v;
  Rows(index_t rows, index_t cols, Rng& rng, double mean = 0.0) : n(rows), c(cols), v(std::size_t(rows * cols)) {
    for (double& x : v) x = mean + rng.normal();
  }
  Rows(index_t rows, index_t cols) : n(rows), c(cols), v(std::size_t(rows * cols), 0.0) {}
  MatrixView<double, Host> view() { return MatrixView<double, Host>(v.data(), {n, c}); }
  MatrixView<const double, Host> cview() const { return MatrixView<const double, Host>(v.data(), {n, c}); }
};

/// y = norm(x) with the given kind and mask.
void forward(bool layernorm, const Rows& x, const std::vector<double>& w, const std::vector<double>& b,
             Rows& y, const double* mask, cpu::NormState<double>& st) {
  if (layernorm) cpu::layernorm_forward(x.cview(), w.data(), b.data(), y.view(), 1e-5, st, mask);
  else cpu::rmsnorm_forward(x.cview(), w.data(), y.view(), 1e-5, st, mask);
}

}  // namespace

TEST_CASE("norm: a mask of ones is the plain norm, [1..1, 0..0] the narrower norm") {
  Rng rng(3);
  const index_t n = 5, c = 7, d = 4;
  for (bool ln : {true, false}) {
    CAPTURE(ln);
    const Rows x(n, c, rng, 0.7);
    std::vector<double> w(static_cast<std::size_t>(c)), b(static_cast<std::size_t>(c));
    for (auto& v : w) v = 1.0 + 0.3 * rng.normal();
    for (auto& v : b) v = 0.3 * rng.normal();
    cpu::NormState<double> st;
    Rows plain(n, c), ones(n, c), half(n, c);
    forward(ln, x, w, b, plain, nullptr, st);
    const std::vector<double> one(std::size_t(c), 1.0);
    forward(ln, x, w, b, ones, one.data(), st);
    for (std::size_t i = 0; i < plain.v.size(); ++i)  // the same sums, contracted differently
      CHECK(ones.v[i] == doctest::Approx(plain.v[i]).epsilon(1e-14));

    std::vector<double> m(std::size_t(c), 0.0);
    std::fill_n(m.begin(), d, 1.0);
    forward(ln, x, w, b, half, m.data(), st);
    Rows xs(n, d), ys(n, d);
    for (index_t r = 0; r < n; ++r)
      for (index_t j = 0; j < d; ++j) xs.v[std::size_t(r * d + j)] = x.v[std::size_t(r * c + j)];
    forward(ln, xs, w, b, ys, nullptr, st);
    for (index_t r = 0; r < n; ++r)
      for (index_t j = 0; j < c; ++j)
        if (j < d) CHECK(half.v[std::size_t(r * c + j)] == doctest::Approx(ys.v[std::size_t(r * d + j)]).epsilon(1e-14));
        else CHECK(half.v[std::size_t(r * c + j)] == 0.0);
  }
}

TEST_CASE("norm: the mask-weighted backward matches central differences") {
  Rng rng(5);
  const index_t n = 3, c = 6;
  for (bool ln : {true, false}) {
    CAPTURE(ln);
    Rows x(n, c, rng, 0.4);
    const Rows dy(n, c, rng);
    std::vector<double> w(static_cast<std::size_t>(c)), b(static_cast<std::size_t>(c)), mask = {1, 1, 0.3, 1, 0.0, 0.8};
    for (auto& v : w) v = 1.0 + 0.3 * rng.normal();
    for (auto& v : b) v = 0.3 * rng.normal();
    cpu::NormState<double> st;
    Rows y(n, c), dx(n, c);
    std::vector<double> dw(std::size_t(c), 0.0), db(std::size_t(c), 0.0);
    forward(ln, x, w, b, y, mask.data(), st);
    if (ln) cpu::layernorm_backward(dy.cview(), x.cview(), w.data(), dx.view(), dw.data(), db.data(), false, st, mask.data());
    else cpu::rmsnorm_backward(dy.cview(), x.cview(), w.data(), dx.view(), dw.data(), false, st, mask.data());
    // L = sum dy * y
    auto loss = [&] {
      cpu::NormState<double> s;
      Rows out(n, c);
      forward(ln, x, w, b, out, mask.data(), s);
      double l = 0;
      for (std::size_t i = 0; i < out.v.size(); ++i) l += dy.v[i] * out.v[i];
      return l;
    };
    auto fd = [&](double& p) {
      const double h = 1e-6, saved = p;
      p = saved + h;
      const double lp = loss();
      p = saved - h;
      const double lm = loss();
      p = saved;
      return (lp - lm) / (2 * h);
    };
    for (std::size_t i = 0; i < x.v.size(); ++i) CHECK(dx.v[i] == doctest::Approx(fd(x.v[i])).epsilon(1e-6));
    for (std::size_t j = 0; j < w.size(); ++j) CHECK(dw[j] == doctest::Approx(fd(w[j])).epsilon(1e-6));
    if (ln)
      for (std::size_t j = 0; j < b.size(); ++j) CHECK(db[j] == doctest::Approx(fd(b[j])).epsilon(1e-6));
    // A unit masked to 0 gets no gradient in its gain and bias.
    CHECK(dw[4] == 0.0);
    CHECK(db[4] == 0.0);
  }
}

TEST_CASE("norm: a mask without weight is rejected") {
  Rng rng(1);
  const Rows x(2, 3, rng);
  Rows y(2, 3);
  const std::vector<double> w(3, 1.0), b(3, 0.0), zero(3, 0.0);
  cpu::NormState<double> st;
  CHECK_THROWS_WITH_AS(forward(true, x, w, b, y, zero.data(), st), doctest::Contains("no weight"), Error);
}
