// cpu::rope_forward / rope_backward against the rotate-half formula, backward as the transpose
// of forward, position offsets against the full sequence, RoPE followed by attention against
// finite differences, and errors.
#include <doctest/doctest.h>

#include <bonsai/backend/cpu/attention.hpp>
#include <bonsai/backend/cpu/rope.hpp>
#include <bonsai/core/rng.hpp>
#include <cmath>
#include <cstring>

using namespace bonsai;

namespace {

template <class T>
Matrix<T> random_matrix(index_t rows, index_t cols, Rng& rng) {
  Matrix<T> m(rows, cols);
  fill_normal(m.view(), rng);
  return m;
}

template <class T>
double dot(const Matrix<T>& a, const Matrix<T>& b) {
  double d = 0;
  for (index_t i = 0; i < a.size(); ++i) d += double(a.data()[i]) * double(b.data()[i]);
  return d;
}

}  // namespace

TEST_CASE("rope: matches the rotate-half formula on queries and keys, values untouched") {
  Rng rng(31);
  for (const AttentionShape s : {AttentionShape{2, 9, 4, 2, 6}, AttentionShape{1, 33, 3, 1, 64}, AttentionShape{3, 5, 2, 2, 2}})
    for (index_t pos : {0, 7}) {
      CAPTURE(s);
      CAPTURE(pos);
      const double base = pos == 0 ? 10000.0 : 500000.0;
      const cpu::RopeTable<float> table(pos + s.seq, s.head_dim, base);
      const auto x0 = random_matrix<float>(s.tokens(), s.qkv_width(), rng);
      Matrix<float> x(s.tokens(), s.qkv_width());
      std::memcpy(x.data(), x0.data(), sizeof(float) * x.size());
      cpu::rope_forward<float>(x.view(), s, table, pos);
      const index_t hd = s.head_dim, half = hd / 2, A = s.q_width(), KV = s.kv_width();
      double err = 0;
      for (index_t row = 0; row < s.tokens(); ++row) {
        const double p = double(pos + row % s.seq);
        for (index_t head = 0; head < s.heads + s.kv_heads; ++head)
          for (index_t i = 0; i < half; ++i) {
            const double theta = p * std::pow(base, -2.0 * double(i) / double(hd));
            const index_t c1 = head * hd + i, c2 = c1 + half;
            const double a = x0(row, c1), b = x0(row, c2);
            err = std::max(err, std::abs(double(x(row, c1)) - (a * std::cos(theta) - b * std::sin(theta))));
            err = std::max(err, std::abs(double(x(row, c2)) - (b * std::cos(theta) + a * std::sin(theta))));
          }
        for (index_t c = A + KV; c < A + 2 * KV; ++c) REQUIRE(x(row, c) == x0(row, c));
      }
      CHECK(err < 1e-5);
    }
}

TEST_CASE("rope: backward is the transpose of forward and undoes it") {
  Rng rng(32);
  const AttentionShape s{2, 11, 4, 2, 10};
  const cpu::RopeTable<double> table(20, s.head_dim);
  const auto x = random_matrix<double>(s.tokens(), s.qkv_width(), rng);
  const auto y = random_matrix<double>(s.tokens(), s.qkv_width(), rng);
  Matrix<double> rx(s.tokens(), s.qkv_width()), ry(s.tokens(), s.qkv_width());
  std::memcpy(rx.data(), x.data(), sizeof(double) * x.size());
  std::memcpy(ry.data(), y.data(), sizeof(double) * y.size());
  cpu::rope_forward<double>(rx.view(), s, table, 3);
  cpu::rope_backward<double>(ry.view(), s, table, 3);
  CHECK(dot(rx, y) == doctest::Approx(dot(x, ry)).epsilon(1e-13));  // <rope(x), y> = <x, rope^T(y)>
  cpu::rope_backward<double>(rx.view(), s, table, 3);
  for (index_t i = 0; i < x.size(); ++i) REQUIRE(rx.data()[i] == doctest::Approx(x.data()[i]).epsilon(1e-13));
}

