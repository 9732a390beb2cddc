// expect: each factor.s input width must equal the output width of the factor to its right
// Naming a Product type whose static extents cannot chain must not compile.
#include <bonsai/bonsai.hpp>

int main() {
#ifdef BONSAI_FAILTEST_CONTROL
  using P = bonsai::Product<bonsai::LowRank<float, 64, 32>, bonsai::BlockDiag<float, 16, 64>>;
#else
  using P = bonsai::Product<bonsai::LowRank<float, 48, 32>, bonsai::BlockDiag<float, 16, 64>>;
#endif
  P p(bonsai::LowRank<float, P::static_out == 32 ? 64 : 48, 32>(8), bonsai::BlockDiag<float, 16, 64>(4));
  return int(p.out_features() == 32 ? 0 : 1);
}
