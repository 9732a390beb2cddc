// Pre-merged decoding (spec §7): latency of the FFN pair of a GPT block — up (d -> 4d) + bias +
// tanh-GELU, down (4d -> d) + bias — against the token count T, at d = 768 and 1024, for
// LowRank (R = d/4), BlockDense (B = 2, R = d/3 rounded down to a multiple of B) and
// BlockShuffle (B = 4), each run three ways: "structured" (the structured chain), "merged" (one
// dense GEMM with W_merged: the dense baseline of the same shape) and "dispatch" (PreMerged with
// the thresholds calibrate() measured for the up and down maps of that shape, once, before its
// first benchmark). Counters: GFLOP/s from the FLOPs of the path actually run, tokens/s, which
// path each map took, and the two calibrated thresholds.
#include <benchmark/benchmark.h>

#include <bonsai/bonsai.hpp>
#include <map>
#include <memory>
#include <string>

namespace {

using namespace bonsai;
using T = float;
constexpr index_t max_tokens = 1024;

/// Both maps of one FFN shape, merged and calibrated, with biases, activations and contexts.
template <class S>
struct PremergedPair {
  PreMerged<S> up, down;
  Vector<T> w, b_up, b_down, db_up, db_down;
  Matrix<T> x, h, y;  // (max_tokens, d), (max_tokens, 4d), (max_tokens, d)
  Context<PreMerged<S>> ctx_up, ctx_down;
  index_t up_threshold = 0, down_threshold = 0;  // calibrated max_merged_tokens

  PremergedPair(const S& u, const S& d)
      : up(u), down(d), w(up.param_count() + down.param_count()), b_up(u.out_features()),
        b_down(d.out_features()), db_up(u.out_features()), db_down(d.out_features()),
        x(max_tokens, u.in_features()), h(max_tokens, u.out_features()), y(max_tokens, d.out_features()) {
    up.bind(w.data());
    down.bind(w.data() + up.param_count());
    Rng rng(1005);
    initialize(up.structured(), rng);
    initialize(down.structured(), rng);
    merge(up);
    merge(down);
    fill_normal(x.view(), rng);
    fill_normal(b_up.view(), rng);
    fill_normal(b_down.view(), rng);
    up_threshold = calibrate(up, max_tokens).max_merged_tokens;
    down_threshold = calibrate(down, max_tokens).max_merged_tokens;
  }
  void set_thresholds(index_t u, index_t d) {
    up.set_max_merged_tokens(u);
    down.set_max_merged_tokens(d);
  }
  index_t flops(index_t tokens) const { return up.flops(tokens) + down.flops(tokens); }
  void forward_pass(index_t tokens) {
    const auto xt = matrix_view(x.data(), tokens, x.cols());
    const auto ht = matrix_view(h.data(), tokens, h.cols());
    const auto yt = matrix_view(y.data(), tokens, y.cols());
    forward(up, xt, ht, ctx_up, epilogue::BiasGelu<T>{b_up.view(), db_up.view()});
    forward(down, ht, yt, ctx_down, epilogue::Bias<T>{b_down.view(), db_down.view()});
  }
};

/// One pair per shape, built (and calibrated) by the first benchmark that needs it.
template <class S, class Make>
PremergedPair<S>& pair_for(const std::string& key, const Make& make) {
  static std::map<std::string, std::unique_ptr<PremergedPair<S>>> pairs;
  auto& p = pairs[key];
  if (!p) {
    auto [u, d] = make();
    p = std::make_unique<PremergedPair<S>>(u, d);
  }
  return *p;
}

template <class S, class Make>
void run(benchmark::State& state, const std::string& shape, const Make& make, const std::string& variant) {
  PremergedPair<S>& ffn = pair_for<S>(shape, make);
  const index_t tokens = state.range(0);
  if (variant == "structured") ffn.set_thresholds(0, 0);
  else if (variant == "merged") ffn.set_thresholds(max_tokens, max_tokens);
  else ffn.set_thresholds(ffn.up_threshold, ffn.down_threshold);
  ffn.forward_pass(tokens);  // warm-up: workspaces for this T
  for (auto _ : state) {
    ffn.forward_pass(tokens);
    benchmark::DoNotOptimize(ffn.y.data());
    benchmark::ClobberMemory();
  }
  const double iters = double(state.iterations());
  state.counters["GFLOPs"] = benchmark::Counter(double(ffn.flops(tokens)) * 1e-9 * iters, benchmark::Counter::kIsRate);
  state.counters["tokens_per_s"] = benchmark::Counter(double(tokens) * iters, benchmark::Counter::kIsRate);
  state.counters["merged_up"] = double(ffn.up.uses_merged(tokens));
  state.counters["merged_down"] = double(ffn.down.uses_merged(tokens));
  state.counters["threshold_up"] = double(ffn.up_threshold);  // in every run, for the CSV reporter
  state.counters["threshold_down"] = double(ffn.down_threshold);
  state.SetLabel(std::string("gemm=") + cpu::gemm_library());
}

void register_all() {
  for (index_t d : {768, 1024}) {
    const index_t f = 4 * d;
    auto add = [&](const std::string& structure, auto make) {
      using S = typename decltype(make())::first_type;
      const std::string shape = "d:" + std::to_string(d) + "/" + structure;
      for (index_t tokens = 1; tokens <= max_tokens; tokens *= 2)
        for (const char* variant : {"structured", "merged", "dispatch"}) {
          const std::string name = "premerge/" + shape + "/" + variant;
          benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { run<S>(s, shape, make, variant); })
              ->ArgName("T")
              ->Arg(tokens)
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime();
        }
    };
    add("lowrank_32", [=] { return std::pair(LowRank<T>(d, f, d / 4), LowRank<T>(f, d, d / 4)); });
    const index_t r = d / 3 / 2 * 2;
    add("blockdense_32", [=] { return std::pair(block_dense<T>(d, f, r, 2), block_dense<T>(f, d, r, 2)); });
    add("blockshuffle_32", [=] { return std::pair(block_shuffle<T>(d, f, 4), block_shuffle<T>(f, d, 4)); });
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
