// The one model on both spaces (in the style of ggml's test-backend-ops): Gpt<Up, Down, Device>
// and Gpt<Up, Down, Host> with the same parameters run the same micro-batch, and the loss and
// every parameter's gradient must agree, per tensor, for GPT-2 and Llama-style layers and every
// FFN structure, in fp32 and bf16. Then a few AdamW steps on both sides must land on the same
// parameters and moments, the arena must round-trip, and what the device cannot run yet must be
// refused. Skipped without a device.
#include <doctest/doctest.h>

#include <bonsai/cuda.hpp>
#include <bonsai/train/grad_clip.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "support/errors.hpp"

namespace bonsai {
namespace {

#define SKIP_WITHOUT_DEVICE()           \
  if (!cuda::available()) {             \
    MESSAGE("no CUDA device: skipped"); \
    return;                             \
  }

/// A small model: head width 32 (a width the attention kernels take), two layers, so layer 0
/// stays dense under a structured FFN.
GptConfig small_config(FfnKind ffn, bool llama) {
  GptConfig c;
  c.vocab_size = 97;
  c.max_seq_len = 24;
  c.n_layer = 2;
  c.d_model = 64;
  c.n_head = 2;
  c.ffn = ffn;
  if (ffn == FfnKind::lowrank) c.rank = 16;
  if (ffn == FfnKind::blockdense) c.rank = 32, c.blocks = 2;
  if (ffn == FfnKind::blockshuffle) c.blocks = 4;
  if (llama) {
    c.norm = NormKind::rmsnorm;
    c.pos = PosKind::rope;
    c.act = ActKind::swiglu;
    c.n_kv_head = 1;
    c.ffn_dim = 160;
  }
  return c;
}

/// Token ids and targets of `batch` sequences of `seq` tokens; a few targets are -1 (ignored).
struct Batch {
  std::vector<std::int32_t> inputs, targets;
  index_t batch, seq;
  TokenBatch view() const { return {inputs.data(), targets.data(), batch, seq}; }
};
Batch random_batch(index_t vocab, index_t batch, index_t seq, std::uint64_t seed) {
  Rng rng(seed);
  Batch b{std::vector<std::int32_t>(std::size_t(batch * seq)), std::vector<std::int32_t>(std::size_t(batch * seq)),
          batch, seq};
  for (std::size_t i = 0; i < b.inputs.size(); ++i) {
    b.inputs[i] = std::int32_t(rng.next_u64() % std::uint64_t(vocab));
    b.targets[i] = i % 7 == 3 ? -1 : std::int32_t(rng.next_u64() % std::uint64_t(vocab));
  }
  return b;
}

/// The device model of host maps Map in precision T.
template <class Map, class T>
using DeviceGpt = Gpt<rebind_scalar_t<Map, T>, rebind_scalar_t<Map, T>, Device>;
template <class Map>
using HostGpt = Gpt<Map, Map>;

/// ||a - b|| / ||b|| over n elements.
double rel_error(const float* a, const float* b, index_t n) {
  double num = 0, den = 0;
  for (index_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// Loss and every parameter gradient of the device model against its host model. Tolerances
/// are per tensor, for a whole model's chain of kernels: fp32 1e-4 (each kernel alone is within
/// 1e-5 of the reference), bf16 3e-2 (each within 1e-2); the loss 1e-5 and 1e-2.
template <class Map, class T>
void check_gradients(const GptConfig& config, const std::string& label) {
  CAPTURE(label);
  INFO("precision ", std::is_same_v<T, float> ? "fp32" : "bf16");
  cuda::set_math(cuda::Math::fp32);
  Rng rng(0x6E7);
  HostGpt<Map> cpu(config);
  cpu.init(rng);
  if constexpr (!std::is_same_v<T, float>) {
    // The CPU model computes from the bf16-rounded weights the GPU reads.
    float* w = cpu.arena().values();
    for (index_t i = 0; i < cpu.arena().size(); ++i) w[i] = float(cuda::convert<bf16>(w[i]));
  }
  DeviceGpt<Map, T> gpu(config);
  REQUIRE(gpu.arena().size() == cpu.arena().size());
  gpu.arena().assign(cpu.arena().values_view());
  const Batch b = random_batch(config.vocab_size, 2, 20, 0xBA7C4);
  const float scale = 0.5f;

  typename HostGpt<Map>::Context hctx;
  cpu.arena().zero_grads();
  const double ref_loss = cpu.forward(hctx, b.view(), scale);
  cpu.backward(hctx);
  const std::vector<float> ref(cpu.arena().grads(), cpu.arena().grads() + cpu.arena().size());

  // A first pass on another batch leaves every workspace holding stale values, and the
  // gradients are poisoned with NaN before being zeroed by the call under test's own contract.
  typename DeviceGpt<Map, T>::Context dctx;
  const Batch other = random_batch(config.vocab_size, 2, 20, 0x5EED);
  gpu.forward(dctx, other.view(), scale);
  gpu.backward(dctx);
  cuda::fill_bytes(gpu.arena().grads_view(), 0xFF);
  gpu.arena().zero_grads();
  const double loss = gpu.forward(dctx, b.view(), scale);
  gpu.backward(dctx);
  cuda::synchronize();
  const auto grads = cuda::to_host<float>(VectorView<const T, Device>(gpu.arena().grads_view()));

  const bool fp32 = std::is_same_v<T, float>;
  CHECK(std::isfinite(loss));
  CHECK(std::abs(loss - ref_loss) <= (fp32 ? 1e-5 : 1e-2) * std::abs(ref_loss));
  const double tol = fp32 ? 1e-4 : 3e-2;
  for (const ParamSlot& s : cpu.arena().slots()) {
    CAPTURE(s.name);
    const double err = rel_error(grads.data() + s.offset, ref.data() + s.offset, s.size());
    CHECK(err <= tol);
  }
}

template <class Map>
void check_both_precisions(const GptConfig& config, const std::string& label) {
  check_gradients<Map, float>(config, label);
  check_gradients<Map, bf16>(config, label);
}

}  // namespace

TEST_CASE("cuda: Gpt matches the CPU model, GPT-2 style, every FFN structure") {
  SKIP_WITHOUT_DEVICE();
  check_both_precisions<Dense<float>>(small_config(FfnKind::dense, false), "dense");
  check_both_precisions<LowRank<float>>(small_config(FfnKind::lowrank, false), "lowrank");
  check_both_precisions<BlockDense<float>>(small_config(FfnKind::blockdense, false), "blockdense");
  check_both_precisions<BlockShuffle<float>>(small_config(FfnKind::blockshuffle, false), "blockshuffle");
  GptConfig all = small_config(FfnKind::lowrank, false);
  all.dense_first_ffn = false;
  check_both_precisions<LowRank<float>>(all, "lowrank in every layer");
}

TEST_CASE("cuda: Gpt matches the CPU model, Llama style (RMSNorm, RoPE, SwiGLU, GQA)") {
  SKIP_WITHOUT_DEVICE();
  check_both_precisions<Dense<float>>(small_config(FfnKind::dense, true), "llama dense");
  check_both_precisions<LowRank<float>>(small_config(FfnKind::lowrank, true), "llama lowrank");
  check_both_precisions<BlockDense<float>>(small_config(FfnKind::blockdense, true), "llama blockdense");
  check_both_precisions<BlockShuffle<float>>(small_config(FfnKind::blockshuffle, true), "llama blockshuffle");
}

TEST_CASE("cuda: Gpt trains as the CPU model does (AdamW on fp32 master weights)") {
  SKIP_WITHOUT_DEVICE();
  const GptConfig config = small_config(FfnKind::dense, false);
  Rng rng(0xADA);
  HostGpt<Dense<float>> cpu(config);
  cpu.init(rng);
  DeviceGpt<Dense<float>, float> gpu(config);
  gpu.arena().assign(cpu.arena().values_view());
  const AdamWConfig ac{.beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.1};
  AdamW<float> hopt(cpu.arena(), ac);
  AdamW<float, Device> dopt(gpu.arena(), ac);
  HostGpt<Dense<float>>::Context hctx;
  DeviceGpt<Dense<float>, float>::Context dctx;
  cuda::GradNormState norm_state;
  for (int step = 0; step < 3; ++step) {
    CAPTURE(step);
    const Batch b = random_batch(config.vocab_size, 2, 16, 100 + std::uint64_t(step));
    cpu.arena().zero_grads();
    const double hl = cpu.forward(hctx, b.view(), 1.0f);
    cpu.backward(hctx);
    gpu.arena().zero_grads();
    const double dl = gpu.forward(dctx, b.view(), 1.0f);
    gpu.backward(dctx);
    CHECK(std::abs(dl - hl) <= 1e-4 * std::abs(hl));
    const double hn = global_norm(cpu.arena().grads_view());
    const double dn = cuda::grad_norm(gpu.arena().grads_view(), norm_state);
    CHECK(std::abs(dn - hn) <= 1e-4 * hn);
    hopt.step(cpu.arena(), 1e-3, clip_scale(hn, 1.0));
    dopt.step(gpu.arena(), 1e-3, clip_scale(dn, 1.0));
  }
  const std::vector<float> hvalues(cpu.arena().values(), cpu.arena().values() + cpu.arena().size());
  AdamW<float> back(cpu.arena(), ac);
  dopt.download(back);
  gpu.arena().copy_to(cpu.arena().values_view());  // overwrites the host values with the GPU's
  CHECK(back.step_count() == 3);
  CHECK(rel_error(cpu.arena().values(), hvalues.data(), cpu.arena().size()) <= 1e-5);
  CHECK(rel_error(back.m().data(), hopt.m().data(), hopt.size()) <= 1e-4);
  CHECK(rel_error(back.v().data(), hopt.v().data(), hopt.size()) <= 1e-4);
}

TEST_CASE("cuda: Gpt's arena round-trips exactly; init draws what the host draws; bad input is refused") {
  SKIP_WITHOUT_DEVICE();
  const GptConfig config = small_config(FfnKind::blockshuffle, true);
  Rng rng(7), same(7);
  DeviceGpt<BlockShuffle<float>, bf16> gpu(config);
  gpu.init(rng);
  HostGpt<BlockShuffle<float>> cpu(config);
  cpu.init(same);
  std::vector<float> back(std::size_t(gpu.arena().size()));
  gpu.arena().copy_to(VectorView<float, Host>(back.data(), {gpu.arena().size()}));
  // The fp32 master copy, not the bf16 working copy: exact.
  CHECK(std::equal(back.begin(), back.end(), cpu.arena().values()));

  typename DeviceGpt<BlockShuffle<float>, bf16>::Context ctx;
  Batch b = random_batch(config.vocab_size, 1, 8, 3);
  b.inputs[5] = std::int32_t(config.vocab_size);
  CHECK(test::error_of([&] { gpu.forward(ctx, b.view()); }).find("outside the vocabulary") != std::string::npos);
  const Batch long_batch = random_batch(config.vocab_size, 1, config.max_seq_len + 1, 4);
  CHECK(test::error_of([&] { gpu.forward(ctx, long_batch.view()); }).find("max_seq_len") != std::string::npos);
  CHECK(test::error_of([&] { gpu.backward(ctx); }).find("not asked for gradients") != std::string::npos);
  GptConfig moe = small_config(FfnKind::dense, false);
  moe.moe_experts = 4;
  CHECK(test::error_of([&] { DeviceGpt<Dense<float>, bf16> m(moe); }).find("Mixture-of-Experts") != std::string::npos);
  GrowthMask mask;
  mask.layers = {false, true};
  mask.value = 0.5;
  CHECK(test::error_of([&] { gpu.set_growth_mask(mask); }).find("growth masks") != std::string::npos);
  const std::vector<LayerKept> kept(2, LayerKept{{0}, {}});
  const Batch ok = random_batch(config.vocab_size, 1, 8, 5);
  CHECK(test::error_of([&] { gpu.forward(ctx, ok.view(), 0.0f, kept); }).find("kept heads") != std::string::npos);
  CHECK(test::error_of([&] { gpu.make_decode_state(1); }).find("decoding runs on the host") != std::string::npos);
}

}  // namespace bonsai
