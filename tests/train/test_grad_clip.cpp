// train/grad_clip.hpp: deterministic global norm, clip factor, non-finite detection.
#include <doctest/doctest.h>

#include <bonsai/core/parallel.hpp>
#include <bonsai/core/tensor.hpp>
#include <bonsai/train/grad_clip.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <utility>
#include <vector>

using namespace bonsai;

namespace {
std::vector<float> random_values(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(gen);
  return x;
}
}  // namespace

TEST_CASE("grad clip: global norm equals a double reference") {
  for (std::size_t n : {0, 1, 7, 8, 1000, 100003}) {
    CAPTURE(n);
    const std::vector<float> x = random_values(n, unsigned(n));
    long double ref = 0;
    for (float v : x) ref += (long double)v * v;
    CHECK(global_norm(std::span(x)) == doctest::Approx(std::sqrt(double(ref))).epsilon(1e-12));
  }
  const double three_four[] = {3.0, 4.0};
  CHECK(global_norm(std::span(three_four)) == 5.0);
  Vector<float> v(3);
  v.data()[1] = -2.0f;
  CHECK(global_norm(v.view()) == 2.0);
  CHECK(global_norm(std::as_const(v).view()) == 2.0);
}

TEST_CASE("grad clip: the norm has the same bits for any thread count") {
  const std::vector<float> x = random_values(300001, 42);  // 19 chunks
  const int threads = max_threads();
  set_threads(1);
  const double one = global_norm(std::span(x));
  set_threads(2);
  const double two = global_norm(std::span(x));
  set_threads(3);
  const double three = global_norm(std::span(x));
  set_threads(threads);
  CHECK(std::memcmp(&one, &two, sizeof one) == 0);
  CHECK(std::memcmp(&one, &three, sizeof one) == 0);
}

TEST_CASE("grad clip: clip scale") {
  CHECK(clip_scale(0.5, 1.0) == 1.0);
  CHECK(clip_scale(4.0, 1.0) == doctest::Approx(0.25));
  CHECK(clip_scale(4.0, 1.0) < 0.25);  // the + 1e-6 keeps the clipped norm just below max
  CHECK(clip_scale(1e9, 0.0) == 1.0);  // max_norm 0 turns clipping off
  CHECK(clip_scale(0.0, 1.0) == 1.0);
  CHECK_THROWS_WITH_AS(clip_scale(std::nan(""), 1.0), doctest::Contains("norm is nan"), Error);
  CHECK_THROWS_AS(clip_scale(std::numeric_limits<double>::infinity(), 1.0), Error);
}

TEST_CASE("grad clip: non-finite gradients are reported, not hidden") {
  std::vector<float> x = random_values(50000, 1);
  CHECK(all_finite(std::span(x)));
  CHECK(std::isfinite(global_norm(std::span(x))));
  x[40000] = std::numeric_limits<float>::quiet_NaN();
  CHECK_FALSE(all_finite(std::span(x)));
  CHECK(std::isnan(global_norm(std::span(x))));
  x[40000] = -std::numeric_limits<float>::infinity();
  CHECK_FALSE(all_finite(std::span(x)));
  CHECK(std::isinf(global_norm(std::span(x))));
  // Large but finite floats do not overflow the double accumulator.
  std::vector<float> big(10, 3e38f);
  CHECK(all_finite(std::span(big)));
  CHECK(std::isfinite(global_norm(std::span(big))));
  Vector<double> v(4);
  v.data()[3] = std::numeric_limits<double>::infinity();
  CHECK_FALSE(all_finite(v.view()));
}
