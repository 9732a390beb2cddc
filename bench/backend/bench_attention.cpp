// Causal self-attention on the CPU (cpu::attention_forward / attention_backward) at GPT-2 small
// shapes, forward and forward+backward, against a dense baseline: the same kernels with one row
// block spanning the whole sequence, so the full T x T scores are computed and then masked.
//
// FLOPs count only the useful causal work. Per (batch, query head) each of the two forward GEMMs
// (S = Q Kᵀ and O = P V) takes T(T+1)/2 dot products of length hd, so
//   forward          = 2 · B · Hq · hd · T(T+1)        (≈ 2 B Hq T² hd)
//   forward+backward = 3 × forward                     (backward: dP = dO Vᵀ, dQ = dS K,
//                                                       dK = dSᵀ Q, dV = Pᵀ dO)
// The dense baseline is credited with the same FLOPs, so its GFLOP/s compare times directly.
// Softmax and its backward are not counted. Counters: GFLOPs (rate), tokens_per_s (B·T per
// iteration), speedup (dense baseline time / this time, on the causal rows).
#include <benchmark/benchmark.h>

#include <bonsai/backend/cpu/attention.hpp>
#include <bonsai/core/rng.hpp>
#include <chrono>
#include <map>
#include <string>

namespace {

using namespace bonsai;
using T = float;

struct Buffers {
  Matrix<T> qkv, out, dout, dqkv;  // (B*T, A + 2KV), (B*T, A), (B*T, A), (B*T, A + 2KV)
  Tensor<T, 4> probs, dscores;     // (B, Hq, T, T)
  explicit Buffers(const AttentionShape& s)
      : qkv(s.tokens(), s.qkv_width()), out(s.tokens(), s.q_width()), dout(s.tokens(), s.q_width()),
        dqkv(s.tokens(), s.qkv_width()), probs(s.batch, s.heads, s.seq, s.seq),
        dscores(s.batch, s.heads, s.seq, s.seq) {
    Rng rng(1005);
    fill_normal(qkv.view(), rng);
    fill_normal(dout.view(), rng);
  }
};

/// Seconds per iteration of the dense baseline, per (mode, shape), for the speed-up counter.
std::map<std::string, double>& dense_seconds() {
  static std::map<std::string, double> s;
  return s;
}

void run(benchmark::State& state, const AttentionShape& s, bool train, index_t block, const std::string& key,
         bool dense) {
  Buffers buf(s);
  auto step = [&] {
    cpu::detail::attention_forward_blocked<T>(s, buf.qkv.view(), buf.out.view(), buf.probs.view(), block);
    if (train)
      cpu::detail::attention_backward_blocked<T>(s, buf.qkv.view(), buf.probs.view(), buf.dout.view(),
                                                 buf.dqkv.view(), buf.dscores.view(), block);
  };
  step();  // warm-up: first GEMM calls are slower, pages get touched
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    benchmark::DoNotOptimize(buf.out.data());
    benchmark::DoNotOptimize(buf.dqkv.data());
    benchmark::ClobberMemory();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double per_iter = seconds / double(state.iterations());
  const double fwd_flops = 2.0 * double(s.batch * s.heads * s.head_dim) * double(s.seq) * double(s.seq + 1);
  const double flops = fwd_flops * (train ? 3.0 : 1.0);
  if (dense) dense_seconds()[key] = per_iter;
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["tokens_per_s"] =
      benchmark::Counter(double(s.tokens()) * double(state.iterations()), benchmark::Counter::kIsRate);
  if (auto it = dense_seconds().find(key); it != dense_seconds().end()) state.counters["speedup"] = it->second / per_iter;
  state.SetLabel(std::string("gemm=") + cpu::gemm_library() + " threads=" + std::to_string(max_threads()));
}

void register_all() {
  const AttentionShape shapes[] = {
      {4, 256, 12, 12, 64},  // GPT-2 small, B = 4
      {8, 256, 6, 6, 64},    // half the heads, B = 8
      {1, 1024, 12, 12, 64}, // GPT-2 small context
      {4, 256, 12, 4, 64},   // grouped-query 3:1
  };
  for (bool train : {false, true})
    for (const auto& s : shapes) {
      const std::string mode = train ? "attn_fwd_bwd" : "attn_fwd";
      const std::string key = mode + "/B:" + std::to_string(s.batch) + "/T:" + std::to_string(s.seq) +
                              "/Hq:" + std::to_string(s.heads) + "/Hkv:" + std::to_string(s.kv_heads) +
                              "/hd:" + std::to_string(s.head_dim);
      auto add = [&](const std::string& variant, index_t block, bool dense) {
        const std::string name = key + "/" + variant;
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { run(st, s, train, block, key, dense); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      };
      add("dense", s.seq, true);  // runs first: the speed-up baseline
      add("causal", cpu::detail::attention_block, false);
      if (s.seq == 256 && s.heads == s.kv_heads && s.batch == 4)
        for (index_t block : {16, 32, 128}) add("causal_block:" + std::to_string(block), block, false);
    }
}

const int registered = (register_all(), 0);

}  // namespace

BENCHMARK_MAIN();