TEST_CASE("rope: a position offset gives the rows of the full sequence") {
  Rng rng(33);
  const AttentionShape s{2, 12, 4, 1, 8};
  const cpu::RopeTable<float> table(16, s.head_dim);
  auto full = random_matrix<float>(s.tokens(), s.qkv_width(), rng);
  for (index_t p : {0, 5, 11}) {
    for (index_t n : {1, 3}) {
      n = std::min(n, s.seq - p);
      const AttentionShape part{s.batch, n, s.heads, s.kv_heads, s.head_dim};
      Matrix<float> x(s.batch * n, s.qkv_width());  // rows [p, p + n) of every sequence
      for (index_t b = 0; b < s.batch; ++b)
        for (index_t r = 0; r < n; ++r)
          for (index_t c = 0; c < s.qkv_width(); ++c) x(b * n + r, c) = full(b * s.seq + p + r, c);
      cpu::rope_forward<float>(x.view(), part, table, p);
      Matrix<float> y(s.tokens(), s.qkv_width());
      std::memcpy(y.data(), full.data(), sizeof(float) * y.size());
      cpu::rope_forward<float>(y.view(), s, table, 0);
      for (index_t b = 0; b < s.batch; ++b)
        for (index_t r = 0; r < n; ++r)
          for (index_t c = 0; c < s.qkv_width(); ++c) REQUIRE(x(b * n + r, c) == y(b * s.seq + p + r, c));
    }
  }
}

TEST_CASE("rope: RoPE then attention passes central finite differences in double") {
  Rng rng(34);
  const AttentionShape s{2, 6, 4, 2, 4};
  const cpu::RopeTable<double> table(s.seq, s.head_dim);
  auto qkv = random_matrix<double>(s.tokens(), s.qkv_width(), rng);
  const auto R = random_matrix<double>(s.tokens(), s.q_width(), rng);
  Matrix<double> x(s.tokens(), s.qkv_width()), out(s.tokens(), s.q_width()), dqkv(s.tokens(), s.qkv_width());
  Tensor<double, 4> probs(s.batch, s.heads, s.seq, s.seq), ds(s.batch, s.heads, s.seq, s.seq);
  auto loss = [&] {
    std::memcpy(x.data(), qkv.data(), sizeof(double) * x.size());
    cpu::rope_forward<double>(x.view(), s, table);
    cpu::attention_forward<double>(s, x.view(), out.view(), probs.view());
    return dot(out, R);
  };
  loss();
  cpu::attention_backward<double>(s, x.view(), probs.view(), R.view(), dqkv.view(), ds.view());
  cpu::rope_backward<double>(dqkv.view(), s, table);
  double worst = 0;
  const double h = 1e-5;
  for (index_t i = 0; i < qkv.size(); ++i) {
    const double x0 = qkv.data()[i];
    qkv.data()[i] = x0 + h;
    const double lp = loss();
    qkv.data()[i] = x0 - h;
    const double lm = loss();
    qkv.data()[i] = x0;
    worst = std::max(worst, std::abs((lp - lm) / (2 * h) - dqkv.data()[i]));
  }
  CHECK(worst < 1e-8);
}

TEST_CASE("rope: bad sizes throw bonsai::Error naming them") {
  CHECK_THROWS_WITH_AS(cpu::RopeTable<float>(16, 7), doctest::Contains("an even head_dim"), Error);
  const AttentionShape s{2, 5, 4, 2, 6};  // qkv (10, 48)
  const cpu::RopeTable<float> table(8, 6);
  Matrix<float> qkv(10, 48), narrow(10, 47);
  CHECK_NOTHROW(cpu::rope_forward<float>(qkv.view(), s, table, 3));
  CHECK_THROWS_WITH_AS(cpu::rope_forward<float>(qkv.view(), s, table, 4),
                       doctest::Contains("positions [4, 9) exceed the RopeTable's max_seq = 8"), Error);
  CHECK_THROWS_WITH_AS(cpu::rope_backward<float>(narrow.view(), s, table),
                       doctest::Contains("qkv has shape (10, 47) but AttentionShape{batch 2, seq 5, heads 4, "
                                         "kv_heads 2, head_dim 6} takes (10, 48)"),
                       Error);
  const cpu::RopeTable<float> other(8, 4);
  CHECK_THROWS_WITH_AS(cpu::rope_forward<float>(qkv.view(), s, other),
                       doctest::Contains("the RopeTable has head_dim 4"), Error);
}
