// One training forward and backward of a small GPT, compiled without instantiating the model or
// the GEMM (model.hpp declares them extern).
#include <cmath>
#include <cstdio>
#include <vector>

#include "model.hpp"

int main() {
  bonsai::GptConfig config;
  config.vocab_size = 64;
  config.n_layer = 2;
  config.d_model = 32;
  config.n_head = 4;
  config.max_seq_len = 16;
  Model model(config);
  bonsai::Rng rng(1005);
  model.init(rng);
  std::vector<std::int32_t> tokens(2 * 16), targets(2 * 16);  // (B, T)
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = std::int32_t(i % 64);
    targets[i] = std::int32_t((i + 1) % 64);
  }
  Model::Context ctx;
  model.arena().zero_grads();
  const double loss = model.forward(ctx, {tokens.data(), targets.data(), 2, 16}, 1.0f);
  model.backward(ctx);
  std::printf("loss %.4f (ln 64 = %.4f)\n", loss, std::log(64.0));
  return std::isfinite(loss) && std::abs(loss - std::log(64.0)) < 0.5 ? 0 : 1;
}
