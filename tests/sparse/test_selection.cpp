// Neuron selection for sparsity-accelerated training (spec sat.md §4, §9.4): how many neurons
// are kept, top-k's exact choice and tie rule, and sampling without replacement: distinct
// indices, inclusion frequencies k/N under uniform scores and monotone in the score, and the
// same draw from the same seed.
#include <doctest/doctest.h>

#include <bonsai/core/error.hpp>
#include <bonsai/sparse/selection.hpp>
#include <set>
#include <vector>

using namespace bonsai;

TEST_CASE("selection: k = N - round(rho N), at least 1, rounded up to the alignment") {
  CHECK(keep_count(10, 0.0) == 10);
  CHECK(keep_count(10, 0.3) == 7);
  CHECK(keep_count(10, 0.25) == 7);  // round(2.5) = 3, away from zero
  CHECK(keep_count(10, 0.34) == 7);
  CHECK(keep_count(10, 0.35) == 6);  // round(3.5) = 4
  CHECK(keep_count(4, 0.99) == 1);
  CHECK(keep_count(3072, 0.5) == 1536);
  CHECK(keep_count(100, 0.5, 8) == 56);
  CHECK(keep_count(100, 0.0, 8) == 100);  // capped at n
  CHECK_THROWS_WITH_AS(keep_count(10, 1.0), doctest::Contains("[0, 1)"), Error);
  CHECK_THROWS_WITH_AS(keep_count(10, -0.1), doctest::Contains("[0, 1)"), Error);
  CHECK_THROWS_WITH_AS(keep_count(0, 0.5), doctest::Contains("no neurons"), Error);
}

TEST_CASE("selection: top-k keeps exactly the k largest scores, ties to the lower index") {
  const std::vector<double> s = {0.5, 2.0, 0.1, 2.0, 3.0, 0.5, 0.0, 2.0};
  CHECK(select_topk(s, 0).empty());
  CHECK(select_topk(s, 1) == std::vector<index_t>{4});
  CHECK(select_topk(s, 3) == std::vector<index_t>{1, 3, 4});
  CHECK(select_topk(s, 4) == std::vector<index_t>{1, 3, 4, 7});
  CHECK(select_topk(s, 5) == std::vector<index_t>{0, 1, 3, 4, 7});
  CHECK(select_topk(s, 8) == std::vector<index_t>{0, 1, 2, 3, 4, 5, 6, 7});
  // Against a brute-force oracle on random scores with many ties.
  Rng rng(4);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<double> r(37);
    for (double& x : r) x = double(int(rng.uniform() * 6));
    const index_t k = index_t(rng.uniform() * 38);
    const auto kept = select_topk(r, k);
    REQUIRE(index_t(kept.size()) == k);
    std::set<index_t> in(kept.begin(), kept.end());
    // Every kept score beats (or ties from a lower index) every omitted one.
    for (index_t a : kept)
      for (index_t b = 0; b < 37; ++b)
        if (!in.count(b))
          CHECK((r[std::size_t(a)] > r[std::size_t(b)] ||
                 (r[std::size_t(a)] == r[std::size_t(b)] && a < b)));
  }
  CHECK_THROWS_WITH_AS(select_topk(s, 9), doctest::Contains("cannot keep 9 of 8"), Error);
  CHECK_THROWS_WITH_AS(select_topk(std::vector<double>{1.0, -1.0}, 1),
                       doctest::Contains("non-negative"), Error);
}

TEST_CASE("selection: sampling draws k distinct neurons, k/N each under uniform scores") {
  constexpr index_t n = 20, k = 6, draws = 20000;
  const std::vector<double> uniform(n, 1.0);
  std::vector<double> count(n, 0.0);
  Rng rng(11);
  for (index_t d = 0; d < draws; ++d) {
    const auto kept = select_sample(uniform, k, rng);
    REQUIRE(index_t(kept.size()) == k);
    for (std::size_t i = 1; i < kept.size(); ++i)
      REQUIRE(kept[i - 1] < kept[i]);  // distinct, sorted
    for (index_t i : kept) count[std::size_t(i)] += 1;
  }
  // Each inclusion is Bernoulli(k/N = 0.3): the standard error over 20000 draws is 0.0032, so
  // 0.015 is more than 4.5 of them.
  for (double c : count) CHECK(std::abs(c / draws - 0.3) < 0.015);
}

TEST_CASE("selection: sampling includes a neuron more often the higher its score") {
  const std::vector<double> s = {1, 2, 4, 8, 0.5, 16, 0, 3};
  std::vector<double> count(s.size(), 0.0);
  Rng rng(5);
  constexpr int draws = 20000;
  for (int d = 0; d < draws; ++d)
    for (index_t i : select_sample(s, 3, rng)) count[std::size_t(i)] += 1;
  CHECK(count[6] == 0.0);  // a zero score is drawn only when the positive ones run out
  for (std::size_t a = 0; a < s.size(); ++a)
    for (std::size_t b = 0; b < s.size(); ++b)
      if (s[a] > s[b]) CHECK(count[a] > count[b]);
  // With k = 1 the draw is exactly proportional to the score.
  std::vector<double> first(s.size(), 0.0);
  for (int d = 0; d < draws; ++d) first[std::size_t(select_sample(s, 1, rng)[0])] += 1;
  double total = 0;
  for (double x : s) total += x;
  for (std::size_t i = 0; i < s.size(); ++i)
    CHECK(std::abs(first[i] / draws - s[i] / total) < 0.012);
  // Zero scores fill the rest once the positive ones are taken.
  CHECK(select_sample(s, 8, rng).size() == 8);
}

TEST_CASE("selection: the same seed gives the same sample") {
  const std::vector<double> s = {0.3, 1.2, 0.7, 2.5, 0.1, 0.9, 1.1, 0.4};
  Rng a(99), b(99);
  for (int i = 0; i < 10; ++i) CHECK(select_sample(s, 4, a) == select_sample(s, 4, b));
  Rng c(99);
  CHECK(select_neurons(Selection::topk, s, 2, c) == std::vector<index_t>{1, 3});
  CHECK(parse_selection("sample") == Selection::sample);
  CHECK_THROWS_WITH_AS(parse_selection("random"), doctest::Contains("topk or sample"), Error);
}
