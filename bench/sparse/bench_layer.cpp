// Forward + backward of one transformer layer's parts computing only kept neurons, at omission
// rates rho in {0.1, 0.3, 0.5, 0.7}, beside the dense part of the same shape (rho = 0 through the
// plain path): the MLP (GELU, dense maps, kept channels), the attention (kept heads) and the
// whole pre-norm block (both, plus the norms and residuals that stay dense). Shapes: the small
// trainer model (d 384, 6 heads, F 1536, B 8 x T 256) and GPT-2 124M (d 768, 12 heads, F 3072,
// B 4 x T 256), float. The kept sets are random, k = N - round(rho N) (channels a multiple of 8),
// fixed across iterations; the time includes gathering the compact weights and scattering their
// gradients back. Counters: tokens/s, GFLOP/s (3 x the kept forward FLOPs) and the kept counts.
// The speed-up at rho is the dense row's time over the rho row's.
#include <benchmark/benchmark.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/block.hpp>
#include <bonsai/sparse/selection.hpp>
#include <string>
#include <vector>

namespace {

using namespace bonsai;

enum class Part { mlp, attention, block };

std::vector<index_t> random_kept(index_t n, double rho, index_t align, Rng& rng) {
  if (rho == 0) return {};
  std::vector<double> scores(static_cast<std::size_t>(n));
  for (double& s : scores) s = rng.uniform();
  return select_topk(scores, keep_count(n, rho, align));
}

void layer_step(benchmark::State& state, Part part, bool gpt2) {
  GptConfig c;
  c.d_model = gpt2 ? 768 : 384;
  c.n_head = gpt2 ? 12 : 6;
  c.max_seq_len = 256;
  const index_t B = gpt2 ? 4 : 8, T = 256, n = B * T, d = c.d_model, f = c.ffn_width();
  const double rho = double(state.range(0)) / 100.0;
  using Layer = Block<Dense<float>, Dense<float>>;
  Layer block(c, Layer::MlpType(Dense<float>(d, f), Dense<float>(f, d), c.act));
  ParamArena<float> arena;
  block.declare(arena, "h.0.");
  arena.allocate();
  Rng rng(7);
  block.init(arena, rng, 0.02, 0.02);
  std::vector<float> x(std::size_t(n * d)), y(x.size()), dy(x.size()), dx(x.size());
  for (float& v : x) v = float(rng.normal());
  for (float& v : dy) v = float(rng.normal());
  LayerKept kept;
  if (part != Part::mlp) kept.heads = random_kept(c.n_head, rho, 1, rng);
  if (part != Part::attention) kept.channels = random_kept(f, rho, 8, rng);
  const auto xv = matrix_view(static_cast<const float*>(x.data()), n, d);
  const auto yv = matrix_view(y.data(), n, d);
  Layer::Context ctx;
  const auto step = [&] {
    switch (part) {
      case Part::mlp:
        block.mlp().forward(arena, ctx.mlp, xv, yv, nullptr, kept.channels);
        block.mlp().backward(arena, ctx.mlp,
                             matrix_view(static_cast<const float*>(dy.data()), n, d),
                             matrix_view(dx.data(), n, d));
        break;
      case Part::attention:
        block.attention().forward(arena, ctx.attn, xv, yv, B, T, nullptr, kept.heads);
        block.attention().backward(arena, ctx.attn,
                                   matrix_view(static_cast<const float*>(dy.data()), n, d),
                                   matrix_view(dx.data(), n, d));
        break;
      case Part::block:
        block.forward(arena, ctx, xv, yv, B, T, {}, kept);
        std::copy(dy.begin(), dy.end(), dx.begin());
        block.backward(arena, ctx, matrix_view(dx.data(), n, d));
        break;
    }
  };
  step();  // warm-up: workspaces and the GEMM library's first calls
  for (auto _ : state) {
    step();
    benchmark::ClobberMemory();
  }
  index_t flops = 0;
  if (part != Part::attention) flops += block.mlp().flops(n, index_t(kept.channels.size()));
  if (part != Part::mlp) flops += block.attention().flops(B, T, index_t(kept.heads.size()));
  const double iters = double(state.iterations());
  state.counters["tokens/s"] = benchmark::Counter(iters * double(n), benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(iters * 3.0 * double(flops) * 1e-9, benchmark::Counter::kIsRate);
  if (part != Part::mlp)
    state.counters["heads"] = double(kept.heads.empty() ? c.n_head : index_t(kept.heads.size()));
  if (part != Part::attention)
    state.counters["channels"] = double(kept.channels.empty() ? f : index_t(kept.channels.size()));
}

void register_all() {
  for (bool gpt2 : {false, true})
    for (Part part : {Part::mlp, Part::attention, Part::block}) {
      const std::string name = std::string("sat_") +
                               (part == Part::mlp         ? "mlp"
                                : part == Part::attention ? "attention"
                                                          : "block") +
                               (gpt2 ? "/d768" : "/d384") + "/rho%";
      benchmark::RegisterBenchmark(name.c_str(),
                                   [part, gpt2](benchmark::State& s) { layer_step(s, part, gpt2); })
          ->Arg(0)
          ->Arg(10)
          ->Arg(30)
          ->Arg(50)
          ->Arg(70)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
