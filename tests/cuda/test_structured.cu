// CUDA lowering of every structured map against the CPU reference (double precision on the
// host): forward output, dx, every parameter gradient (accumulated into non-zero gradients, so
// += is checked) and dbias, for each epilogue, in fp32, TF32 and bf16. Outputs are poisoned with
// NaN before each run, so an element the GPU does not write fails the check. Skipped without a
// device.
#include <doctest/doctest.h>

// The generic lambdas below take the scalar type as a template argument only; nvcc reports that
// T does not appear in their (absent) parameter types.
#pragma nv_diag_suppress 445

#include <bonsai/cuda.hpp>
#include <cmath>
#include <string>

// Inside namespace bonsai, `cuda::` names bonsai::cuda (CUDA's own headers declare a global
// namespace cuda too).
namespace bonsai {
namespace {

enum class Precision { fp32, tf32, bf16 };
enum class Epi { none, bias, bias_gelu };

const char* name(Precision p) { return p == Precision::fp32 ? "fp32" : p == Precision::tf32 ? "tf32" : "bf16"; }
const char* name(Epi e) { return e == Epi::none ? "none" : e == Epi::bias ? "bias" : "bias+gelu"; }

/// The tolerances of the CUDA issue: relative Frobenius error against the double reference.
double tolerance(Precision p) { return p == Precision::fp32 ? 1e-5 : p == Precision::tf32 ? 5e-4 : 1e-2; }

/// ||a - b||_F / ||b||_F (NaN anywhere makes it NaN, which fails every bound).
template <class A, class B>
double rel_fro(const A& a, const B& b) {
  double num = 0, den = 0;
  for (index_t i = 0; i < b.size(); ++i) {
    const double d = double(a.data()[i]) - double(b.data()[i]);
    num += d * d;
    den += double(b.data()[i]) * double(b.data()[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// Random normal values, rounded through U so host and device see the same inputs.
template <class U, int R>
Tensor<double, R> random_tensor(const std::array<index_t, R>& shape, Rng& rng, double stddev) {
  Tensor<double, R> t(shape);
  fill_normal(t.view(), rng, 0.0, stddev);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = double(cuda::convert<U>(float(t.data()[i])));
  return t;
}

template <Epi E, class T, class S>
auto make_epilogue(const VectorView<T, S>& b, const VectorView<T, S>& db) {
  if constexpr (E == Epi::none) return epilogue::None{};
  else if constexpr (E == Epi::bias) return epilogue::Bias<T, S>{b, db};
  else return epilogue::BiasGelu<T, S>{b, db};
}

/// Checks forward (and, with Train, backward) of make<U>() against make<double>() on the CPU.
/// The device bias and its gradient start `bias_offset` elements into their buffers (1: not
/// 16-byte aligned, as a bias inside a parameter arena may be).
template <class U, Epi E, bool Train, class Make>
void check_map(const std::string& label, Make make, Precision prec, index_t tokens, index_t bias_offset = 0) {
  CAPTURE(label);
  INFO("precision ", name(prec), ", epilogue ", name(E), ", tokens ", tokens, ", bias offset ", bias_offset);
  cuda::set_math(prec == Precision::tf32 ? cuda::Math::tf32 : cuda::Math::fp32);
  Rng rng(0xC0DA + tokens);
  const auto hmap = make.template operator()<double>();
  const index_t in = hmap.in_features(), out = hmap.out_features(), np = hmap.param_count();

  auto w = random_tensor<U, 1>({np}, rng, 0.1);
  if constexpr (requires { merge(bind(hmap, w.view())); }) {  // PreMerged: W_merged from S, rounded
    merge(bind(hmap, w.view()));
    for (index_t i = 0; i < np; ++i) w.data()[i] = double(cuda::convert<U>(float(w.data()[i])));
  }
  auto g0 = random_tensor<U, 1>({np}, rng, 1.0);
  auto b = random_tensor<U, 1>({out}, rng, 0.5);
  auto db0 = random_tensor<U, 1>({out}, rng, 1.0);
  auto x = random_tensor<U, 2>({tokens, in}, rng, 1.0);
  auto dy = random_tensor<U, 2>({tokens, out}, rng, 1.0);

  // CPU reference in double.
  Vector<double> gref(np), dbref(out);
  std::copy(g0.data(), g0.data() + np, gref.data());
  std::copy(db0.data(), db0.data() + out, dbref.data());
  Matrix<double> yref(tokens, out), dxref(tokens, in);
  {
    const auto f = bind(hmap, w.view()), gf = bind(hmap, gref.view());
    Context<decltype(hmap), Host, double> ctx;
    const auto epi = make_epilogue<E>(b.view(), dbref.view());
    forward(f, MatrixView<const double>(x.view()), yref.view(), ctx, epi);
    if constexpr (Train) backward(f, ctx, MatrixView<const double>(dy.view()), dxref.view(), gf, epi);
  }

  // The same on the device in U.
  const auto dmap = make.template operator()<U>();
  auto wd = cuda::to_device<U>(w.view());
  auto gd = cuda::to_device<U>(g0.view());
  Vector<U, Device> bd_buffer(out + bias_offset), dbd_buffer(out + bias_offset);
  const VectorView<U, Device> bd(bd_buffer.data() + bias_offset, {out}), dbd(dbd_buffer.data() + bias_offset, {out});
  cuda::copy(bd, b.view());
  cuda::copy(dbd, db0.view());
  auto xd = cuda::to_device<U>(x.view());
  auto dyd = cuda::to_device<U>(dy.view());
  Matrix<U, Device> yd(tokens, out), dxd(tokens, in);
  cuda::fill_bytes(yd.view(), 0xFF);
  cuda::fill_bytes(dxd.view(), 0xFF);
  {
    const auto f = bind(dmap, wd.view()), gf = bind(dmap, gd.view());
    Context<decltype(dmap), Device, U> ctx;
    const auto epi = make_epilogue<E>(bd, dbd);
    forward(f, MatrixView<const U, Device>(xd.view()), yd.view(), ctx, epi);
    if constexpr (Train) backward(f, ctx, MatrixView<const U, Device>(dyd.view()), dxd.view(), gf, epi);
    cuda::synchronize();
  }
  const double tol = tolerance(prec);
  const auto y = cuda::to_host<double>(yd.view());
  const auto dx = cuda::to_host<double>(dxd.view());
  CHECK(rel_fro(y, yref) <= tol);
  if constexpr (!Train) return;
  CHECK(rel_fro(dx, dxref) <= tol);
  if (np > 0) {
    const auto g = cuda::to_host<double>(gd.view());
    CHECK(rel_fro(g, gref) <= tol);
  }
  if constexpr (E != Epi::none) {
    const auto db = cuda::to_host<double>(dbd);
    CHECK(rel_fro(db, dbref) <= tol);
  }
}

/// Every precision and epilogue at 1, 77 and 300 tokens.
template <bool Train = true, class Make>
void check_all(const std::string& label, Make make) {
  for (index_t tokens : {index_t(1), index_t(77), index_t(300)}) {
    for (Precision p : {Precision::fp32, Precision::tf32}) {
      check_map<float, Epi::none, Train>(label, make, p, tokens);
      check_map<float, Epi::bias, Train>(label, make, p, tokens);
      check_map<float, Epi::bias_gelu, Train>(label, make, p, tokens);
    }
    check_map<bf16, Epi::none, Train>(label, make, Precision::bf16, tokens);
    check_map<bf16, Epi::bias, Train>(label, make, Precision::bf16, tokens);
    check_map<bf16, Epi::bias_gelu, Train>(label, make, Precision::bf16, tokens);
  }
  cuda::set_math(cuda::Math::fp32);
}

/// Shuffle has no scalar type: the same map for every precision.
struct MakeShuffle {
  index_t a, b;
  template <class>
  Shuffle<> operator()() const { return Shuffle<>(a, b); }
};

#define SKIP_WITHOUT_DEVICE()                      \
  if (!cuda::available()) {                        \
    MESSAGE("no CUDA device: skipped");            \
    return;                                        \
  }

}  // namespace

TEST_CASE("cuda: Dense matches the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  check_all("Dense 96 -> 160", []<class T>() { return Dense<T>(96, 160); });
  check_all("Dense 160 -> 96", []<class T>() { return Dense<T>(160, 96); });
  // Rows that are not whole 16-byte vectors take the general tiled epilogue kernel.
  check_all("Dense 50 -> 70", []<class T>() { return Dense<T>(50, 70); });
}

TEST_CASE("cuda: LowRank matches the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  check_all("LowRank 96 -> 160, R 24", []<class T>() { return LowRank<T>(96, 160, 24); });
}

TEST_CASE("cuda: BlockDiag matches the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  check_all("BlockDiag 96 -> 160, B 4", []<class T>() { return BlockDiag<T>(96, 160, 4); });
  check_all("BlockDiag 64 -> 64, B 1", []<class T>() { return BlockDiag<T>(64, 64, 1); });
}

TEST_CASE("cuda: Shuffle matches the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  // Tile shapes: both sides >= 32, one side small, and the identity (b = 1).
  check_all("Shuffle (8, 12)", MakeShuffle{8, 12});
  check_all("Shuffle (48, 40)", MakeShuffle{48, 40});
  check_all("Shuffle (4, 96)", MakeShuffle{4, 96});
  check_all("Shuffle (96, 4)", MakeShuffle{96, 4});
  check_all("Shuffle (64, 1)", MakeShuffle{64, 1});
}

TEST_CASE("cuda: BlockDense matches the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  check_all("BlockDense 96 -> 160, R 48, B 4", []<class T>() { return block_dense<T>(96, 160, 48, 4); });
}

TEST_CASE("cuda: BlockShuffle matches the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  check_all("BlockShuffle 128 -> 192, B 4", []<class T>() { return block_shuffle<T>(128, 192, 4); });
  check_all("BlockShuffle 192 -> 128, B 4", []<class T>() { return block_shuffle<T>(192, 128, 4); });
  check_all("BlockShuffle 64 -> 256, B 2", []<class T>() { return block_shuffle<T>(64, 256, 2); });
}

TEST_CASE("cuda: SelfGuided matches the CPU reference at every blend") {
  SKIP_WITHOUT_DEVICE();
  for (double a : {0.0, 0.3, 1.0}) {
    check_all("SelfGuided<LowRank 96 -> 160, R 24>, a " + std::to_string(a),
              [a]<class T>() { return SelfGuided<LowRank<T>>(LowRank<T>(96, 160, 24), a); });
    check_all("SelfGuided<BlockShuffle 128 -> 192, B 4>, a " + std::to_string(a),
              [a]<class T>() { return SelfGuided<BlockShuffle<T>>(block_shuffle<T>(128, 192, 4), a); });
  }
}

TEST_CASE("cuda: PreMerged picks the merged or the structured path like the CPU") {
  SKIP_WITHOUT_DEVICE();
  // Threshold 77: 1 and 77 tokens take the merged GEMM, 300 the structured map.
  check_all<false>("PreMerged<LowRank 96 -> 160, R 24>",
                   []<class T>() { return PreMerged<LowRank<T>>(LowRank<T>(96, 160, 24), 77); });
  check_all<false>("PreMerged<BlockDense 96 -> 160>",
                   []<class T>() { return PreMerged<BlockDense<T>>(block_dense<T>(96, 160, 48, 4), 77); });
}

TEST_CASE("cuda: a bias that is not 16-byte aligned takes the epilogue kernel and stays exact") {
  SKIP_WITHOUT_DEVICE();
  const auto make = []<class T>() { return Dense<T>(96, 160); };
  for (index_t tokens : {index_t(1), index_t(77)}) {
    check_map<float, Epi::bias, true>("Dense 96 -> 160", make, Precision::fp32, tokens, 1);
    check_map<float, Epi::bias_gelu, true>("Dense 96 -> 160", make, Precision::fp32, tokens, 1);
    check_map<bf16, Epi::bias, true>("Dense 96 -> 160", make, Precision::bf16, tokens, 1);
    check_map<bf16, Epi::bias_gelu, true>("Dense 96 -> 160", make, Precision::bf16, tokens, 3);
  }
}

TEST_CASE("cuda: autotuned GEMMs match the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  cuda::set_autotune(true);
  check_all("Dense 96 -> 160, autotuned", []<class T>() { return Dense<T>(96, 160); });
  check_all("BlockShuffle 128 -> 192, B 4, autotuned", []<class T>() { return block_shuffle<T>(128, 192, 4); });
  cuda::set_autotune(false);
}

TEST_CASE("cuda: host-device copies round-trip and convert") {
  SKIP_WITHOUT_DEVICE();
  Rng rng(7);
  Matrix<float> a(33, 17);
  fill_normal(a.view(), rng);
  const auto d = cuda::to_device<float>(a.view());
  const auto back = cuda::to_host<float>(d.view());
  CHECK(std::equal(a.data(), a.data() + a.size(), back.data()));
  const auto h = cuda::to_device<bf16>(a.view());
  const auto hb = cuda::to_host<float>(h.view());
  CHECK(rel_fro(hb, a) <= 4e-3);  // bf16 keeps 8 significant bits
  Matrix<float> wrong(17, 33);
  CHECK_THROWS_WITH_AS(cuda::copy(wrong.view(), d.view()), doctest::Contains("(33, 17)"), Error);
}

TEST_CASE("cuda: shape mismatches on device views throw with both shapes") {
  SKIP_WITHOUT_DEVICE();
  Dense<float> m(64, 32);
  Vector<float, Device> w(m.param_count());
  const auto f = bind(m, w.view());
  Matrix<float, Device> x(5, 48), y(5, 32);
  Context<Dense<float>, Device> ctx;
  CHECK_THROWS_WITH_AS(forward(f, MatrixView<const float, Device>(x.view()), y.view(), ctx),
                       doctest::Contains("(5, 48)"), Error);
}

}  // namespace bonsai
