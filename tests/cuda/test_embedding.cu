// CUDA token + position embedding against the CPU reference (double precision on the host):
// forward with and without a position table and with a position offset, backward accumulating
// into non-zero gradients with tokens repeated many times in the batch, bitwise-identical reruns
// of backward, out-of-range token ids and bad shapes throwing. In fp32 and bf16, for vocabularies
// 50304 and 1001 and widths that are and are not whole 16-byte vectors. Skipped without a device.
#include <doctest/doctest.h>

#include <bonsai/backend/cpu/embedding.hpp>
#include <bonsai/cuda.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using namespace bonsai;

#define SKIP_WITHOUT_DEVICE()           \
  if (!cuda::available()) {             \
    MESSAGE("no CUDA device: skipped"); \
    return;                             \
  }

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

/// The same for the increments a - base and b - base.
template <class A, class B, class C>
double rel_fro_increment(const A& a, const B& b, const C& base) {
  double num = 0, den = 0;
  for (index_t i = 0; i < b.size(); ++i) {
    const double d = double(a.data()[i]) - double(b.data()[i]);
    const double e = double(b.data()[i]) - double(base.data()[i]);
    num += d * d;
    den += e * e;
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// Random normal values, rounded through U so host and device see the same inputs.
template <class U>
Matrix<double> random_matrix(index_t rows, index_t cols, Rng& rng, double stddev) {
  Matrix<double> t(rows, cols);
  fill_normal(t.view(), rng, 0.0, stddev);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = double(cuda::convert<U>(float(t.data()[i])));
  return t;
}

template <class U>
double tolerance() {
  return std::is_same_v<U, float> ? 2e-5 : 1e-2;
}

Vector<std::int32_t, Device> upload(const std::vector<std::int32_t>& v) {
  const index_t n = static_cast<index_t>(v.size());
  Vector<std::int32_t, Device> d(n);
  cuda::copy(d.view(), VectorView<const std::int32_t>(v.data(), {n}));
  return d;
}

/// Token ids: about half from a handful of ids (so each repeats many times), the rest anywhere
/// in the vocabulary, and both ends of it.
std::vector<std::int32_t> make_tokens(index_t n, index_t vocab, Rng& rng) {
  std::vector<std::int32_t> tok(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    const std::uint64_t r = rng.next_u64();
    tok[static_cast<std::size_t>(i)] =
        static_cast<std::int32_t>(r % 2 ? (r >> 1) % 5 : (r >> 1) % std::uint64_t(vocab));
  }
  if (n > 2) {
    tok[1] = static_cast<std::int32_t>(vocab - 1);
    tok[2] = 0;
  }
  return tok;
}

template <class U>
void check_embedding(index_t vocab, index_t width, index_t batch, index_t seq, index_t pos0, bool learned) {
  INFO("type ", std::is_same_v<U, float> ? "fp32" : "bf16", ", vocab ", vocab, ", width ", width, ", batch ",
       batch, ", seq ", seq, ", pos0 ", pos0, ", learned positions ", learned);
  Rng rng(0xE3B + std::uint64_t(vocab + width * 3 + batch * 5 + seq * 7 + pos0));
  const index_t n = batch * seq, max_seq = learned ? pos0 + seq + 3 : 0;
  const auto wte = random_matrix<U>(vocab, width, rng, 1.0);
  const auto wpe = random_matrix<U>(max_seq, width, rng, 1.0);
  const auto dy = random_matrix<U>(n, width, rng, 1.0);
  const auto dwte0 = random_matrix<U>(vocab, width, rng, 0.5);
  const auto dwpe0 = random_matrix<U>(max_seq, width, rng, 0.5);
  const auto tok = make_tokens(n, vocab, rng);

  // CPU reference in double.
  const auto wpe_h = learned ? MatrixView<const double>(wpe.view()) : MatrixView<const double>{};
  Matrix<double> yref(n, width);
  cpu::embedding_forward<double>(tok.data(), batch, seq, pos0, wte.view(), wpe_h, yref.view());
  Matrix<double> dwte_ref(vocab, width), dwpe_ref(max_seq, width);
  std::memcpy(dwte_ref.data(), dwte0.data(), sizeof(double) * dwte0.size());
  std::memcpy(dwpe_ref.data(), dwpe0.data(), sizeof(double) * dwpe0.size());
  cpu::embedding_backward<double>(tok.data(), batch, seq, dy.view(), dwte_ref.view(),
                                  learned ? dwpe_ref.view() : MatrixView<double>{});

  // The device in U.
  const auto tok_d = upload(tok);
  const auto wte_d = cuda::to_device<U>(wte.view());
  const auto wpe_d = cuda::to_device<U>(wpe.view());
  const auto dy_d = cuda::to_device<U>(dy.view());
  cuda::EmbeddingState st;
  Matrix<U, Device> y_d(n, width);
  cuda::fill_bytes(y_d.view(), 0xFF);
  cuda::embedding_forward<U>(tok_d.data(), batch, seq, pos0, wte_d.view(),
                             learned ? wpe_d.view() : MatrixView<const U, Device>{}, y_d.view(), st);
  CHECK(rel_fro(cuda::to_host<double>(y_d.view()), yref) <= tolerance<U>());

  Matrix<double> dwte_first, dwpe_first;
  for (int run = 0; run < 2; ++run) {
    CAPTURE(run);
    auto dwte_d = cuda::to_device<U>(dwte0.view());
    auto dwpe_d = cuda::to_device<U>(dwpe0.view());
    cuda::embedding_backward<U>(tok_d.data(), batch, seq, dy_d.view(), dwte_d.view(),
                                learned ? dwpe_d.view() : MatrixView<U, Device>{}, st);
    cuda::synchronize();
    auto dwte = cuda::to_host<double>(dwte_d.view());
    auto dwpe = cuda::to_host<double>(dwpe_d.view());
    CHECK(rel_fro_increment(dwte, dwte_ref, dwte0) <= tolerance<U>());
    CHECK(rel_fro(dwte, dwte_ref) <= tolerance<U>());
    if (learned) CHECK(rel_fro_increment(dwpe, dwpe_ref, dwpe0) <= tolerance<U>());
    if (run == 0) {
      dwte_first = std::move(dwte);
      dwpe_first = std::move(dwpe);
    } else {  // the same bits on every run
      CHECK(std::memcmp(dwte.data(), dwte_first.data(), sizeof(double) * dwte.size()) == 0);
      CHECK(std::memcmp(dwpe.data(), dwpe_first.data(), sizeof(double) * dwpe.size()) == 0);
    }
  }
}

template <class U>
void check_all_sizes() {
  struct BatchShape {
    index_t batch, seq;
  };
  for (BatchShape b : {BatchShape{1, 1}, BatchShape{7, 11}, BatchShape{4, 64}}) {
    check_embedding<U>(50304, 128, b.batch, b.seq, 0, true);
    check_embedding<U>(50304, 128, b.batch, b.seq, 0, false);
    check_embedding<U>(1001, 77, b.batch, b.seq, 3, true);  // not whole vectors: the scalar kernels
    check_embedding<U>(1001, 768, b.batch, b.seq, 5, true);
    check_embedding<U>(1001, 300, b.batch, b.seq, 0, false);  // a partial last column tile
  }
  // 5000 tokens: the sort pads to 8192 keys and merges across shared-memory tiles.
  check_embedding<U>(50304, 64, 5, 1000, 2, true);
}

}  // namespace

TEST_CASE("cuda: embedding forward and backward match the CPU reference in fp32") {
  SKIP_WITHOUT_DEVICE();
  check_all_sizes<float>();
}

TEST_CASE("cuda: embedding forward and backward match the CPU reference in bf16") {
  SKIP_WITHOUT_DEVICE();
  check_all_sizes<bf16>();
}

TEST_CASE("cuda: embedding backward sums a token repeated over the whole batch") {
  SKIP_WITHOUT_DEVICE();
  // Every position holds token 42: one run of 2048 rows.
  const index_t batch = 8, seq = 256, vocab = 1001, width = 96, n = batch * seq;
  Rng rng(11);
  const auto dy = random_matrix<float>(n, width, rng, 1.0);
  const std::vector<std::int32_t> tok(static_cast<std::size_t>(n), 42);
  Matrix<double> dwte_ref(vocab, width), dwpe_ref(seq, width);
  cpu::embedding_backward<double>(tok.data(), batch, seq, dy.view(), dwte_ref.view(), dwpe_ref.view());
  const auto tok_d = upload(tok);
  const auto dy_d = cuda::to_device<float>(dy.view());
  Matrix<float, Device> dwte_d(vocab, width), dwpe_d(seq, width);
  cuda::EmbeddingState st;
  cuda::embedding_backward<float>(tok_d.data(), batch, seq, dy_d.view(), dwte_d.view(), dwpe_d.view(), st);
  CHECK(rel_fro(cuda::to_host<double>(dwte_d.view()), dwte_ref) <= 2e-5);
  CHECK(rel_fro(cuda::to_host<double>(dwpe_d.view()), dwpe_ref) <= 2e-5);
}

TEST_CASE("cuda: embedding rejects token ids outside the vocabulary and bad shapes") {
  SKIP_WITHOUT_DEVICE();
  const index_t batch = 3, seq = 5, vocab = 1001, width = 64, n = batch * seq;
  Matrix<float, Device> wte(vocab, width), wpe(seq, width), y(n, width);
  cuda::EmbeddingState st;
  std::vector<std::int32_t> tok(static_cast<std::size_t>(n), 9);
  tok[7] = 1001;
  tok[11] = -1;
  auto tok_d = upload(tok);
  CHECK_THROWS_WITH_AS(cuda::embedding_forward<float>(tok_d.data(), batch, seq, 0, wte.view(), wpe.view(), y.view(), st),
                       doctest::Contains("token id 1001 at position 7"), Error);
  tok[7] = 9;
  tok_d = upload(tok);
  CHECK_THROWS_WITH_AS(cuda::embedding_forward<float>(tok_d.data(), batch, seq, 0, wte.view(), MatrixView<const float, Device>{},
                                                      y.view(), st),
                       doctest::Contains("token id -1 at position 11"), Error);
  tok[11] = 1000;
  tok_d = upload(tok);
  CHECK_NOTHROW(cuda::embedding_forward<float>(tok_d.data(), batch, seq, 0, wte.view(), wpe.view(), y.view(), st));

  Matrix<float, Device> y_bad(n + 1, width);
  CHECK_THROWS_WITH_AS(cuda::embedding_forward<float>(tok_d.data(), batch, seq, 0, wte.view(), wpe.view(), y_bad.view(), st),
                       doctest::Contains("(16, 64)"), Error);
  CHECK_THROWS_WITH_AS(cuda::embedding_forward<float>(tok_d.data(), batch, seq, 1, wte.view(), wpe.view(), y.view(), st),
                       doctest::Contains("(5, 64)"), Error);
  Matrix<float, Device> dwte_bad(vocab, width + 1);
  CHECK_THROWS_WITH_AS(cuda::embedding_backward<float>(tok_d.data(), batch, seq, y.view(), dwte_bad.view(), wpe.view(), st),
                       doctest::Contains("(1001, 65)"), Error);
}
