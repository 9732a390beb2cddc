// Forward + backward of one MLP layer (GELU, dense up and down maps, float) computing only a
// kept set of its channels, at omission rates rho in {0.1, 0.3, 0.5, 0.7}, beside the dense
// layer of the same shape (rho = 0 through the plain path). Shapes: the small trainer model
// (d 384, F 1536, B 8 x T 256 tokens) and GPT-2 124M (d 768, F 3072, B 4 x T 256). The kept
// set is a random k = F - round(rho F) channels, fixed across iterations; the time includes
// gathering the compact weights and scattering their gradients back. Counters: tokens/s and
// GFLOP/s (3 x the kept GEMMs' forward FLOPs). The speed-up at rho is the dense row's time
// over the rho row's.
#include <benchmark/benchmark.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/mlp.hpp>
#include <bonsai/sparse/selection.hpp>
#include <vector>

namespace {

using namespace bonsai;

void mlp_step(benchmark::State& state, index_t d, index_t tokens) {
  const index_t f = 4 * d;
  const double rho = double(state.range(0)) / 100.0;
  Mlp<Dense<float>, Dense<float>> mlp(Dense<float>(d, f), Dense<float>(f, d), ActKind::gelu);
  ParamArena<float> arena;
  mlp.declare(arena, "mlp.");
  arena.allocate();
  Rng rng(7);
  mlp.init(arena, rng, 0.02, 0.02);
  std::vector<float> x(std::size_t(tokens * d)), y(x.size()), dy(x.size()), dx(x.size());
  for (float& v : x) v = float(rng.normal());
  for (float& v : dy) v = float(rng.normal());
  std::vector<index_t> kept;
  if (rho > 0) {
    std::vector<double> scores(static_cast<std::size_t>(f));
    for (double& s : scores) s = rng.uniform();
    kept = select_topk(scores, keep_count(f, rho));
  }
  const index_t k = kept.empty() ? f : index_t(kept.size());
  decltype(mlp)::Context ctx;
  const auto step = [&] {
    mlp.forward(arena, ctx, matrix_view(static_cast<const float*>(x.data()), tokens, d),
                matrix_view(y.data(), tokens, d), nullptr, kept);
    mlp.backward(arena, ctx, matrix_view(static_cast<const float*>(dy.data()), tokens, d),
                 matrix_view(dx.data(), tokens, d));
  };
  step();  // warm-up: workspaces and the GEMM library's first calls
  for (auto _ : state) {
    step();
    benchmark::ClobberMemory();
  }
  const double iters = double(state.iterations());
  state.counters["tokens/s"] =
      benchmark::Counter(iters * double(tokens), benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(iters * 3.0 * 4.0 * double(tokens * d * k) * 1e-9,
                                                 benchmark::Counter::kIsRate);
  state.counters["kept"] = double(k);
}

void small(benchmark::State& s) { mlp_step(s, 384, 8 * 256); }
void gpt2(benchmark::State& s) { mlp_step(s, 768, 4 * 256); }

}  // namespace

BENCHMARK(small)
    ->Name("sat_mlp/d384/rho%")
    ->Arg(0)
    ->Arg(10)
    ->Arg(30)
    ->Arg(50)
    ->Arg(70)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(gpt2)
    ->Name("sat_mlp/d768/rho%")
    ->Arg(0)
    ->Arg(10)
    ->Arg(30)
    ->Arg(50)
    ->Arg(70)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
