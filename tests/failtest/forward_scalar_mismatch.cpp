// expect: x and y must hold the map.s scalar type
// Running a float map on double activations must not compile.
#include <bonsai/bonsai.hpp>

int main() {
  bonsai::Dense<float> f(4, 4);
  bonsai::Context<bonsai::Dense<float>> ctx;
#ifdef BONSAI_FAILTEST_CONTROL
  bonsai::Matrix<float> x(2, 4), y(2, 4);
#else
  bonsai::Matrix<double> x(2, 4), y(2, 4);
#endif
  try {
    bonsai::forward(f, x.view(), y.view(), ctx);
  } catch (const bonsai::Error&) {
    return 0;  // the map is unbound: the run-time check fires, which is fine for the control
  }
  return 1;
}
