// One full training step of GPT-2 124M on the GPU with Gpt<Up, Down, Device> in bf16 (fp32 master weights):
// zero_grads, forward with the loss on random tokens, backward, the global gradient norm,
// clipping to 1.0 and an AdamW update (lr 6e-4, betas 0.9 / 0.95, weight decay 0.1), batch 16 x
// 1024 tokens. Rows: the dense model (GptConfig's defaults: vocabulary 50257, 12 layers, d 768,
// 12 heads, LayerNorm, learned positions, GELU), the structured FFNs at the paper's two budgets
// (63% and 32% of the FFN parameters, layer 0 dense), and the dense model with the vocabulary
// padded to 50304 as PyTorch's reference (scripts/torch_ffn.py) and llm.c use. Each row warms up
// with 2 steps, then times every step with CUDA events (UseManualTime). Counters: tokens_per_s,
// TFLOPs (model.training_flops: every GEMM, the causal attention products and the head, x3 for
// forward + backward), MFU_pct (TFLOPs over the peak), MFU_6N_pct (the same rate counted as
// 6 N + 12 L d T FLOPs per token, N the parameters without the position table: the convention of
// scripts/torch_ffn.py, for comparing with PyTorch's MFU), params_M and the last step's loss.
//
// Environment: BONSAI_PEAK_TFLOPS (peak dense bf16 TFLOP/s for MFU; 989, H100 SXM),
// BONSAI_GPT_BATCH (16), BONSAI_GPT_SEQ (1024), BONSAI_GPT_STEPS (timed steps per row, 10),
// BONSAI_GPT_PAPER_INIT=1 (initialise the structured models with the paper's SVD and orthogonal
// factors, as bonsai::Gpt::init does, instead of N(0, 0.02^2) draws: the same speed, but tens of
// seconds of host work per model; the dense models always go through Gpt::init).
// --autotune lets every GEMM shape pick the fastest of cuBLASLt's candidates (cuda::set_autotune).
#include <benchmark/benchmark.h>

#include <bonsai/cuda.hpp>
#include <bonsai/nn/ffn_structure.hpp>
#include <bonsai/train/grad_clip.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

// Inside namespace bonsai, `cuda::` names bonsai::cuda (CUDA's own headers declare a global
// namespace cuda too).
namespace bonsai {
namespace {

using T = bf16;

/// What every row runs with: the micro-batch, the timed steps and the peak for MFU.
struct Settings {
  index_t batch = 16, seq = 1024, steps = 10;
  double peak_tflops = 989.0;
  bool paper_init = false;  // structured models initialised as the paper does (slow, same speed)
};
Settings& settings() {
  static Settings s;
  return s;
}

/// A positive number from the environment variable `name`, or `fallback` when it is unset.
double env_number(const char* name, double fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const double x = std::strtod(v, &end);
  BONSAI_CHECK(*end == '\0' && x > 0 && std::isfinite(x), name, " = '", v, "' is not a positive number");
  return x;
}
/// The same for a positive integer.
index_t env_count(const char* name, index_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  BONSAI_CHECK(*end == '\0' && x > 0, name, " = '", v, "' is not a positive integer");
  return index_t(x);
}

/// Times `body` with CUDA events on the runtime's stream.
class EventTimer {
 public:
  EventTimer() {
    BONSAI_CUDA_CHECK(cudaEventCreate(&m_start));
    BONSAI_CUDA_CHECK(cudaEventCreate(&m_stop));
  }
  ~EventTimer() {
    cudaEventDestroy(m_start);
    cudaEventDestroy(m_stop);
  }
  template <class F>
  double seconds(F&& body) {
    const cudaStream_t s = cuda::runtime().stream();
    BONSAI_CUDA_CHECK(cudaEventRecord(m_start, s));
    body();
    BONSAI_CUDA_CHECK(cudaEventRecord(m_stop, s));
    BONSAI_CUDA_CHECK(cudaEventSynchronize(m_stop));
    float ms = 0;
    BONSAI_CUDA_CHECK(cudaEventElapsedTime(&ms, m_start, m_stop));
    return ms * 1e-3;
  }

