// cpu::gemm against a naive triple loop (every transpose combination, leading dimensions larger
// than the width, beta = 0 / 1 / other, shape errors) and cpu::transpose on ragged tiles.
#include "support/maps.hpp"

using namespace bonsai;

namespace {
template <class T>
T at(const MatrixView<const T>& a, Op op, index_t i, index_t j) {
  return op == Op::N ? a(i, j) : a(j, i);
}
}  // namespace

TEST_CASE_TEMPLATE("gemm matches the definition", T, float, double) {
  Rng rng(91);
  // The second shape (m >= 4n, n small) takes oneDNN's transpose-B path.
  for (auto [m, n, k] : {std::tuple<index_t, index_t, index_t>{37, 29, 45}, {300, 20, 50}})
  for (auto opa : {Op::N, Op::T})
    for (auto opb : {Op::N, Op::T})
      for (T beta : {T(0), T(1), T(0.5)}) {
        const index_t ar = opa == Op::N ? m : k, ac = opa == Op::N ? k : m;
        const index_t br = opb == Op::N ? k : n, bc = opb == Op::N ? n : k;
        auto abuf = test::random_matrix<T>(ar, ac + 3, rng);  // ld = cols + 3
        auto bbuf = test::random_matrix<T>(br, bc + 5, rng);
        auto cbuf = test::random_matrix<T>(m, n + 2, rng);
        const MatrixView<const T> a = columns(abuf.view(), 1, ac), b = columns(bbuf.view(), 2, bc);
        const auto c = columns(cbuf.view(), 0, n);
        const Matrix<T> c0 = to_matrix(as_eigen(c));
        cpu::gemm(T(1.5), a, opa, b, opb, beta, c);
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < n; ++j) {
            double ref = beta * double(c0(i, j));
            for (index_t l = 0; l < k; ++l) ref += 1.5 * double(at(a, opa, i, l)) * double(at(b, opb, l, j));
            REQUIRE(double(c(i, j)) == doctest::Approx(ref).epsilon(test::tolerance<T>() * 10));
          }
        // Columns outside the view are untouched.
        for (index_t i = 0; i < m; ++i) REQUIRE(cbuf(i, n) != T(0));
      }
}

TEST_CASE("gemm with beta = 0 ignores NaNs already in C") {
  Rng rng(92);
  auto a = test::random_matrix<float>(8, 8, rng), b = test::random_matrix<float>(8, 8, rng);
  Matrix<float> c(8, 8);
  as_eigen(c).setConstant(NAN);
  cpu::gemm(1.0f, a.view(), Op::N, b.view(), Op::N, 0.0f, c.view());
  CHECK(as_eigen(c).allFinite());
}

TEST_CASE("gemm names both shapes on a mismatch") {
  Matrix<float> a(4, 5), b(6, 3), c(4, 3);
  CHECK_THROWS_WITH_AS(cpu::gemm(1.0f, a.view(), Op::N, b.view(), Op::N, 0.0f, c.view()),
                       doctest::Contains("op(A) has shape (4, 5) and op(B) has shape (6, 3)"), Error);
  CHECK(std::string(cpu::gemm_library()) == (BONSAI_USE_ONEDNN ? "oneDNN" : "Eigen"));
}

TEST_CASE("cpu::transpose matches the definition on ragged tiles") {
  Rng rng(6);
  auto a = test::random_matrix<float>(70, 45, rng);
  Matrix<float> t(45, 70);
  cpu::transpose<float>(a.view(), t.view());
  CHECK(as_eigen(t) == as_eigen(a).transpose());
  Matrix<float> wrong(44, 70);
  CHECK_THROWS_WITH_AS(cpu::transpose<float>(a.view(), wrong.view()),
                       doctest::Contains("src has shape (70, 45) but dst has shape (44, 70)"), Error);
}
