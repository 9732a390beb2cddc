// Importance scores of FFN channels and heads (spec sat.md §3, §9.5) against direct sums:
// activation max / L2 per channel and per head, magnitude from producer rows and reader
// columns, Wanda-style scores; padding tokens change nothing, permuting neurons permutes the
// scores, and mismatched sizes are rejected with both sizes named.
#include <doctest/doctest.h>

#include <bonsai/core/error.hpp>
#include <bonsai/core/rng.hpp>
#include <bonsai/sparse/importance.hpp>
#include <cmath>
#include <vector>

using namespace bonsai;

namespace {

struct Mat {
  index_t rows, cols;
  std::vector<double> v;
  Mat(index_t r, index_t c, Rng& rng) : rows(r), cols(c), v(std::size_t(r * c)) {
    for (double& x : v) x = rng.normal();
  }
  double operator()(index_t r, index_t c) const { return v[std::size_t(r * cols + c)]; }
  MatrixView<const double> view() const { return matrix_view(v.data(), rows, cols); }
};

}  // namespace

TEST_CASE("importance: activation scores per channel and per head equal direct sums") {
  Rng rng(1);
  const Mat a(9, 12, rng);
  std::vector<double> mx(12), l2(12);
  activation_scores(a.view(), Aggregate::max, {}, mx);
  activation_scores(a.view(), Aggregate::l2, {}, l2);
  for (index_t c = 0; c < 12; ++c) {
    double m = 0, s = 0;
    for (index_t t = 0; t < 9; ++t) {
      m = std::max(m, std::abs(a(t, c)));
      s += a(t, c) * a(t, c);
    }
    CHECK(mx[std::size_t(c)] == m);
    CHECK(l2[std::size_t(c)] == doctest::Approx(std::sqrt(s)).epsilon(1e-14));
  }
  // 12 columns as 3 heads of 4.
  std::vector<double> hmax(3), hl2(3);
  head_activation_scores(a.view(), 4, Aggregate::max, {}, hmax);
  head_activation_scores(a.view(), 4, Aggregate::l2, {}, hl2);
  for (index_t h = 0; h < 3; ++h) {
    double m = 0, f = 0;
    for (index_t t = 0; t < 9; ++t) {
      double row = 0;
      for (index_t e = 0; e < 4; ++e) row += a(t, h * 4 + e) * a(t, h * 4 + e);
      m = std::max(m, std::sqrt(row));
      f += row;
    }
    CHECK(hmax[std::size_t(h)] == doctest::Approx(m).epsilon(1e-14));
    CHECK(hl2[std::size_t(h)] == doctest::Approx(std::sqrt(f)).epsilon(1e-14));
  }
}

TEST_CASE("importance: padding tokens do not change the scores") {
  Rng rng(2);
  const Mat a(6, 8, rng);
  Mat padded(10, 8, rng);  // rows 0, 2, 4, 6, 7, 9 are a's; the others are padding
  const index_t real[] = {0, 2, 4, 6, 7, 9};
  std::vector<std::uint8_t> valid(10, 0);
  for (index_t i = 0; i < 6; ++i) {
    valid[std::size_t(real[i])] = 1;
    for (index_t c = 0; c < 8; ++c) padded.v[std::size_t(real[i] * 8 + c)] = a(i, c);
  }
  for (Aggregate agg : {Aggregate::max, Aggregate::l2}) {
    std::vector<double> want(8), got(8), wh(2), gh(2);
    activation_scores(a.view(), agg, {}, want);
    activation_scores(padded.view(), agg, valid, got);
    CHECK(got == want);
    head_activation_scores(a.view(), 4, agg, {}, wh);
    head_activation_scores(padded.view(), 4, agg, valid, gh);
    CHECK(gh == wh);
  }
  const Mat w(5, 8, rng);
  std::vector<double> want(8), got(8);
  wanda_scores(a.view(), w.view(), 1, {}, want);
  wanda_scores(padded.view(), w.view(), 1, valid, got);
  CHECK(got == want);
}

