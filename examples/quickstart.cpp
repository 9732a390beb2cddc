// quickstart — a structured FFN layer from bonsai's parts: build a BlockShuffle map, bind it to
// parameter and gradient storage, initialise it as the paper does, run forward with the fused
// bias + GELU epilogue, run backward, and check the result against the merged dense matrix.
#include <bonsai/bonsai.hpp>
#include <cstdio>

int main() {
  using namespace bonsai;
  const index_t tokens = 64, d = 256;

  // fc1 of a width-256 block with 4 blocks: 256 -> 1024 through min(256, 1024) = 256 features.
  BlockShuffle<float> up = block_shuffle<float>(d, 4 * d, /*blocks=*/4);
  for (const ParamInfo& p : up.parameters())
    std::printf("%-10s (%lld, %lld, %lld)\n", p.name.c_str(), (long long)p.shape[0],
                (long long)p.shape[1], (long long)p.shape[2]);

  Vector<float> weights(up.param_count()), grads(up.param_count());  // flat parameter storage
  Vector<float> bias(4 * d), dbias(4 * d);
  up = bind(up, weights.view());
  const BlockShuffle<float> dup = bind(up, grads.view());
  Rng rng(1005);
  initialize(up, rng);  // orthogonal polar factors, as in the paper

  Matrix<float> x(tokens, d), h(tokens, 4 * d);  // (T, d) -> (T, 4d)
  fill_normal(x.view(), rng);
  Context<BlockShuffle<float>> ctx;  // keeps what backward needs; reuse it every step
  const epilogue::BiasGelu<float> epi{bias.view(), dbias.view()};
  forward(up, x.view(), h.view(), ctx, epi);

  Matrix<float> dh(tokens, 4 * d), dx(tokens, d);
  fill_normal(dh.view(), rng);
  backward(up, ctx, dh.view(), dx.view(), dup, epi);  // dx =, grads and dbias +=

  // The structured map equals its merged dense matrix (up to rounding).
  const Matrix<float> w = up.to_dense();  // (4d, d)
  Eigen::MatrixXf pre = as_eigen(x) * as_eigen(w).transpose();
  const float err = (pre.unaryExpr([](float u) { return epilogue::gelu(u); }) - as_eigen(h)).cwiseAbs().maxCoeff();
  std::printf("params %lld (dense %lld), forward GFLOP %.3f, max |h - gelu(x W^T)| = %.2e\n",
              (long long)up.param_count(), (long long)(d * 4 * d), up.flops(tokens) * 1e-9, err);
  return err < 1e-4f ? 0 : 1;
}
