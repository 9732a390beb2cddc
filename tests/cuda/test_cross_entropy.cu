// CUDA softmax cross-entropy against the CPU reference (double precision on the host): the summed
// loss, the gradient written over the logits (ignored rows zeroed, padding columns beyond V left
// alone), logits untouched without grad, bitwise-identical reruns, and out-of-range targets
// throwing. In fp32 and bf16, for GPT-2's padded vocabulary 50304 and an odd 1001, with rows of
// unaligned leading dimension. Skipped without a device.
#include <doctest/doctest.h>

#include <bonsai/backend/cpu/cross_entropy.hpp>
#include <bonsai/cuda.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

using namespace bonsai;

#define SKIP_WITHOUT_DEVICE()           \
  if (!cuda::available()) {             \
    MESSAGE("no CUDA device: skipped"); \
    return;                             \
  }

/// ||a - b||_F / ||b||_F over the first `cols` columns of (rows, ld) arrays.
double rel_fro_cols(const double* a, const double* b, index_t rows, index_t cols, index_t ld) {
  double num = 0, den = 0;
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) {
      const double d = a[i * ld + j] - b[i * ld + j];
      num += d * d;
      den += b[i * ld + j] * b[i * ld + j];
    }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

template <class U>
double grad_tolerance() {
  return std::is_same_v<U, float> ? 2e-5 : 1e-2;
}

/// Logits (rows, ld) ~ N(0, 2^2) rounded through U, targets in [0, vocab) with every fifth row
/// ignored (-1) once there are several rows, and the vocabulary's two ends present.
struct Problem {
  Matrix<double> logits;
  std::vector<std::int32_t> targets;
  index_t valid = 0;
};

template <class U>
Problem make_problem(index_t rows, index_t vocab, index_t ld, std::uint64_t seed) {
  Rng rng(seed);
  Problem p{Matrix<double>(rows, ld), std::vector<std::int32_t>(static_cast<std::size_t>(rows)), 0};
  fill_normal(p.logits.view(), rng, 0.0, 2.0);
  for (index_t i = 0; i < p.logits.size(); ++i)
    p.logits.data()[i] = double(cuda::convert<U>(float(p.logits.data()[i])));
  for (index_t i = 0; i < rows; ++i) {
    std::int32_t y = static_cast<std::int32_t>(rng.next_u64() % std::uint64_t(vocab));
    if (i == 1) y = 0;
    if (i == 2) y = static_cast<std::int32_t>(vocab - 1);
    if (rows > 1 && i % 5 == 4) y = -1;
    p.targets[static_cast<std::size_t>(i)] = y;
    p.valid += y >= 0;
  }
  return p;
}

/// Runs the device version on a copy of p.logits; returns the loss, leaves the logits in `out`.
template <class U>
double run_device(const Problem& p, index_t vocab, bool grad, float scale, cuda::CrossEntropyState& st,
                  Matrix<double>& out) {
  const index_t rows = p.logits.rows(), ld = p.logits.cols();
  auto zd = cuda::to_device<U>(p.logits.view());
  Vector<std::int32_t, Device> yd(rows);
  cuda::copy(yd.view(), VectorView<const std::int32_t>(p.targets.data(), {rows}));
  const double loss =
      cuda::softmax_cross_entropy(matrix_view<Device>(zd.data(), rows, vocab, ld), yd.data(), grad, scale, st);
  out = cuda::to_host<double>(zd.view());
  return loss;
}

