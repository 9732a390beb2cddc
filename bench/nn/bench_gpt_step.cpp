// One GPT training step (forward, backward, AdamW) on random tokens, for the GPT-2 124M shape
// (12 layers, d 768, B 4, T 256) and the small shape (6 layers, d 384, 6 heads, B 8, T 256),
// both with the GPT-2 vocabulary; dense FFNs first (the baseline), then LowRank and BlockShuffle
// at 32% of the dense FFN's parameters, and LowRank 32% during self-guided training at a = 0.5,
// the mean a of the guided phase, with reduce-flop (each guide runs with probability a, redrawn
// every step) and without (every guide runs, blended). Counters: tokens/s, achieved GFLOP/s (3 x
// forward FLOPs of every GEMM and attention product, averaged over the steps) and parameters
// (millions). Compare each structured row's tokens/s with the dense row above it; train_gpt
// reports a run's peak memory. The sat rows train the dense model with sparsity-accelerated
// training at a fixed omission rate rho (train/sat.hpp with its defaults: activation scores,
// sampling, kept channels a multiple of 8, omitted parameters skipped by AdamW), every step
// selecting, observing and flagging as train_gpt does; their GFLOP/s counts the kept work only,
// so the speed-up is the dense row's time over the sat row's.
#include <benchmark/benchmark.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/train/adamw.hpp>
#include <bonsai/train/sat.hpp>
#include <bonsai/train/self_guided.hpp>
#include <string>

