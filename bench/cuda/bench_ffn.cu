// The FFN pair of a GPT block on the GPU — up (d -> 4d) + bias + tanh-GELU, down (4d -> d) +
// bias — in bf16 with fp32 accumulation at 30,720 tokens, d in {2048, 4096, 5120}, for every
// structure at the paper's two budgets (63% and 32% of dense), forward and forward+backward.
// Timed with CUDA events (UseManualTime). Counters: TFLOP/s (2 x weights x tokens per forward,
// x3 with backward), tokens/s, the parameter share, the speed-up over the dense pair of the
// same width and mode, and for the dense forward its share of the plain cuBLASLt GEMM rate of
// the same up-projection shape (gemm/... rows, measured first in the same run). --autotune
// lets every GEMM shape pick the fastest of cuBLASLt's candidate algorithms by timing.
#include <benchmark/benchmark.h>

#include <bonsai/cuda.hpp>
#include <map>
#include <string>

#include "support/ffn_structures.hpp"

// Inside namespace bonsai, `cuda::` names bonsai::cuda (CUDA's own headers declare a global
// namespace cuda too).
namespace bonsai {
namespace {

using T = bf16;
constexpr index_t tokens = 30720;

/// Uniform values in [-scale, scale) from a hash of the index: random data, made on the device.
__global__ void fill_random_kernel(T* p, index_t n, std::uint64_t seed, float scale) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    std::uint64_t z = seed + std::uint64_t(i) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = T(scale * (float(z >> 40) * (2.0f / 16777216.0f) - 1.0f));
  }
}
template <int R>
void fill_random(const TensorView<T, R, Device>& v, std::uint64_t seed, float scale) {
  fill_random_kernel<<<1024, 256>>>(v.data(), v.size(), seed, scale);
  BONSAI_CUDA_CHECK_LAUNCH("fill_random_kernel");
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

/// Parameters, biases, activations, gradients and contexts of one FFN pair on the device.
template <class Up, class Down>
struct FfnPair {
  Vector<T, Device> w, g, b_up, b_down, db_up, db_down;
  Up up, dup;
  Down down, ddown;
  Matrix<T, Device> x, h, y, dy, dh, dx;  // x (T, d), h (T, 4d), y (T, d) and their gradients
  Context<Up, Device, T> ctx_up;
  Context<Down, Device, T> ctx_down;

  FfnPair(const Up& u, const Down& d)
      : w(u.param_count() + d.param_count()), g(w.size()), b_up(u.out_features()), b_down(d.out_features()),
        db_up(u.out_features()), db_down(d.out_features()), up(u), dup(u), down(d), ddown(d),
        x(tokens, u.in_features()), h(tokens, u.out_features()), y(tokens, d.out_features()),
        dy(tokens, d.out_features()), dh(tokens, u.out_features()), dx(tokens, u.in_features()) {
    up.bind(w.data());
    down.bind(w.data() + u.param_count());
    dup.bind(g.data());
    ddown.bind(g.data() + u.param_count());
    fill_random(w.view(), 1, 0.02f * 1.7320508f);  // std 0.02
    fill_random(b_up.view(), 2, 0.02f);
    fill_random(b_down.view(), 3, 0.02f);
    fill_random(x.view(), 4, 1.7320508f);  // std 1
    fill_random(dy.view(), 5, 1.7320508f);
  }
  index_t params() const { return up.param_count() + down.param_count(); }
  void forward_pass() {
    forward(up, MatrixView<const T, Device>(x.view()), h.view(), ctx_up,
            epilogue::BiasGelu<T, Device>{b_up.view(), db_up.view()});
    forward(down, MatrixView<const T, Device>(h.view()), y.view(), ctx_down,
            epilogue::Bias<T, Device>{b_down.view(), db_down.view()});
  }
  void backward_pass() {
    backward(down, ctx_down, MatrixView<const T, Device>(dy.view()), dh.view(), ddown,
             epilogue::Bias<T, Device>{b_down.view(), db_down.view()});
    backward(up, ctx_up, MatrixView<const T, Device>(dh.view()), dx.view(), dup,
             epilogue::BiasGelu<T, Device>{b_up.view(), db_up.view()});
  }
};

/// Seconds per iteration of the dense pair per (mode, width), and the GEMM rate per width.
std::map<std::string, double>& dense_seconds() {
  static std::map<std::string, double> s;
  return s;
}
std::map<index_t, double>& gemm_tflops() {
  static std::map<index_t, double> s;
  return s;
}

template <class Up, class Down>
void run(benchmark::State& state, const Up& u, const Down& d, bool train, const std::string& structure) {
  FfnPair<Up, Down> ffn(u, d);
  const index_t width = u.in_features();
  EventTimer timer;
  auto step = [&] {
    ffn.forward_pass();
    if (train) ffn.backward_pass();
  };
  for (int i = 0; i < 3; ++i) timer.seconds(step);  // warm-up: plans, workspaces, clocks
  double total = 0;
  for (auto _ : state) {
    const double s = timer.seconds(step);
    state.SetIterationTime(s);
    total += s;
  }
  const double per_iter = total / double(state.iterations());
  const double flops = double(2 * tokens * ffn.params()) * (train ? 3.0 : 1.0);
  const std::string key = std::string(train ? "train" : "fwd") + "/" + std::to_string(width);
  if (structure == "dense") dense_seconds()[key] = per_iter;
  state.counters["TFLOPs"] = flops * 1e-12 / per_iter;
  state.counters["tokens_per_s"] = double(tokens) / per_iter;
  state.counters["params_pct"] = 100.0 * double(ffn.params()) / double(2 * width * 4 * width);
  if (auto it = dense_seconds().find(key); it != dense_seconds().end()) state.counters["speedup"] = it->second / per_iter;
  if (structure == "dense" && !train)
    if (auto it = gemm_tflops().find(width); it != gemm_tflops().end())
      state.counters["pct_of_gemm"] = 100.0 * (flops * 1e-12 / per_iter) / it->second;
}

/// The plain bf16 GEMM C (m, n) = A (m, k) B (k, n)^T... as the up projection: x (T, d) W^T.
void run_gemm(benchmark::State& state, index_t m, index_t k, index_t n, index_t width) {
  Matrix<T, Device> a(m, k), b(n, k), c(m, n);
  fill_random(a.view(), 11, 1.0f);
  fill_random(b.view(), 12, 1.0f);
  EventTimer timer;
  auto step = [&] {
    cuda::gemm<T>(1.0f, MatrixView<const T, Device>(a.view()), Op::N, MatrixView<const T, Device>(b.view()),
                  Op::T, 0.0f, c.view());
  };
  for (int i = 0; i < 3; ++i) timer.seconds(step);
  double total = 0;
  for (auto _ : state) {
    const double s = timer.seconds(step);
    state.SetIterationTime(s);
    total += s;
  }
  const double tflops = 2.0 * double(m) * double(n) * double(k) * 1e-12 / (total / double(state.iterations()));
  state.counters["TFLOPs"] = tflops;
  if (width > 0) gemm_tflops()[width] = tflops;
}

void register_all() {
  for (index_t d : {2048, 4096, 5120}) {
    const std::string name = "gemm/m:" + std::to_string(tokens) + "/k:" + std::to_string(d) + "/n:" + std::to_string(4 * d);
    benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { run_gemm(s, tokens, d, 4 * d, d); })
        ->Unit(benchmark::kMillisecond)->UseManualTime();
  }
  benchmark::RegisterBenchmark("gemm/m:8192/k:8192/n:8192", [](benchmark::State& s) { run_gemm(s, 8192, 8192, 8192, 0); })
      ->Unit(benchmark::kMillisecond)->UseManualTime();
  for (bool train : {false, true}) {
    for (index_t d : {2048, 4096, 5120}) {
      const std::string mode = train ? "ffn_fwd_bwd" : "ffn_fwd";
      auto add = [&](const std::string& structure, auto make) {
        const std::string name = mode + "/d:" + std::to_string(d) + "/" + structure;
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) {
          auto [up, down] = make();
          run(s, up, down, train, structure);
        })->Unit(benchmark::kMillisecond)->UseManualTime();
      };
      bench::for_each_ffn_structure<T>(d, add);
    }
  }
}

}  // namespace
}  // namespace bonsai

int main(int argc, char** argv) {
  using namespace bonsai;
  if (!bonsai::cuda::available()) {
    std::fprintf(stderr, "bench_cuda_ffn: no CUDA device\n");
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
  bonsai::cuda::set_autotune(autotune);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  cudaDeviceProp prop{};
  BONSAI_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  benchmark::AddCustomContext("device", prop.name);
  benchmark::AddCustomContext("precision", "bf16, fp32 accumulation");
  benchmark::AddCustomContext("gemm_autotune", autotune ? "on" : "off");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