template <class U>
void check_cross_entropy(index_t rows, index_t vocab, index_t ld, bool grad) {
  INFO("type ", std::is_same_v<U, float> ? "fp32" : "bf16", ", rows ", rows, ", vocab ", vocab, ", ld ", ld,
       ", grad ", grad);
  const Problem p = make_problem<U>(rows, vocab, ld, 0xCE00 + std::uint64_t(rows * 7 + vocab + ld));
  const float scale = p.valid ? 1.0f / float(p.valid) : 0.0f;

  Matrix<double> ref(rows, ld);
  std::memcpy(ref.data(), p.logits.data(), sizeof(double) * p.logits.size());
  const double ref_loss = cpu::softmax_cross_entropy(matrix_view<Host>(ref.data(), rows, vocab, ld),
                                                     p.targets.data(), grad, double(scale));

  cuda::CrossEntropyState st;
  Matrix<double> out;
  const double loss = run_device<U>(p, vocab, grad, scale, st, out);
  CHECK(std::abs(loss - ref_loss) <= 2e-5 * std::abs(ref_loss));

  index_t wrong = 0;  // elements that must hold an exact value but do not
  if (grad) {
    CHECK(rel_fro_cols(out.data(), ref.data(), rows, vocab, ld) <= grad_tolerance<U>());
    for (index_t i = 0; i < rows; ++i)  // ignored rows are exactly zero
      if (p.targets[static_cast<std::size_t>(i)] < 0)
        for (index_t j = 0; j < vocab; ++j) wrong += out(i, j) != 0.0;
  } else {
    for (index_t i = 0; i < rows * ld; ++i) wrong += out.data()[i] != p.logits.data()[i];
  }
  for (index_t i = 0; i < rows; ++i)  // padding columns are left alone
    for (index_t j = vocab; j < ld; ++j) wrong += out(i, j) != p.logits(i, j);
  CHECK(wrong == 0);

  // A second run with the same state gives the same bits.
  Matrix<double> again;
  const double loss2 = run_device<U>(p, vocab, grad, scale, st, again);
  CHECK(loss2 == loss);
  CHECK(std::memcmp(again.data(), out.data(), sizeof(double) * out.size()) == 0);
}

template <class U>
void check_all_sizes() {
  for (index_t rows : {index_t(1), index_t(77), index_t(256)}) {
    for (bool grad : {true, false}) {
      check_cross_entropy<U>(rows, 50304, 50304, grad);
      check_cross_entropy<U>(rows, 1001, 1001, grad);
      check_cross_entropy<U>(rows, 1001, 1004, grad);  // rows start off 16-byte boundaries
    }
  }
  check_cross_entropy<U>(3, 5, 5, true);  // a row shorter than one vector
}

}  // namespace

TEST_CASE("cuda: softmax cross-entropy matches the CPU reference in fp32") {
  SKIP_WITHOUT_DEVICE();
  check_all_sizes<float>();
}

TEST_CASE("cuda: softmax cross-entropy matches the CPU reference in bf16") {
  SKIP_WITHOUT_DEVICE();
  check_all_sizes<bf16>();
}

TEST_CASE("cuda: softmax cross-entropy with every target ignored is zero") {
  SKIP_WITHOUT_DEVICE();
  const index_t rows = 9, vocab = 1001;
  Matrix<float> z(rows, vocab);
  Rng rng(3);
  fill_normal(z.view(), rng);
  auto zd = cuda::to_device<float>(z.view());
  const std::vector<std::int32_t> y(rows, -1);
  Vector<std::int32_t, Device> yd(rows);
  cuda::copy(yd.view(), VectorView<const std::int32_t>(y.data(), {rows}));
  cuda::CrossEntropyState st;
  CHECK(cuda::softmax_cross_entropy(zd.view(), yd.data(), true, 0.5f, st) == 0.0);
  const auto back = cuda::to_host<float>(zd.view());
  index_t nonzero = 0;
  for (index_t i = 0; i < back.size(); ++i) nonzero += back.data()[i] != 0.0f;
  CHECK(nonzero == 0);
}

TEST_CASE("cuda: softmax cross-entropy rejects targets outside the vocabulary") {
  SKIP_WITHOUT_DEVICE();
  const index_t rows = 12, vocab = 1001;
  Matrix<float> z(rows, vocab);
  Rng rng(4);
  fill_normal(z.view(), rng);
  auto zd = cuda::to_device<float>(z.view());
  std::vector<std::int32_t> y(rows, 7);
  Vector<std::int32_t, Device> yd(rows);
  cuda::CrossEntropyState st;
  auto upload = [&] {  // fresh logits and the current targets
    zd = cuda::to_device<float>(z.view());
    cuda::copy(yd.view(), VectorView<const std::int32_t>(y.data(), {rows}));
  };

  y[9] = -2;
  y[5] = 1001;
  upload();
  CHECK_THROWS_WITH_AS(cuda::softmax_cross_entropy(zd.view(), yd.data(), true, 1.0f, st),
                       doctest::Contains("target 1001 at row 5"), Error);
  y[5] = 7;
  upload();
  CHECK_THROWS_WITH_AS(cuda::softmax_cross_entropy(zd.view(), yd.data(), false, 1.0f, st),
                       doctest::Contains("target -2 at row 9"), Error);
  // The state is reusable after an error.
  y[9] = 1000;
  upload();
  const double loss = cuda::softmax_cross_entropy(zd.view(), yd.data(), false, 1.0f, st);
  CHECK(std::isfinite(loss));
  CHECK(loss > 0.0);
}
