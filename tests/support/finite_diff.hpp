// tests/support/finite_diff.hpp — central differences against an analytic gradient, for tests
// whose loss is a function of a flat parameter or input array, and the largest difference of two
// flat results.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include <doctest/doctest.h>

#include <bonsai/config.hpp>

namespace bonsai::test {

/// The largest |(f(x_i + h) - f(x_i - h)) / 2h - grad[i]| over i = 0, stride, 2 stride, ... < n,
/// where loss() evaluates f at the current x; each x_i is restored after its probe. `grad` must
/// be a copy taken before probing (the probes may overwrite the model's gradients).
template <class Loss>
double worst_central_difference(double* x, index_t n, index_t stride, const double* grad,
                                Loss&& loss, double h = 1e-6) {
  double worst = 0;
  for (index_t i = 0; i < n; i += stride) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = loss();
    x[i] = keep - h;
    const double down = loss();
    x[i] = keep;
    worst = std::max(worst, std::abs((up - down) / (2 * h) - grad[i]));
  }
  return worst;
}

/// max_i |a[i] - b[i]|; the sizes must agree.
inline double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace bonsai::test
