// CUDA LayerNorm and RMSNorm against the CPU reference (double precision on the host): y, the
// saved mean and rstd, dx both assigned and accumulated onto a non-zero dx, and dw, db added onto
// non-zero starting values; float and bf16; rows {1, 77, 512} and widths that take the one-warp
// and one-block row kernels, with 16-byte vectors and without. Outputs are poisoned with NaN
// before each run, so an element the GPU does not write fails the check. Skipped without a device.
#include <doctest/doctest.h>

#include <bonsai/backend/cpu/norm.hpp>
#include <bonsai/cuda.hpp>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

// Inside namespace bonsai, `cuda` names bonsai::cuda first, not the global ::cuda of CCCL.
namespace bonsai {
namespace {

enum class Kind { layernorm, rmsnorm };

const char* name(Kind k) { return k == Kind::layernorm ? "LayerNorm" : "RMSNorm"; }

/// Relative Frobenius error bounds: fp32 reductions run in another order than on the CPU.
template <class U>
double tolerance() {
  return std::is_same_v<U, float> ? 2e-5 : 1e-2;
}

/// ||a - b||_F / ||b||_F over n values (NaN anywhere makes it NaN, which fails every bound).
template <class A, class B>
double rel_fro(const A* a, const B* b, index_t n) {
  double num = 0, den = 0;
  for (index_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// Random normal values, rounded through U so host and device see the same inputs.
template <class U, int R>
Tensor<double, R> random_tensor(const std::array<index_t, R>& shape, Rng& rng, double mean,
                                double stddev) {
  Tensor<double, R> t(shape);
  fill_normal(t.view(), rng, mean, stddev);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = double(cuda::convert<U>(float(t.data()[i])));
  return t;
}

/// Columns [offset, offset + c) of a host matrix, as a contiguous (rows, c) copy.
Matrix<double> take_columns(const Matrix<double>& m, index_t offset, index_t c) {
  Matrix<double> out(m.rows(), c);
  for (index_t r = 0; r < m.rows(); ++r)
    for (index_t j = 0; j < c; ++j) out(r, j) = m(r, offset + j);
  return out;
}

/// n floats from device memory.
std::vector<float> device_floats(const float* p, index_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  if (n > 0) BONSAI_CUDA_CHECK(cudaMemcpy(v.data(), p, sizeof(float) * n, cudaMemcpyDeviceToHost));
  return v;
}

/// Runs forward and backward of one norm on the CPU (double) and on the device (U) and compares.
/// The (n, c) operands are columns [offset, offset + c) of (n, c + pad) matrices, so pad > 0
/// gives row strides other than c and offset > 0 misaligned rows.
template <class U>
void check_norm(Kind kind, index_t n, index_t c, bool accumulate, index_t offset = 0,
                index_t pad = 0) {
  INFO(name(kind), " ", std::is_same_v<U, float> ? "float" : "bf16", ", rows ", n, ", width ", c,
       accumulate ? ", dx +=" : ", dx =", ", column offset ", offset, ", ld ", c + pad);
  const bool ln = kind == Kind::layernorm;
  const double eps = 1e-5;
  const index_t ld = c + pad;
  Rng rng(0x4E0A + 7919 * n + 31 * c + (accumulate ? 1 : 0) + 2 * offset + (ln ? 5 : 0));

  // Inputs: x off-centre so that LayerNorm's mean matters; gains around 1.
  auto x = random_tensor<U, 2>({n, ld}, rng, 0.5, 2.0);
  auto dy = random_tensor<U, 2>({n, ld}, rng, 0.0, 1.0);
  auto dx0 = random_tensor<U, 2>({n, ld}, rng, 0.0, 1.0);
  auto w = random_tensor<U, 1>({c}, rng, 1.0, 0.3);
  auto b = random_tensor<U, 1>({c}, rng, 0.0, 0.5);
  auto dw0 = random_tensor<U, 1>({c}, rng, 0.0, 1.0);
  auto db0 = random_tensor<U, 1>({c}, rng, 0.0, 1.0);

  // CPU reference in double.
  Matrix<double> yref(n, ld), dxref(n, ld);
  std::copy(dx0.data(), dx0.data() + dx0.size(), dxref.data());
  Vector<double> dwref(c), dbref(c);
  std::copy(dw0.data(), dw0.data() + c, dwref.data());
  std::copy(db0.data(), db0.data() + c, dbref.data());
  cpu::NormState<double> hst;
  {
    const MatrixView<const double> xv = columns(MatrixView<const double>(x.view()), offset, c);
    const MatrixView<const double> dyv = columns(MatrixView<const double>(dy.view()), offset, c);
    const auto yv = columns(yref.view(), offset, c);
    const auto dxv = columns(dxref.view(), offset, c);
    if (ln) {
      cpu::layernorm_forward(xv, w.data(), b.data(), yv, eps, hst);
      cpu::layernorm_backward(dyv, xv, w.data(), dxv, dwref.data(), dbref.data(), accumulate, hst);
    } else {
      cpu::rmsnorm_forward(xv, w.data(), yv, eps, hst);
      cpu::rmsnorm_backward(dyv, xv, w.data(), dxv, dwref.data(), accumulate, hst);
    }
  }

  // The same on the device in U.
  auto xd = cuda::to_device<U>(x.view());
  auto dyd = cuda::to_device<U>(dy.view());
  auto wd = cuda::to_device<U>(w.view());
  auto bd = cuda::to_device<U>(b.view());
  auto dwd = cuda::to_device<U>(dw0.view());
  auto dbd = cuda::to_device<U>(db0.view());
  Matrix<U, Device> yd(n, ld);
  cuda::fill_bytes(yd.view(), 0xFF);
  auto dxd = cuda::to_device<U>(dx0.view());
  if (!accumulate) cuda::fill_bytes(dxd.view(), 0xFF);
  cuda::NormState<U> dst;
  {
    const MatrixView<const U, Device> xv =
        columns(MatrixView<const U, Device>(xd.view()), offset, c);
    const MatrixView<const U, Device> dyv =
        columns(MatrixView<const U, Device>(dyd.view()), offset, c);
    const auto yv = columns(yd.view(), offset, c);
    const auto dxv = columns(dxd.view(), offset, c);
    if (ln) {
      cuda::layernorm_forward(xv, wd.data(), bd.data(), yv, float(eps), dst);
      cuda::layernorm_backward(dyv, xv, wd.data(), dxv, dwd.data(), dbd.data(), accumulate, dst);
    } else {
      cuda::rmsnorm_forward(xv, wd.data(), yv, float(eps), dst);
      cuda::rmsnorm_backward(dyv, xv, wd.data(), dxv, dwd.data(), accumulate, dst);
    }
    cuda::synchronize();
  }

  const double tol = tolerance<U>();
  const auto y_all = cuda::to_host<double>(yd.view());
  const auto dx_all = cuda::to_host<double>(dxd.view());
  const auto y = take_columns(y_all, offset, c), dx = take_columns(dx_all, offset, c);
  const auto y_ref = take_columns(yref, offset, c), dx_ref = take_columns(dxref, offset, c);
  CHECK(rel_fro(y.data(), y_ref.data(), y.size()) <= tol);
  CHECK(rel_fro(dx.data(), dx_ref.data(), dx.size()) <= tol);
  const auto dw = cuda::to_host<double>(dwd.view());
  CHECK(rel_fro(dw.data(), dwref.data(), c) <= tol);
  const auto db = cuda::to_host<double>(dbd.view());
  if (ln)
    CHECK(rel_fro(db.data(), dbref.data(), c) <= tol);
  else
    CHECK(rel_fro(db.data(), db0.data(), c) == 0.0);  // RMSNorm has no bias

  // The saved statistics are float for every T.
  CHECK(rel_fro(device_floats(dst.rstd.data(), n).data(), hst.rstd.data(), n) <= 1e-5);
  if (ln) CHECK(rel_fro(device_floats(dst.mean.data(), n).data(), hst.mean.data(), n) <= 1e-5);

  // Columns outside the view are left alone.
  bool outside_untouched = true;
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < ld; ++j)
      if (j < offset || j >= offset + c) {
        outside_untouched = outside_untouched && std::isnan(y_all(r, j));
        if (accumulate) outside_untouched = outside_untouched && dx_all(r, j) == dx0(r, j);
      }
  CHECK(outside_untouched);
}

template <class U>
void check_sizes(Kind kind) {
  // 64, 96, 768, 1000: one warp per row with 16-byte vectors; 50: one warp, element loads;
  // 1030: one block per row, element loads; 4096: one block per row with vectors.
  for (index_t n : {index_t(1), index_t(77), index_t(512)})
    for (index_t c : {index_t(64), index_t(96), index_t(768), index_t(1000), index_t(50),
                      index_t(1030), index_t(4096)})
      for (bool accumulate : {false, true}) check_norm<U>(kind, n, c, accumulate);
}

/// The message of the bonsai::Error that f throws ("" when it throws none).
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

#define SKIP_WITHOUT_DEVICE()           \
  if (!cuda::available()) {             \
    MESSAGE("no CUDA device: skipped"); \
    return;                             \
  }

TEST_CASE("cuda: LayerNorm matches the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  check_sizes<float>(Kind::layernorm);
  check_sizes<bf16>(Kind::layernorm);
}

TEST_CASE("cuda: RMSNorm matches the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  check_sizes<float>(Kind::rmsnorm);
  check_sizes<bf16>(Kind::rmsnorm);
}

TEST_CASE("cuda: norms on row-strided and misaligned views match the CPU reference") {
  SKIP_WITHOUT_DEVICE();
  for (Kind kind : {Kind::layernorm, Kind::rmsnorm})
    for (bool accumulate : {false, true}) {
      // ld = c + 8 keeps 16-byte rows (vector loads); offset 1 and ld = c + 3 do not.
      check_norm<float>(kind, 77, 96, accumulate, 0, 8);
      check_norm<bf16>(kind, 77, 96, accumulate, 0, 8);
      check_norm<float>(kind, 77, 96, accumulate, 1, 3);
      check_norm<bf16>(kind, 77, 96, accumulate, 1, 3);
      check_norm<float>(kind, 33, 2048, accumulate, 1, 3);
      check_norm<bf16>(kind, 33, 2048, accumulate, 0, 8);
    }
}

TEST_CASE("cuda: norm backward gives bitwise identical gradients on every run") {
  SKIP_WITHOUT_DEVICE();
  const index_t n = 512, c = 768;
  Rng rng(99);
  Matrix<float> x(n, c), dy(n, c);
  Vector<float> w(c), b(c);
  fill_normal(x.view(), rng, 0.5, 2.0);
  fill_normal(dy.view(), rng);
  fill_normal(w.view(), rng, 1.0, 0.3);
  fill_normal(b.view(), rng);
  const auto xd = cuda::to_device<float>(x.view());
  const auto dyd = cuda::to_device<float>(dy.view());
  const auto wd = cuda::to_device<float>(w.view());
  const auto bd = cuda::to_device<float>(b.view());
  const MatrixView<const float, Device> xv(xd.view()), dyv(dyd.view());
  Matrix<float, Device> yd(n, c), dxd(n, c);
  std::vector<float> first_dw, first_db, first_dx;
  for (int run = 0; run < 3; ++run) {
    Vector<float, Device> dwd(c), dbd(c);
    cuda::NormState<float> st;
    cuda::layernorm_forward(xv, wd.data(), bd.data(), yd.view(), 1e-5f, st);
    cuda::layernorm_backward(dyv, xv, wd.data(), dxd.view(), dwd.data(), dbd.data(), false, st);
    cuda::synchronize();
    const auto dw = cuda::to_host<float>(dwd.view());
    const auto db = cuda::to_host<float>(dbd.view());
    const auto dx = cuda::to_host<float>(dxd.view());
    if (run == 0) {
      first_dw.assign(dw.data(), dw.data() + c);
      first_db.assign(db.data(), db.data() + c);
      first_dx.assign(dx.data(), dx.data() + n * c);
    } else {
      CHECK(std::memcmp(first_dw.data(), dw.data(), sizeof(float) * c) == 0);
      CHECK(std::memcmp(first_db.data(), db.data(), sizeof(float) * c) == 0);
      CHECK(std::memcmp(first_dx.data(), dx.data(), sizeof(float) * n * c) == 0);
    }
  }
}

TEST_CASE("cuda: norm shape mismatches throw with both shapes") {
  SKIP_WITHOUT_DEVICE();
  Vector<float, Device> w(48), b(48), dw(48), db(48);
  Matrix<float, Device> x(5, 48), y(5, 32), y_ok(5, 48), dy(4, 48), dx(5, 48);
  const MatrixView<const float, Device> xv(x.view()), dyv(dy.view());
  cuda::NormState<float> st;
  std::string m =
      error_message([&] { cuda::layernorm_forward(xv, w.data(), b.data(), y.view(), 1e-5f, st); });
  CHECK(contains(m, "(5, 48)"));
  CHECK(contains(m, "(5, 32)"));
  m = error_message([&] { cuda::rmsnorm_forward(xv, w.data(), y.view(), 1e-5f, st); });
  CHECK(contains(m, "(5, 48)"));
  CHECK(contains(m, "(5, 32)"));
  cuda::layernorm_forward(xv, w.data(), b.data(), y_ok.view(), 1e-5f, st);
  m = error_message([&] {
    cuda::layernorm_backward(dyv, xv, w.data(), dx.view(), dw.data(), db.data(), false, st);
  });
  CHECK(contains(m, "(4, 48)"));
  CHECK(contains(m, "(5, 48)"));
  m = error_message(
      [&] { cuda::rmsnorm_backward(dyv, xv, w.data(), dx.view(), dw.data(), false, st); });
  CHECK(contains(m, "(4, 48)"));
  CHECK(contains(m, "(5, 48)"));
  // Statistics saved for another shape.
  Matrix<float, Device> x2(6, 48), dx2(6, 48);
  const MatrixView<const float, Device> x2v(x2.view());
  m = error_message([&] {
    cuda::layernorm_backward(x2v, x2v, w.data(), dx2.view(), dw.data(), db.data(), false, st);
  });
  CHECK(contains(m, "(5, 48)"));
  CHECK(contains(m, "(6, 48)"));
}

}  // namespace
}  // namespace bonsai