TEST_CASE("importance: magnitude and Wanda scores equal direct sums and follow a permutation") {
  Rng rng(3);
  const index_t d = 5, f = 7;
  const Mat up(f, d, rng), gate(f, d, rng), down(d, f, rng), a(6, f, rng);
  std::vector<double> mag(std::size_t(f), 0.0);
  add_row_energy(up.view(), 1, mag);
  add_row_energy(gate.view(), 1, mag);
  add_column_energy(down.view(), 1, mag);
  magnitude_from_energy(mag);
  std::vector<double> wanda(static_cast<std::size_t>(f));
  wanda_scores(a.view(), down.view(), 1, {}, wanda);
  for (index_t i = 0; i < f; ++i) {
    double e = 0, col = 0, norm = 0;
    for (index_t j = 0; j < d; ++j) {
      e += up(i, j) * up(i, j) + gate(i, j) * gate(i, j) + down(j, i) * down(j, i);
      col += std::abs(down(j, i));
    }
    for (index_t t = 0; t < 6; ++t) norm += a(t, i) * a(t, i);
    CHECK(mag[std::size_t(i)] == doctest::Approx(std::sqrt(e)).epsilon(1e-14));
    CHECK(wanda[std::size_t(i)] == doctest::Approx(col * std::sqrt(norm)).epsilon(1e-14));
  }
  // Reverse the channels: rows of up and gate, columns of down and a.
  Mat up2 = up, gate2 = gate, down2 = down, a2 = a;
  for (index_t i = 0; i < f; ++i) {
    for (index_t j = 0; j < d; ++j) {
      up2.v[std::size_t(i * d + j)] = up(f - 1 - i, j);
      gate2.v[std::size_t(i * d + j)] = gate(f - 1 - i, j);
      down2.v[std::size_t(j * f + i)] = down(j, f - 1 - i);
    }
    for (index_t t = 0; t < 6; ++t) a2.v[std::size_t(t * f + i)] = a(t, f - 1 - i);
  }
  std::vector<double> mag2(static_cast<std::size_t>(f), 0.0), wanda2(static_cast<std::size_t>(f));
  add_row_energy(up2.view(), 1, mag2);
  add_row_energy(gate2.view(), 1, mag2);
  add_column_energy(down2.view(), 1, mag2);
  magnitude_from_energy(mag2);
  wanda_scores(a2.view(), down2.view(), 1, {}, wanda2);
  for (index_t i = 0; i < f; ++i) {
    CHECK(mag2[std::size_t(i)] == doctest::Approx(mag[std::size_t(f - 1 - i)]).epsilon(1e-14));
    CHECK(wanda2[std::size_t(i)] == doctest::Approx(wanda[std::size_t(f - 1 - i)]).epsilon(1e-14));
  }
  // Heads: 8 output columns as 2 heads of 4.
  const Mat qkv(8, d, rng), proj(d, 8, rng);
  std::vector<double> heads(2, 0.0);
  add_row_energy(qkv.view(), 4, heads);
  add_column_energy(proj.view(), 4, heads);
  double e0 = 0;
  for (index_t r = 0; r < 4; ++r)
    for (index_t j = 0; j < d; ++j) e0 += qkv(r, j) * qkv(r, j) + proj(j, r) * proj(j, r);
  CHECK(heads[0] == doctest::Approx(e0).epsilon(1e-14));
}

TEST_CASE("importance: mismatched sizes are rejected with both sizes named") {
  Rng rng(4);
  const Mat a(3, 8, rng), w(5, 6, rng);
  std::vector<double> out(7), two(2);
  CHECK_THROWS_WITH_AS(activation_scores(a.view(), Aggregate::l2, {}, out),
                       doctest::Contains("7 scores for 8 neurons"), Error);
  const std::vector<std::uint8_t> valid(4, 1);
  std::vector<double> eight(8);
  CHECK_THROWS_WITH_AS(activation_scores(a.view(), Aggregate::l2, valid, eight),
                       doctest::Contains("a token mask of 4 for 3 tokens"), Error);
  CHECK_THROWS_WITH_AS(head_activation_scores(a.view(), 3, Aggregate::l2, {}, two),
                       doctest::Contains("not whole heads of 3"), Error);
  CHECK_THROWS_WITH_AS(wanda_scores(a.view(), w.view(), 1, {}, eight),
                       doctest::Contains("activations of 8 features for a map reading 6"), Error);
  CHECK(parse_score_kind("wanda") == ScoreKind::wanda);
  CHECK_THROWS_WITH_AS(parse_score_kind("maxip"),
                       doctest::Contains("magnitude, activation or wanda"), Error);
}