namespace {

using namespace bonsai;

GptConfig shape(bool gpt2_124m, FfnKind ffn) {
  GptConfig c;
  if (!gpt2_124m) {
    c.n_layer = 6;
    c.d_model = 384;
    c.n_head = 6;
  }
  c.max_seq_len = 256;
  c.ffn = ffn;
  if (ffn != FfnKind::dense) set_ffn_params_fraction(c, 0.32);
  return c;
}

/// Nothing to set before a step of a plain model.
struct Plain {
  template <class Model>
  void operator()(Model&, Rng&) {}
};
/// Self-guided training at a = 0.5, with or without reduce-flop; counts the guides that ran.
struct Guided {
  bool reduce_flop = false;
  index_t maps = 0, active = 0;
  template <class Model>
  void operator()(Model& model, Rng& rng) {
    set_guides(model, 0.5, reduce_flop, rng);
    for (auto& block : model.blocks())
      block.mlp().for_each_map([&](const auto& map) {
        ++maps;
        active += map.alpha() > 0;
      });
  }
};

template <class Up, class Down = Up, class Prepare = Plain>
void train_step(benchmark::State& state, bool gpt2_124m, FfnKind ffn, Prepare prepare = {}) {
  const GptConfig c = shape(gpt2_124m, ffn);
  const index_t B = gpt2_124m ? 4 : 8, T = c.max_seq_len;
  Gpt<Up, Down> model(c);
  Rng rng(1005);
  model.init(rng);
  AdamW<float> opt(model.arena());
  std::vector<std::int32_t> in(B * T), tgt(B * T);
  for (auto& t : in) t = std::int32_t(rng.uniform() * double(c.vocab_size));
  for (auto& t : tgt) t = std::int32_t(rng.uniform() * double(c.vocab_size));
  typename Gpt<Up, Down>::Context ctx;
  const TokenBatch batch{in.data(), tgt.data(), B, T};
  double flops = 0;
  index_t steps = 0;
  const auto step = [&] {
    prepare(model, rng);
    flops += 3.0 * double(model.flops(B, T));
    ++steps;
    model.arena().zero_grads();
    model.forward(ctx, batch, 1.0f);
    model.backward(ctx);
    opt.step(model.arena(), 1e-4);
  };
  step();  // warm-up: workspaces and oneDNN's first calls
  flops = 0;
  steps = 0;
  if constexpr (std::is_same_v<Prepare, Guided>) prepare.maps = prepare.active = 0;
  for (auto _ : state) step();
  flops /= double(steps);
  state.counters["tokens/s"] = benchmark::Counter(double(B * T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["params_M"] = double(model.param_count()) * 1e-6;
  if constexpr (std::is_same_v<Prepare, Guided>)
    state.counters["guides_run"] = double(prepare.active) / double(std::max<index_t>(prepare.maps, 1));
  state.SetLabel(std::string(gpt2_124m ? "gpt2-124M" : "small") + " " + to_string(ffn) + " " + cpu::gemm_library());
}

/// A dense model's step under SAT at omission rate rho% (state.range(0)).
void sat_step(benchmark::State& state, bool gpt2_124m) {
  using Model = Gpt<Dense<float>, Dense<float>>;
  const GptConfig c = shape(gpt2_124m, FfnKind::dense);
  const index_t B = gpt2_124m ? 4 : 8, T = c.max_seq_len;
  Model model(c);
  Rng rng(1005);
  model.init(rng);
  AdamW<float> opt(model.arena());
  Sat<Model> sat(SatConfig{.ladder = {double(state.range(0)) / 100.0, 1 << 30, 1 << 30, 1}, .seed = 1},
                 model);
  std::vector<std::int32_t> in(B * T), tgt(B * T);
  for (auto& t : in) t = std::int32_t(rng.uniform() * double(c.vocab_size));
  for (auto& t : tgt) t = std::int32_t(rng.uniform() * double(c.vocab_size));
  Model::Context ctx;
  const TokenBatch batch{in.data(), tgt.data(), B, T};
  double flops = 0;
  index_t t = 0;
  bool sparse = false;  // whether the last step computed a subset
  const auto step = [&] {
    const auto kept = sat.select(model, t++, 0);
    sparse = !kept.empty();
    flops += double(model.training_flops(B, T, kept));
    model.arena().zero_grads();
    model.forward(ctx, batch, 1.0f, kept);
    sat.observe(model, ctx);
    model.backward(ctx);
    sat.finish_step();
    opt.step(model.arena(), 1e-4, 1.0, sat.update_flags());
  };
  step();  // warm-up, and the dense step that measures every neuron
  step();  // warm-up of the sparse workspaces
  if (state.range(0) > 0 && !sparse) state.SkipWithError("SAT did not thin the step after the dense one");
  flops = 0;
  const index_t first = t;
  for (auto _ : state) step();
  flops /= double(t - first);
  state.counters["tokens/s"] = benchmark::Counter(double(B * T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(gpt2_124m ? "gpt2-124M" : "small") + " dense, SAT " + cpu::gemm_library());
}

void register_all() {
  for (bool big : {true, false}) {
    const std::string name = big ? "gpt2_124M" : "small_6x384";
    benchmark::RegisterBenchmark((name + "/dense").c_str(), [big](benchmark::State& s) {
      train_step<Dense<float>>(s, big, FfnKind::dense);
    })->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
    benchmark::RegisterBenchmark((name + "/lowrank_32").c_str(), [big](benchmark::State& s) {
      train_step<LowRank<float>>(s, big, FfnKind::lowrank);
    })->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
    benchmark::RegisterBenchmark((name + "/blockshuffle_32").c_str(), [big](benchmark::State& s) {
      train_step<BlockShuffle<float>>(s, big, FfnKind::blockshuffle);
    })->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
    for (bool reduce_flop : {true, false})
      benchmark::RegisterBenchmark((name + "/lowrank_32_sgt" + (reduce_flop ? "_reduce_flop" : "_blend")).c_str(),
                                   [big, reduce_flop](benchmark::State& s) {
        using G = SelfGuided<LowRank<float>>;
        train_step<G>(s, big, FfnKind::lowrank, Guided{reduce_flop});
      })->Unit(benchmark::kMillisecond)->Iterations(reduce_flop ? 8 : 3)->UseRealTime();
    benchmark::RegisterBenchmark((name + "/dense_sat/rho%").c_str(), [big](benchmark::State& s) {
      sat_step(s, big);
    })->Arg(10)->Arg(30)->Arg(50)->Arg(70)->Unit(benchmark::kMillisecond)->Iterations(big ? 3 : 8)->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
