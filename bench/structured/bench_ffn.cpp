// The FFN pair of a GPT block — up (d -> 4d) + bias + tanh-GELU, down (4d -> d) + bias — for
// every structure at the paper's two parameter budgets (63% and 32% of dense), forward and
// forward+backward, 2048 tokens. Counters: GFLOP/s (2 x weights x tokens per forward, x3 for
// forward+backward), tokens/s, and the speed-up over the dense pair of the same width, which
// runs first in every group.
#include <benchmark/benchmark.h>

#include <bonsai/bonsai.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <string>

#include "support/ffn_structures.hpp"

namespace {

using namespace bonsai;
using T = float;
constexpr index_t tokens = 2048;

/// Parameters, biases, activations, gradients and contexts of one FFN pair.
template <class Up, class Down>
struct FfnPair {
  Vector<T> w, g, b_up, b_down, db_up, db_down;
  Up up, dup;
  Down down, ddown;
  Matrix<T> x, h, y, dy, dh, dx;  // x (T, d), h (T, 4d), y (T, d) and their gradients
  Context<Up> ctx_up;
  Context<Down> ctx_down;

  FfnPair(const Up& u, const Down& d)
      : w(u.param_count() + d.param_count()), g(w.size()), b_up(u.out_features()), b_down(d.out_features()),
        db_up(u.out_features()), db_down(d.out_features()), up(u), dup(u), down(d), ddown(d),
        x(tokens, u.in_features()), h(tokens, u.out_features()), y(tokens, d.out_features()),
        dy(tokens, d.out_features()), dh(tokens, u.out_features()), dx(tokens, u.in_features()) {
    up.bind(w.data());
    down.bind(w.data() + u.param_count());
    dup.bind(g.data());
    ddown.bind(g.data() + u.param_count());
    Rng rng(1005);
    initialize(up, rng);
    initialize(down, rng);
    fill_normal(x.view(), rng);
    fill_normal(dy.view(), rng);
  }
  index_t params() const { return up.param_count() + down.param_count(); }
  void forward_pass() {
    forward(up, x.view(), h.view(), ctx_up, epilogue::BiasGelu<T>{b_up.view(), db_up.view()});
    forward(down, h.view(), y.view(), ctx_down, epilogue::Bias<T>{b_down.view(), db_down.view()});
  }
  void backward_pass() {
    backward(down, ctx_down, dy.view(), dh.view(), ddown, epilogue::Bias<T>{b_down.view(), db_down.view()});
    backward(up, ctx_up, dh.view(), dx.view(), dup, epilogue::BiasGelu<T>{b_up.view(), db_up.view()});
  }
};

/// Seconds per iteration of the dense pair, per (mode, width), for the speed-up counter.
std::map<std::string, double>& dense_seconds() {
  static std::map<std::string, double> s;
  return s;
}

template <class Up, class Down>
void run(benchmark::State& state, const Up& u, const Down& d, bool train, const std::string& structure) {
  FfnPair<Up, Down> ffn(u, d);
  const index_t width = u.in_features();
  ffn.forward_pass();  // warm-up: first GEMM calls are slower, workspaces get allocated
  if (train) ffn.backward_pass();
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    ffn.forward_pass();
    if (train) ffn.backward_pass();
    benchmark::DoNotOptimize(ffn.y.data());
    benchmark::ClobberMemory();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double per_iter = seconds / double(state.iterations());
  const double flops = double(2 * tokens * ffn.params()) * (train ? 3.0 : 1.0);
  const std::string key = std::string(train ? "train" : "fwd") + "/" + std::to_string(width);
  if (structure == "dense") dense_seconds()[key] = per_iter;
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["tokens_per_s"] = benchmark::Counter(double(tokens * state.iterations()), benchmark::Counter::kIsRate);
  state.counters["params_pct"] = 100.0 * double(ffn.params()) / double(2 * width * 4 * width);
  if (auto it = dense_seconds().find(key); it != dense_seconds().end())
    state.counters["speedup"] = it->second / per_iter;
  state.SetLabel(std::string("gemm=") + cpu::gemm_library());
}

void register_all() {
  for (bool train : {false, true}) {
    for (index_t d : {768, 1024, 2048}) {
      const std::string mode = train ? "ffn_fwd_bwd" : "ffn_fwd";
      auto add = [&](const std::string& structure, auto make) {
        const std::string name = mode + "/d:" + std::to_string(d) + "/" + structure;
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) {
          auto [up, down] = make();
          run(s, up, down, train, structure);
        })->Unit(benchmark::kMillisecond)->UseRealTime();
      };
      bench::for_each_ffn_structure<T>(d, add);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("gemm", bonsai::cpu::gemm_library());
  benchmark::AddCustomContext("threads", std::to_string(bonsai::max_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
