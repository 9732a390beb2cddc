// train/lr_schedule.hpp: linear warm-up, cosine decay to the floor, WSD (warm-up, stable, decay), constant schedules.
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

TEST_CASE("lr schedule: warm-up, stable, decay (WSD) in each shape") {
  const double peak = 1e-3, floor = 0.1 * peak;
  // 100 steps: warm-up 10, stable to 80, the last 20 decay.
  const auto s = LrSchedule::wsd(peak, 10, 100, 0.2, LrSchedule::Decay::sqrt, 0.1);
  CHECK(s.kind() == LrSchedule::Kind::wsd);
  CHECK(s.decay_steps() == 20);
  CHECK(s.at(0) == doctest::Approx(peak / 10));
  CHECK(s.at(9) == doctest::Approx(peak));
  CHECK(s.at(10) == doctest::Approx(peak));
  CHECK(s.at(79) == doctest::Approx(peak));
  CHECK(s.at(80) == doctest::Approx(peak));                                       // x = 0
  CHECK(s.at(85) == doctest::Approx(floor + (peak - floor) * (1 - std::sqrt(0.25))));
  CHECK(s.at(100) == doctest::Approx(floor));
  CHECK(s.at(500) == doctest::Approx(floor));
  const auto linear = LrSchedule::wsd(peak, 10, 100, 0.2, LrSchedule::Decay::linear, 0.0);
  CHECK(linear.at(90) == doctest::Approx(0.5 * peak));
  CHECK(linear.at(99) == doctest::Approx(0.05 * peak));
  const auto cosine = LrSchedule::wsd(peak, 0, 100, 0.5, LrSchedule::Decay::cosine, 0.0);
  CHECK(cosine.at(0) == doctest::Approx(peak));
  CHECK(cosine.at(75) == doctest::Approx(0.5 * peak));
  // The decay only falls.
  for (std::int64_t t = 80; t < 100; ++t) CHECK(s.at(t + 1) <= s.at(t));
  CHECK(parse_wsd_shape("cosine") == LrSchedule::Decay::cosine);
  CHECK_THROWS_WITH_AS(parse_wsd_shape("exp"), doctest::Contains("--wsd-shape: expected linear, sqrt or cosine"),
                       Error);
  CHECK_THROWS_WITH_AS(LrSchedule::wsd(peak, 90, 100, 0.2), doctest::Contains("inside the 90 warm-up steps"),
                       Error);
  CHECK_THROWS_WITH_AS(LrSchedule::wsd(peak, 0, 100, 0.0), doctest::Contains("--wsd-decay-fraction"), Error);
}
