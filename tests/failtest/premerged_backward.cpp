// expect: PreMerged is for inference: train the structured map and merge it afterwards
// A pre-merged map has no backward: training through it must not compile.
#include <bonsai/bonsai.hpp>

int main() {
  using Map = bonsai::PreMerged<bonsai::LowRank<float>>;
  bonsai::Vector<float> w(Map(bonsai::LowRank<float>(4, 4, 2)).param_count());
  const Map f = bonsai::bind(Map(bonsai::LowRank<float>(4, 4, 2)), w.view());
  bonsai::Context<Map> ctx;
  bonsai::Matrix<float> x(2, 4), y(2, 4), dx(2, 4);
  bonsai::forward(f, x.view(), y.view(), ctx);
#ifndef BONSAI_FAILTEST_CONTROL
  bonsai::backward(f, ctx, y.view(), dx.view(), f);
#endif
  return 0;
}
