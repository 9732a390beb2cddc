// train/lr_schedule.hpp: linear warm-up, cosine decay to the floor, constant schedules.
#include <doctest/doctest.h>

#include <bonsai/train/lr_schedule.hpp>

using namespace bonsai;

TEST_CASE("lr schedule: warm-up climbs linearly from peak / warmup to the peak") {
  const auto s = LrSchedule::cosine(6e-4, 10, 110);
  CHECK(s.at(0) == doctest::Approx(6e-4 / 10));
  CHECK(s.at(4) == doctest::Approx(6e-4 * 5 / 10));
  CHECK(s.at(9) == doctest::Approx(6e-4));
  CHECK(s.at(10) == doctest::Approx(6e-4));  // the cosine starts at the peak
}

TEST_CASE("lr schedule: cosine midpoint, floor at the end and after, monotone decay") {
  const double peak = 1e-3, floor = 0.1;
  const auto s = LrSchedule::cosine(peak, 10, 110, floor);
  CHECK(s.at(60) == doctest::Approx((1 + floor) / 2 * peak));
  CHECK(s.at(110) == doctest::Approx(floor * peak));
  CHECK(s.at(500) == doctest::Approx(floor * peak));
  for (std::int64_t t = 0; t < 9; ++t) CHECK(s.at(t) < s.at(t + 1));
  for (std::int64_t t = 10; t < 110; ++t) CHECK(s.at(t) > s.at(t + 1));
  CHECK(LrSchedule::cosine(peak, 0, 100).at(0) == doctest::Approx(peak));  // no warm-up
  CHECK(LrSchedule::cosine(peak, 0, 100, 0.0).at(100) == 0.0);
  CHECK(s.kind() == LrSchedule::Kind::cosine);
  CHECK(s.min_lr_fraction() == floor);
}

TEST_CASE("lr schedule: constant, with and without warm-up") {
  const auto c = LrSchedule::constant(3e-4);
  CHECK(c.at(0) == 3e-4);
  CHECK(c.at(123456) == 3e-4);
  const auto w = LrSchedule::constant(3e-4, 4);
  CHECK(w.at(0) == doctest::Approx(3e-4 / 4));
  CHECK(w.at(3) == doctest::Approx(3e-4));
  CHECK(w.at(1000) == 3e-4);
  CHECK(w.kind() == LrSchedule::Kind::constant);
}

TEST_CASE("lr schedule: rejects impossible settings") {
  CHECK_THROWS_AS(LrSchedule::cosine(1e-3, 100, 100), Error);
  CHECK_THROWS_AS(LrSchedule::cosine(1e-3, 10, 100, 1.5), Error);
  CHECK_THROWS_AS(LrSchedule::constant(-1.0), Error);
  CHECK_THROWS_AS(LrSchedule::constant(1.0, -3), Error);
  CHECK_THROWS_AS(LrSchedule::constant(1.0).at(-1), Error);
}
