// expect: b.s output width must equal a.s input width
// a * b with static extents that cannot chain (b: 512 -> 1024, a takes 3072) must not compile.
#include <bonsai/bonsai.hpp>

int main() {
#ifdef BONSAI_FAILTEST_CONTROL
  auto p = bonsai::Dense<float, 1024, 768>() * bonsai::Dense<float, 512, 1024>();
#else
  auto p = bonsai::Dense<float, 3072, 768>() * bonsai::Dense<float, 512, 1024>();
#endif
  return p.in_features() == 512 ? 0 : 1;
}