 private:
  cudaEvent_t m_start{}, m_stop{};
};

/// Random token ids and next-token targets in [0, vocab), made on the host once.
struct Tokens {
  std::vector<std::int32_t> inputs, targets;
  index_t batch, seq;
  TokenBatch view() const { return {inputs.data(), targets.data(), batch, seq}; }
};
Tokens random_tokens(index_t vocab, index_t batch, index_t seq, std::uint64_t seed) {
  Rng rng(seed);
  Tokens t{std::vector<std::int32_t>(std::size_t(batch * seq)), std::vector<std::int32_t>(std::size_t(batch * seq)),
           batch, seq};
  for (auto& id : t.inputs) id = std::int32_t(rng.next_u64() % std::uint64_t(vocab));
  for (auto& id : t.targets) id = std::int32_t(rng.next_u64() % std::uint64_t(vocab));
  return t;
}

/// Training FLOPs of one step as scripts/torch_ffn.py counts them (nanoGPT's form): 6 N + 12 L d T
/// per token, N every parameter except the position table.
double flops_6n(const GptConfig& c, index_t params, index_t batch, index_t seq) {
  const index_t n = params - (c.pos == PosKind::learned ? c.max_seq_len * c.d_model : 0);
  return double(batch * seq) * (6.0 * double(n) + 12.0 * double(c.n_layer * c.attention_width() * seq));
}

/// Values for timing a structured model without the paper's host-side initialisers (SVD and
/// polar factors: tens of seconds per model on the CPU): every matrix N(0, 0.02^2), norm gains
/// 1, biases 0, the value ranges the paper's initialisation gives.
template <class Model>
void quick_init(Model& model, Rng& rng) {
  auto& arena = model.arena();
  std::vector<float> w(std::size_t(arena.size()));
  for (const ParamSlot& s : arena.slots()) {
    const float fill = s.name.ends_with("weight") ? 1.0f : 0.0f;  // norm gain or bias
    for (index_t i = s.offset; i < s.offset + s.size(); ++i)
      w[std::size_t(i)] = s.decays() ? float(rng.normal(0.0, 0.02)) : fill;
  }
  arena.assign(VectorView<const float, Host>(w.data(), {arena.size()}));
}

template <class Map>
void train_step(benchmark::State& state, const GptConfig& config) {
  const Settings& run = settings();
  const index_t B = run.batch, S = run.seq;
  Rng rng(1005);
  using DeviceMap = rebind_scalar_t<Map, T>;
  using Model = Gpt<DeviceMap, DeviceMap, Device>;
  Model model(config);
  if (std::is_same_v<Map, Dense<float>> || run.paper_init) model.init(rng);  // the host's init, copied over
  else quick_init(model, rng);
  const Tokens tokens = random_tokens(config.vocab_size, B, S, 0x70C5E45);
  typename Model::Context ctx;
  auto& arena = model.arena();
  AdamW<T, Device> opt(arena, AdamWConfig{.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
  cuda::GradNormState norm_state;
  constexpr double lr = 6e-4, max_norm = 1.0;
  double loss = 0;
  auto step = [&] {
    arena.zero_grads();
    loss = model.forward(ctx, tokens.view(), 1.0f);
    model.backward(ctx);
    const double norm = cuda::grad_norm(arena.grads_view(), norm_state);
    opt.step(arena, lr, clip_scale(norm, max_norm));
  };
  EventTimer timer;
  for (int i = 0; i < 2; ++i) timer.seconds(step);  // warm-up: workspaces, GEMM plans, clocks
  double total = 0;
  for (auto _ : state) {
    const double s = timer.seconds(step);
    state.SetIterationTime(s);
    total += s;
  }
  const double per_step = total / double(state.iterations());
  const double tflops = double(model.training_flops(B, S)) * 1e-12 / per_step;
  state.counters["tokens_per_s"] = double(B * S) / per_step;
  state.counters["TFLOPs"] = tflops;
  state.counters["MFU_pct"] = 100.0 * tflops / run.peak_tflops;
  state.counters["MFU_6N_pct"] = 100.0 * flops_6n(config, model.param_count(), B, S) * 1e-12 / per_step / run.peak_tflops;
  state.counters["params_M"] = double(model.param_count()) * 1e-6;
  state.counters["loss"] = loss;
  state.SetLabel("B=" + std::to_string(B) + " T=" + std::to_string(S) + " vocab=" + std::to_string(config.vocab_size));
}

/// Runs the step for the FFN structure the config names; an error (out of memory, a shape the
/// kernels do not take) skips the row instead of ending the program.
void run_row(benchmark::State& state, const GptConfig& config) {
  try {
    with_ffn_structure<float>(config, [&](auto m) { train_step<typename decltype(m)::type>(state, config); });
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void register_all() {
  struct Row {
    std::string name;
    FfnKind ffn;
    double fraction;  // of the dense FFN's parameters; 0 for dense
    index_t vocab;
  };
  const index_t gpt2_vocab = GptConfig{}.vocab_size;
  const std::vector<Row> rows = {
      {"gpt2_124m/dense", FfnKind::dense, 0, gpt2_vocab},
      {"gpt2_124m/lowrank_63", FfnKind::lowrank, 0.63, gpt2_vocab},
      {"gpt2_124m/lowrank_32", FfnKind::lowrank, 0.32, gpt2_vocab},
      {"gpt2_124m/blockdense_63", FfnKind::blockdense, 0.63, gpt2_vocab},
      {"gpt2_124m/blockdense_32", FfnKind::blockdense, 0.32, gpt2_vocab},
      {"gpt2_124m/blockshuffle_63", FfnKind::blockshuffle, 0.63, gpt2_vocab},
      {"gpt2_124m/blockshuffle_32", FfnKind::blockshuffle, 0.32, gpt2_vocab},
      {"gpt2_124m_vocab50304/dense", FfnKind::dense, 0, 50304},
  };
  for (const Row& row : rows) {
    GptConfig config;
    config.vocab_size = row.vocab;
    config.ffn = row.ffn;
    if (row.ffn != FfnKind::dense) set_ffn_params_fraction(config, row.fraction);
    benchmark::RegisterBenchmark(row.name.c_str(), [config](benchmark::State& s) { run_row(s, config); })
        ->Unit(benchmark::kMillisecond)
        ->Iterations(settings().steps)
        ->UseManualTime();
  }
}

}  // namespace
}  // namespace bonsai

int main(int argc, char** argv) {
  using namespace bonsai;
  if (!bonsai::cuda::available()) {
    std::fprintf(stderr, "bench_cuda_gpt_step: no CUDA device\n");
    return 0;
  }
  // --autotune: time cuBLASLt's candidate algorithms for every GEMM shape (cuda::set_autotune).
  bool autotune = false;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--autotune") autotune = true;
    else argv[kept++] = argv[i];
  }
  argc = kept;
  Settings& run = settings();
  try {
    run.peak_tflops = env_number("BONSAI_PEAK_TFLOPS", run.peak_tflops);
    run.batch = env_count("BONSAI_GPT_BATCH", run.batch);
    run.seq = env_count("BONSAI_GPT_SEQ", run.seq);
    run.steps = env_count("BONSAI_GPT_STEPS", run.steps);
    const char* paper = std::getenv("BONSAI_GPT_PAPER_INIT");
    run.paper_init = paper && *paper && std::string(paper) != "0";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_gpt_step: %s\n", e.what());
    return 2;
  }
  bonsai::cuda::set_autotune(autotune);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  cudaDeviceProp prop{};
  BONSAI_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  benchmark::AddCustomContext("device", prop.name);
  benchmark::AddCustomContext("precision", "bf16, fp32 accumulation, fp32 master weights");
  benchmark::AddCustomContext("gemm_autotune", autotune ? "on" : "off");
  benchmark::AddCustomContext("batch", std::to_string(run.batch));
  benchmark::AddCustomContext("seq", std::to_string(run.seq));
  char peak[32];
  std::snprintf(peak, sizeof peak, "%g", run.peak_tflops);
  benchmark::AddCustomContext("peak_tflops", peak);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
