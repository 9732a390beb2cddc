// tests/support/finite_diff.hpp — central differences against an analytic gradient, for tests
// whose loss is a function of a flat parameter or input array.
#pragma once

#include <algorithm>
#include <cmath>

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

}  // namespace bonsai::test
