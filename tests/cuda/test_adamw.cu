// The CUDA optimizer step against the CPU: grad_norm against a double sum (sizes 1 to 10^7, any
// alignment, float and bf16, bit-identical on repeat), and adamw_step against AdamW<float> over
// several steps (weight decay on and off, clipping on and off, params aliasing the master or a
// separate float copy, bf16 gradients with a bf16 working copy that must equal the rounded
// master), on arenas with odd slot sizes and single ranges at every alignment. Skipped without a
// device.
#include <doctest/doctest.h>

#include <bonsai/cuda.hpp>
#include <bonsai/train/adamw.hpp>
#include <bonsai/train/grad_clip.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

// Inside namespace bonsai, `cuda` names bonsai::cuda first, not the global ::cuda of CCCL.
namespace bonsai {
namespace {

#define SKIP_WITHOUT_DEVICE()           \
  if (!cuda::available()) {             \
    MESSAGE("no CUDA device: skipped"); \
    return;                             \
  }

/// ||a - b|| / ||b|| over n elements (NaN anywhere makes it NaN, which fails every bound).
double rel_err(const float* a, const float* b, index_t n) {
  double num = 0, den = 0;
  for (index_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// Number of i with a[i] != T(b[i]) (the working copy against the rounded master).
template <class T>
index_t rounding_mismatches(const float* a, const float* b, index_t n) {
  index_t bad = 0;
  for (index_t i = 0; i < n; ++i)
    if (!(a[i] == float(cuda::convert<T>(b[i])))) ++bad;
  return bad;
}

/// Random N(0, stddev^2) values rounded through T.
template <class T>
void fill_rounded(float* x, index_t n, Rng& rng, double stddev) {
  for (index_t i = 0; i < n; ++i) x[i] = float(cuda::convert<T>(float(rng.normal(0.0, stddev))));
}

/// A small model's arena: odd sizes, decaying matrices between non-decaying vectors, and one
/// large matrix (so every launch runs several grid-stride passes) when `big`.
ParamArena<float> make_arena(bool big) {
  ParamArena<float> a;
  a.add("wte", {97, 45});
  a.add("ln.g", {45});
  a.add("ln.b", {45});
  a.add("w1", {45, 131});
  a.add("b1", {131});
  a.add("w2", {131, 45});
  a.add("w3", {7, 3});
  if (big) a.add("big", {1000, 3001});
  a.add("s", {1});
  a.allocate();
  return a;
}

enum class Copy { alias, separate };

struct RunConfig {
  double weight_decay;
  double max_norm;  // 0: no clipping
  Copy copy;
  bool big;
};

/// Five AdamW steps of the CPU AdamW<float> and of cuda::adamw_step (whole-arena overload,
/// gradients and working copy in T) from the same start and gradients; checks norms, master
/// weights, moments and the working copy.
template <class T>
void check_adamw_run(const RunConfig& rc) {
  INFO("T ", std::is_same_v<T, float> ? "float" : "bf16", ", weight decay ", rc.weight_decay,
       ", max norm ", rc.max_norm, ", copy ", rc.copy == Copy::alias ? "alias" : "separate",
       ", big ", rc.big);
  ParamArena<float> arena = make_arena(rc.big);
  const index_t n = arena.size();
  Rng rng(0xADA + index_t(rc.big) + 2 * index_t(rc.copy == Copy::alias));
  fill_rounded<T>(arena.values(), n, rng, 0.5);
  const AdamWConfig config{
      .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = rc.weight_decay};
  AdamW<float> opt(arena, config);

  const auto ranges = adamw_ranges(arena.slots());
  auto master = cuda::to_device<float>(arena.values_view());
  Vector<float, Device> m(n), v(n);
  cuda::fill_bytes(m.view(), 0);
  cuda::fill_bytes(v.view(), 0);
  Vector<T, Device> params(n), grads(n);
  cuda::GradNormState norm_state;
  VectorView<T, Device> working;
  if constexpr (std::is_same_v<T, float>)
    working = rc.copy == Copy::alias ? master.view() : params.view();
  else
    working = params.view();
  if (working.data() != static_cast<const void*>(master.data())) cuda::fill_bytes(working, 0xFF);

  for (std::int64_t t = 1; t <= 5; ++t) {
    CAPTURE(t);
    // Gradients of growing size, so the clip factor changes from step to step.
    fill_rounded<T>(arena.grads(), n, rng, 0.2 * double(t));
    cuda::copy(grads.view(), arena.grads_view());
    const double norm = global_norm(arena.grads_view());
    const double dnorm = cuda::grad_norm(grads.view(), norm_state);
    CHECK(std::abs(dnorm - norm) <= 1e-11 * norm);
    const double lr = 1e-3 * double(t) / 5.0;
    opt.step(arena, lr, clip_scale(norm, rc.max_norm));
    cuda::adamw_step(ranges, master.view(), working, grads.view(), m.view(), v.view(), config, t,
                     lr, clip_scale(dnorm, rc.max_norm));
  }
  if (rc.max_norm > 0) CHECK(clip_scale(global_norm(arena.grads_view()), rc.max_norm) < 1.0);
  cuda::synchronize();

  const auto hmaster = cuda::to_host<float>(master.view());
  const auto hm = cuda::to_host<float>(m.view());
  const auto hv = cuda::to_host<float>(v.view());
  const auto hw = cuda::to_host<float>(working);
  CHECK(rel_err(hmaster.data(), arena.values(), n) <= 1e-5);
  CHECK(rel_err(hm.data(), opt.m().data(), n) <= 1e-5);
  CHECK(rel_err(hv.data(), opt.v().data(), n) <= 1e-5);
  CHECK(rounding_mismatches<T>(hw.data(), hmaster.data(), n) == 0);
  // The parameters moved: a no-op step would fail here rather than pass on the initial values.
  Rng again(0xADA + index_t(rc.big) + 2 * index_t(rc.copy == Copy::alias));
  std::vector<float> initial(std::size_t(n), 0.0f);
  fill_rounded<T>(initial.data(), n, again, 0.5);
  CHECK(rel_err(hmaster.data(), initial.data(), n) > 1e-4);
}

/// A device buffer of n + 8 floats or Ts, poisoned, holding `src` at offset `off`.
template <class T>
struct Padded {
  Vector<T, Device> buf;
  index_t off, n;
  Padded(index_t n_, index_t off_) : buf(n_ + 8), off(off_), n(n_) {
    cuda::fill_bytes(buf.view(), 0xFF);
  }
  VectorView<T, Device> view() { return VectorView<T, Device>(buf.data() + off, {n}); }
  /// True when every element outside [off, off + n) still has the poison bytes.
  bool outside_untouched() const {
    std::vector<unsigned char> bytes(sizeof(T) * std::size_t(buf.size()));
    BONSAI_CUDA_CHECK(cudaMemcpy(bytes.data(), buf.data(), bytes.size(), cudaMemcpyDeviceToHost));
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      const index_t e = index_t(i / sizeof(T));
      if ((e < off || e >= off + n) && bytes[i] != 0xFF) return false;
    }
    return true;
  }
};

/// Three steps of the single-range overload on buffers at element offsets (master, m and v,
/// grads, params), against AdamW<float> on a one-slot arena ({1, n} decays, {n} does not).
template <class T>
void check_range(index_t n, bool decays, index_t off_master, index_t off_mv, index_t off_grads,
                 index_t off_params, bool alias) {
  INFO("T ", std::is_same_v<T, float> ? "float" : "bf16", ", n ", n, ", decays ", decays,
       ", offsets ", off_master, " ", off_mv, " ", off_grads, " ", off_params, ", alias ", alias);
  ParamArena<float> arena;
  if (decays)
    arena.add("w", {1, n});
  else
    arena.add("b", {n});
  arena.allocate();
  Rng rng(0x5EED + n + off_master + 4 * off_mv + 16 * off_grads + 64 * off_params);
  fill_rounded<T>(arena.values(), n, rng, 0.5);
  const AdamWConfig config{.beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.3};
  AdamW<float> opt(arena, config);

  Padded<float> master(n, off_master), m(n, off_mv), v(n, off_mv);
  Padded<T> grads(n, off_grads), params(n, off_params);
  cuda::copy(master.view(), arena.values_view());
  cuda::fill_bytes(m.view(), 0);
  cuda::fill_bytes(v.view(), 0);
  VectorView<T, Device> working = params.view();
  if constexpr (std::is_same_v<T, float>)
    if (alias) working = master.view();
  for (std::int64_t t = 1; t <= 3; ++t) {
    fill_rounded<T>(arena.grads(), n, rng, 1.0);
    cuda::copy(grads.view(), arena.grads_view());
    const double lr = 0.01 / double(t), scale = 0.5 + 0.25 * double(t);
    opt.step(arena, lr, scale);
    cuda::adamw_step(master.view(), working, grads.view(), m.view(), v.view(), config, t, lr,
                     decays ? config.weight_decay : 0.0, scale);
  }
  cuda::synchronize();
  const auto hmaster = cuda::to_host<float>(master.view());
  const auto hm = cuda::to_host<float>(m.view());
  const auto hv = cuda::to_host<float>(v.view());
  const auto hw = cuda::to_host<float>(working);
  CHECK(rel_err(hmaster.data(), arena.values(), n) <= 1e-5);
  CHECK(rel_err(hm.data(), opt.m().data(), n) <= 1e-5);
  CHECK(rel_err(hv.data(), opt.v().data(), n) <= 1e-5);
  CHECK(rounding_mismatches<T>(hw.data(), hmaster.data(), n) == 0);
  CHECK(master.outside_untouched());
  CHECK(m.outside_untouched());
  CHECK(v.outside_untouched());
  CHECK(grads.outside_untouched());
  if (!alias) CHECK(params.outside_untouched());
}

/// grad_norm of x[off, off + n) (x on the device too) against a double sum, and twice the same
/// bits.
template <class T>
void check_norm(const std::vector<float>& host, const Vector<T, Device>& dev, index_t off,
                index_t n, cuda::GradNormState& state) {
  INFO("T ", std::is_same_v<T, float> ? "float" : "bf16", ", n ", n, ", offset ", off);
  double ref = 0;
  for (index_t i = off; i < off + n; ++i)
    ref += double(host[std::size_t(i)]) * double(host[std::size_t(i)]);
  ref = std::sqrt(ref);
  const double a = cuda::grad_norm(dev.data() + off, n, state);
  const double b = cuda::grad_norm(VectorView<const T, Device>(dev.data() + off, {n}), state);
  CHECK(std::abs(a - ref) <= 1e-11 * ref);
  CHECK(std::memcmp(&a, &b, sizeof(double)) == 0);
}

template <class T>
void check_norms() {
  const index_t max_n = 10'000'000;
  Rng rng(0x4044);
  std::vector<float> host(std::size_t(max_n + 8));
  fill_rounded<T>(host.data(), index_t(host.size()), rng, 1.0);
  auto dev = cuda::to_device<T>(VectorView<const float>(host.data(), {index_t(host.size())}));
  cuda::GradNormState state;
  for (index_t n : {index_t(1), index_t(2), index_t(7), index_t(9), index_t(1000), index_t(4099),
                    index_t(65537), index_t(1 << 20) + 3, max_n})
    for (index_t off : {index_t(0), index_t(1), index_t(3), index_t(5)})
      check_norm<T>(host, dev, off, n, state);
  CHECK(cuda::grad_norm(dev.data(), 0, state) == 0.0);

  // A non-finite gradient anywhere, head, body or tail, gives a non-finite norm.
  const index_t n = 1000;
  for (index_t pos : {index_t(0), index_t(1), index_t(500), index_t(999)}) {
    CAPTURE(pos);
    const T bad = cuda::convert<T>(pos % 2 ? std::numeric_limits<float>::infinity()
                                           : std::numeric_limits<float>::quiet_NaN());
    BONSAI_CUDA_CHECK(cudaMemcpy(dev.data() + 1 + pos, &bad, sizeof(T), cudaMemcpyHostToDevice));
    CHECK_FALSE(std::isfinite(cuda::grad_norm(dev.data() + 1, n, state)));
    const T good = cuda::convert<T>(host[std::size_t(1 + pos)]);
    BONSAI_CUDA_CHECK(cudaMemcpy(dev.data() + 1 + pos, &good, sizeof(T), cudaMemcpyHostToDevice));
  }
  CHECK(std::isfinite(cuda::grad_norm(dev.data() + 1, n, state)));
}

}  // namespace

TEST_CASE("cuda: grad_norm matches a double sum of squares") {
  SKIP_WITHOUT_DEVICE();
  check_norms<float>();
  check_norms<bf16>();
}

TEST_CASE("cuda: adamw_ranges merges adjacent slots by decay flag") {
  ParamArena<float> a;
  a.add("w", {4, 5});
  a.add("b", {5});
  a.add("g", {5});
  a.add("w2", {5, 3});
  a.add("w3", {3, 3});
  a.add("s", {1});
  const auto r = adamw_ranges(a.slots());
  REQUIRE(r.size() == 4);
  CHECK((r[0].begin == 0 && r[0].end == 20 && r[0].decays));
  CHECK((r[1].begin == 20 && r[1].end == 30 && !r[1].decays));
  CHECK((r[2].begin == 30 && r[2].end == 54 && r[2].decays));
  CHECK((r[3].begin == 54 && r[3].end == 55 && !r[3].decays));
}

TEST_CASE("cuda: adamw_step matches the CPU AdamW in float") {
  SKIP_WITHOUT_DEVICE();
  for (Copy copy : {Copy::alias, Copy::separate}) {
    check_adamw_run<float>({0.1, 1.0, copy, false});
    check_adamw_run<float>({0.1, 0.0, copy, false});
    check_adamw_run<float>({0.0, 1.0, copy, false});
    check_adamw_run<float>({0.0, 0.0, copy, false});
  }
  check_adamw_run<float>({0.1, 1.0, Copy::alias, true});
  check_adamw_run<float>({0.1, 1.0, Copy::separate, true});
}

TEST_CASE("cuda: adamw_step keeps fp32 master weights for a bf16 model") {
  SKIP_WITHOUT_DEVICE();
  check_adamw_run<bf16>({0.1, 1.0, Copy::separate, false});
  check_adamw_run<bf16>({0.1, 0.0, Copy::separate, false});
  check_adamw_run<bf16>({0.0, 1.0, Copy::separate, false});
  check_adamw_run<bf16>({0.1, 1.0, Copy::separate, true});
}

TEST_CASE("cuda: adamw_step on one range at any alignment") {
  SKIP_WITHOUT_DEVICE();
  const std::vector<std::array<index_t, 4>> offsets = {{0, 0, 0, 0}, {1, 1, 1, 1}, {2, 2, 2, 2},
                                                       {3, 3, 3, 3}, {0, 1, 0, 0}, {1, 0, 3, 2},
                                                       {0, 0, 1, 0}, {0, 0, 0, 2}};
  for (index_t n :
       {index_t(1), index_t(3), index_t(5), index_t(8), index_t(77), index_t(1000), index_t(4099)})
    for (const auto& o : offsets)
      for (bool decays : {false, true}) {
        check_range<float>(n, decays, o[0], o[1], o[2], o[3], false);
        check_range<float>(n, decays, o[0], o[1], o[2], o[3], true);
        check_range<bf16>(n, decays, o[0], o[1], o[2], o[3], false);
      }
}

TEST_CASE("cuda: adamw_step rejects bad shapes and overlapping buffers") {
  SKIP_WITHOUT_DEVICE();
  const index_t n = 100;
  const AdamWConfig config;
  Vector<float, Device> master(n + 1), m(n), v(n), gf(n);
  Vector<bf16, Device> gb(n), pb(n + 1);
  const VectorView<float, Device> mv(master.data(), {n});
  const VectorView<float, Device> short_view(master.data(), {n - 1});
  // Sizes: grads, m, v, params each one short.
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, VectorView<const float, Device>(gf.data(), {n - 1}),
                                   m.view(), v.view(), config, 1, 1e-3, 0.1),
                  Error);
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, gf.view(), VectorView<float, Device>(m.data(), {n - 1}),
                                   v.view(), config, 1, 1e-3, 0.1),
                  Error);
  CHECK_THROWS_AS(
      cuda::adamw_step(mv, mv, gf.view(), m.view(), VectorView<float, Device>(v.data(), {n - 1}),
                       config, 1, 1e-3, 0.1),
      Error);
  CHECK_THROWS_AS(cuda::adamw_step(mv, VectorView<bf16, Device>(pb.data(), {n - 1}), gb.view(),
                                   m.view(), v.view(), config, 1, 1e-3, 0.1),
                  Error);
  CHECK_THROWS_AS(
      cuda::adamw_step(short_view, mv, gf.view(), m.view(), v.view(), config, 1, 1e-3, 0.1), Error);
  // Overlaps: a float working copy shifted by one from the master; m == v; grads == m.
  CHECK_THROWS_AS(cuda::adamw_step(mv, VectorView<float, Device>(master.data() + 1, {n}), gf.view(),
                                   m.view(), v.view(), config, 1, 1e-3, 0.1),
                  Error);
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, gf.view(), m.view(), m.view(), config, 1, 1e-3, 0.1),
                  Error);
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, m.view(), m.view(), v.view(), config, 1, 1e-3, 0.1),
                  Error);
  // A bf16 working copy inside the master's bytes.
  CHECK_THROWS_AS(
      cuda::adamw_step(mv, VectorView<bf16, Device>(reinterpret_cast<bf16*>(master.data()), {n}),
                       gb.view(), m.view(), v.view(), config, 1, 1e-3, 0.1),
      Error);
  // Hyper-parameters: step 0, negative or infinite lr, negative decay, infinite scale, beta1 = 1.
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, gf.view(), m.view(), v.view(), config, 0, 1e-3, 0.1),
                  Error);
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, gf.view(), m.view(), v.view(), config, 1, -1e-3, 0.1),
                  Error);
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, gf.view(), m.view(), v.view(), config, 1,
                                   std::numeric_limits<double>::infinity(), 0.1),
                  Error);
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, gf.view(), m.view(), v.view(), config, 1, 1e-3, -0.1),
                  Error);
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, gf.view(), m.view(), v.view(), config, 1, 1e-3, 0.1,
                                   std::numeric_limits<double>::infinity()),
                  Error);
  CHECK_THROWS_AS(cuda::adamw_step(mv, mv, gf.view(), m.view(), v.view(), AdamWConfig{.beta1 = 1.0},
                                   1, 1e-3, 0.1),
                  Error);
  // Whole-arena overload: a range past the end, and views of different sizes.
  const std::vector<AdamWRange> past{{0, 50, true}, {50, n + 1, false}};
  CHECK_THROWS_AS(cuda::adamw_step(past, mv, mv, gf.view(), m.view(), v.view(), config, 1, 1e-3),
                  Error);
  const std::vector<AdamWRange> ok{{0, 50, true}, {50, n, false}};
  CHECK_THROWS_AS(cuda::adamw_step(ok, mv, mv, VectorView<const float, Device>(gf.data(), {n - 1}),
                                   m.view(), v.view(), config, 1, 1e-3),
                  Error);
  CHECK_NOTHROW(cuda::adamw_step(ok, mv, mv, gf.view(), m.view(), v.view(), config, 1, 1e-3));
  CHECK_NOTHROW(cuda::synchronize());
  // The error message names both shapes.
  try {
    cuda::adamw_step(mv, mv, VectorView<const float, Device>(gf.data(), {n - 1}), m.view(),
                     v.view(), config, 1, 1e-3, 0.1);
    FAIL("no error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("(100)") != std::string::npos);
    CHECK(msg.find("(99)") != std::string::npos);
  }
}

}  // namespace bonsai
