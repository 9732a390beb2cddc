// The Ladder Omission Rate Scheduler (spec sat.md §6, §9.8): rho_0 before t_1, non-increasing,
// dense from t_2, a single drop for K = 1, the stairs where the formula puts them, the mean
// rate's closed form against the sum over steps, and bad ladders rejected with a sentence.
#include <doctest/doctest.h>

#include <bonsai/core/error.hpp>
#include <bonsai/train/lors.hpp>

using namespace bonsai;

TEST_CASE("lors: rho_0 until t_1, K stairs down to dense at t_2") {
  const Lors l = Lors::parse(0.6, "100,400,4");  // stairs at 100, 200, 300, 400
  CHECK(l.rate(0) == 0.6);
  CHECK(l.rate(99) == 0.6);
  CHECK(l.rate(100) == doctest::Approx(0.45));
  CHECK(l.rate(199) == doctest::Approx(0.45));
  CHECK(l.rate(200) == doctest::Approx(0.3));
  CHECK(l.rate(300) == doctest::Approx(0.15));
  CHECK(l.rate(399) == doctest::Approx(0.15));
  CHECK(l.rate(400) == 0.0);
  CHECK(l.rate(100000) == 0.0);
  double last = 1;
  for (index_t t = 0; t < 500; ++t) {
    CHECK(l.rate(t) <= last);
    last = l.rate(t);
  }
  // Stairs between integer steps start at the first step at or after them.
  const Lors odd = Lors::parse(0.5, "10,20,4");  // 10, 13.33, 16.67, 20
  CHECK(odd.rate(13) == doctest::Approx(0.375));
  CHECK(odd.rate(14) == doctest::Approx(0.25));
  CHECK(odd.rate(16) == doctest::Approx(0.25));
  CHECK(odd.rate(17) == doctest::Approx(0.125));
}

TEST_CASE("lors: K = 1 is one drop; rho_0 = 0 is dense throughout") {
  const Lors l = Lors::parse(0.5, "300,300,1");
  CHECK(l.rate(299) == 0.5);
  CHECK(l.rate(300) == 0.0);
  const Lors dense = Lors::parse(0.0, "0,0,1");
  for (index_t t = 0; t < 10; ++t) CHECK(dense.rate(t) == 0.0);
}

TEST_CASE("lors: the mean rate's closed form equals the average over steps") {
  for (const char* ladder : {"100,400,4", "10,20,4", "0,0,1", "50,50,1", "7,93,5", "0,1000,3"})
    for (index_t total : {1, 37, 100, 250, 400, 1000}) {
      CAPTURE(ladder);
      CAPTURE(total);
      const Lors l = Lors::parse(0.7, ladder);
      double sum = 0;
      for (index_t t = 0; t < total; ++t) sum += l.rate(t);
      CHECK(l.mean_rate(total) == doctest::Approx(sum / double(total)).epsilon(1e-12));
    }
}

TEST_CASE("lors: bad ladders are rejected with a sentence") {
  CHECK_THROWS_WITH_AS(Lors::parse(0.5, "400,100,3"), doctest::Contains("at or before it ends"),
                       Error);
  CHECK_THROWS_WITH_AS(Lors::parse(0.5, "100,400,1"), doctest::Contains("must equal t2"), Error);
  CHECK_THROWS_WITH_AS(Lors::parse(0.5, "100,400,0"), doctest::Contains("between 1 and 1000000 stairs"),
                       Error);
  // A huge K is refused instead of making every step's rate (and the mean) loop over it.
  CHECK_THROWS_WITH_AS(Lors::parse(0.5, "8,2222222224,2222222224"),
                       doctest::Contains("got K = 2222222224"), Error);
  CHECK_THROWS_WITH_AS(Lors::parse(1.0, "100,400,2"), doctest::Contains("[0, 1)"), Error);
  CHECK_THROWS_WITH_AS(Lors::parse(0.5, "100,400"), doctest::Contains("expected t1,t2,K"), Error);
  CHECK_THROWS_WITH_AS(Lors::parse(0.5, "100,4x0,2"), doctest::Contains("t2 = '4x0'"), Error);
  CHECK(Lors::parse(0.5, "1,2,2").to_string() == "1,2,2");
}

TEST_CASE("lors: a later start is dense before it, and the mean rate counts it") {
  const Lors l = Lors::parse(0.6, "100,400,4", 40);  // dense before 40, 0.6 from 40 to 100
  CHECK(l.rate(0) == 0.0);
  CHECK(l.rate(39) == 0.0);
  CHECK(l.rate(40) == doctest::Approx(0.6));
  CHECK(l.rate(99) == doctest::Approx(0.6));
  CHECK(l.rate(100) == doctest::Approx(0.45));
  CHECK(l.rate(400) == 0.0);
  for (const index_t total : {1, 30, 41, 100, 250, 500}) {
    double sum = 0;
    for (index_t t = 0; t < total; ++t) sum += l.rate(t);
    CHECK(l.mean_rate(total) == doctest::Approx(sum / double(total)));
  }
  CHECK_THROWS_WITH_AS(Lors::parse(0.5, "100,400,4", 101), doctest::Contains("--sat-start 101"), Error);
  CHECK_THROWS_WITH_AS(Lors::parse(0.5, "100,400,4", -1), doctest::Contains("--sat-start -1"), Error);
}
