// CUDA flash attention against the CPU attention in double: forward output, the saved row
// log-sum-exp (against a naive double reference) and every gradient (dQ, dK, dV, each part of
// dqkv checked on its own) for multi-head, grouped-query and multi-query attention, sequence
// lengths that are and are not multiples of the 64-row tile, head widths 32, 64 and 128, in fp32
// and bf16. Outputs are poisoned with NaN before each run, so an element the GPU does not write
// fails the check. Also: the explicit-view overloads agree bit for bit with the state overloads,
// backward is deterministic (fp32 and bf16), bf16 rows that are not 16-byte aligned (served by
// the float-tile kernels instead of the tensor-core ones) meet the same bounds, and bad shapes
// throw. Skipped without a device.
#include <doctest/doctest.h>

#include <bonsai/cuda.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace {

using namespace bonsai;

#define SKIP_WITHOUT_DEVICE()           \
  if (!bonsai::cuda::available()) {             \
    MESSAGE("no CUDA device: skipped"); \
    return;                             \
  }

/// ||a - ref||_F / ||ref||_F over columns [c0, c1) of two (rows, cols) matrices (NaN fails). A
/// part that is zero in exact arithmetic (dQ and dK at T = 1, where every softmax has one entry)
/// is measured against the whole matrix's norm instead.
double rel_fro_cols(const Matrix<double>& a, const Matrix<double>& ref, index_t c0, index_t c1) {
  double num = 0, den = 0, all = 0;
  for (index_t r = 0; r < ref.rows(); ++r)
    for (index_t c = 0; c < ref.cols(); ++c) {
      all += ref(r, c) * ref(r, c);
      if (c < c0 || c >= c1) continue;
      const double d = a(r, c) - ref(r, c);
      num += d * d;
      den += ref(r, c) * ref(r, c);
    }
  if (den <= 1e-20 * all) den = all;
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// ||a - ref||_F / ||ref||_F over n elements.
double rel_fro(const double* a, const double* ref, index_t n) {
  double num = 0, den = 0;
  for (index_t i = 0; i < n; ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// Random normal values, rounded through U so host and device see the same inputs.
template <class U>
Matrix<double> random_matrix(index_t rows, index_t cols, Rng& rng, double stddev) {
  Matrix<double> m(rows, cols);
  fill_normal(m.view(), rng, 0.0, stddev);
  for (index_t i = 0; i < m.size(); ++i) m.data()[i] = double(bonsai::cuda::convert<U>(float(m.data()[i])));
  return m;
}

/// L[b, h, t] = ln Σ_{u ≤ t} exp(q_t · k_u / √hd), naively in double; (B*Hq*T) values.
std::vector<double> reference_lse(const AttentionShape& s, const Matrix<double>& qkv) {
  const index_t B = s.batch, Tn = s.seq, H = s.heads, hd = s.head_dim, A = s.q_width(), G = s.group();
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> lse(B * H * Tn);
  std::vector<double> sc(Tn);
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t t = 0; t < Tn; ++t) {
        double mx = -INFINITY;
        for (index_t u = 0; u <= t; ++u) {
          double d = 0;
          for (index_t i = 0; i < hd; ++i) d += qkv(b * Tn + t, h * hd + i) * qkv(b * Tn + u, A + (h / G) * hd + i);
          sc[u] = d * scale;
          mx = std::max(mx, sc[u]);
        }
        double sum = 0;
        for (index_t u = 0; u <= t; ++u) sum += std::exp(sc[u] - mx);
        lse[(b * H + h) * Tn + t] = mx + std::log(sum);
      }
  return lse;
}

/// The bounds of the CUDA issue. fp32: 1e-5 for the forward and the log-sum-exp, 2e-5 for the
/// gradients (their sums run in another order than the CPU's). bf16: the output is rounded to 8
/// significant bits (1e-2); the gradients get 2e-2, since dS = P (dP − D) subtracts nearly equal
/// terms and D is formed from the bf16-rounded output. The log-sum-exp is float in both cases.
struct Bounds {
  double out, grad, lse;
};
template <class U>
Bounds bounds() {
  if constexpr (std::is_same_v<U, float>) return {1e-5, 2e-5, 1e-5};
  else return {1e-2, 2e-2, 1e-5};
}

/// The largest errors seen: forward, log-sum-exp, gradients.
struct Worst {
  double out = 0, lse = 0, grad = 0;
};

template <class U>
void check_attention(Worst& worst, index_t batch, index_t heads, index_t kv_heads, index_t seq, index_t head_dim) {
  const AttentionShape s{batch, seq, heads, kv_heads, head_dim};
  INFO((std::is_same_v<U, float> ? "fp32 " : "bf16 "), s);
  Rng rng(0xA77 + seq * 131 + head_dim * 7 + heads);
  const index_t N = s.tokens(), W = s.qkv_width(), A = s.q_width(), KV = s.kv_width();
  const auto qkv = random_matrix<U>(N, W, rng, 1.0);
  const auto dout = random_matrix<U>(N, A, rng, 1.0);

  // CPU reference in double.
  Matrix<double> out_ref(N, A), dqkv_ref(N, W);
  Tensor<double, 4> probs(s.batch, s.heads, s.seq, s.seq), dscores(s.batch, s.heads, s.seq, s.seq);
  cpu::attention_forward<double>(s, MatrixView<const double>(qkv.view()), out_ref.view(), probs.view());
  cpu::attention_backward<double>(s, MatrixView<const double>(qkv.view()), TensorView<const double, 4>(probs.view()),
                                  MatrixView<const double>(dout.view()), dqkv_ref.view(), dscores.view());
  const auto lse_ref = reference_lse(s, qkv);

  // The device in U.
  const auto qkvd = bonsai::cuda::to_device<U>(qkv.view());
  const auto doutd = bonsai::cuda::to_device<U>(dout.view());
  Matrix<U, Device> outd(N, A), dqkvd(N, W);
  bonsai::cuda::fill_bytes(outd.view(), 0xFF);
  bonsai::cuda::fill_bytes(dqkvd.view(), 0xFF);
  bonsai::cuda::AttentionState<U> st;
  bonsai::cuda::attention_forward<U>(s, qkvd.view(), outd.view(), st);
  bonsai::cuda::attention_backward<U>(s, qkvd.view(), st, doutd.view(), dqkvd.view());
  bonsai::cuda::synchronize();

  const Bounds tol = bounds<U>();
  const auto out = bonsai::cuda::to_host<double>(outd.view());
  const auto dqkv = bonsai::cuda::to_host<double>(dqkvd.view());
  const auto lse = bonsai::cuda::to_host<double>(TensorView<float, 1, Device>(st.lse.data(), {s.batch * s.heads * s.seq}));
  const double e_out = rel_fro_cols(out, out_ref, 0, A);
  const double e_lse = rel_fro(lse.data(), lse_ref.data(), index_t(lse_ref.size()));
  const double e_dq = rel_fro_cols(dqkv, dqkv_ref, 0, A);
  const double e_dk = rel_fro_cols(dqkv, dqkv_ref, A, A + KV);
  const double e_dv = rel_fro_cols(dqkv, dqkv_ref, A + KV, A + 2 * KV);
  CHECK(e_out <= tol.out);
  CHECK(e_lse <= tol.lse);
  CHECK(e_dq <= tol.grad);
  CHECK(e_dk <= tol.grad);
  CHECK(e_dv <= tol.grad);
  worst.out = std::max(worst.out, e_out);
  worst.lse = std::max(worst.lse, e_lse);
  worst.grad = std::max({worst.grad, e_dq, e_dk, e_dv});
}

template <class U>
void report(const Worst& w) {
  MESSAGE((std::is_same_v<U, float> ? "fp32" : "bf16"), " worst relative errors: out ", w.out, ", lse ", w.lse,
          ", dqkv ", w.grad);
}

template <class U>
void check_sizes() {
  Worst w;
  for (index_t head_dim : {index_t(32), index_t(64), index_t(128)})
    for (index_t seq : {index_t(1), index_t(17), index_t(64), index_t(100), index_t(256)})
      check_attention<U>(w, 2, 3, 3, seq, head_dim);
  report<U>(w);
}

template <class U>
void check_grouped() {
  Worst w;
  check_attention<U>(w, 2, 4, 2, 100, 64);  // grouped-query: two query heads per kv head
  check_attention<U>(w, 1, 4, 1, 130, 32);  // multi-query: one kv head, three tiles
  check_attention<U>(w, 2, 6, 3, 65, 128);  // a last tile of one row
  report<U>(w);
}

/// Whether f() throws bonsai::Error with a message that contains both a and b.
template <class F>
bool throws_with(F&& f, const char* a, const char* b) {
  try {
    f();
  } catch (const Error& e) {
    const std::string m = e.what();
    return m.find(a) != std::string::npos && m.find(b) != std::string::npos;
  }
  return false;
}

}  // namespace

TEST_CASE("cuda: flash attention fp32 matches the CPU attention") {
  SKIP_WITHOUT_DEVICE();
  check_sizes<float>();
}

TEST_CASE("cuda: flash attention bf16 matches the CPU attention") {
  SKIP_WITHOUT_DEVICE();
  check_sizes<bf16>();
}

TEST_CASE("cuda: flash attention handles grouped-query and multi-query heads") {
  SKIP_WITHOUT_DEVICE();
  check_grouped<float>();
  check_grouped<bf16>();
}

TEST_CASE("cuda: flash attention view overloads equal the state overloads and are deterministic") {
  SKIP_WITHOUT_DEVICE();
  const AttentionShape s{2, 150, 4, 2, 64};
  Rng rng(99);
  const index_t N = s.tokens(), W = s.qkv_width(), A = s.q_width();
  const auto qkv = random_matrix<float>(N, W, rng, 1.5);
  const auto dout = random_matrix<float>(N, A, rng, 1.0);
  const auto qkvd = bonsai::cuda::to_device<float>(qkv.view());
  const auto doutd = bonsai::cuda::to_device<float>(dout.view());

  bonsai::cuda::AttentionState<float> st;
  Matrix<float, Device> out1(N, A), dqkv1(N, W);
  bonsai::cuda::attention_forward<float>(s, qkvd.view(), out1.view(), st);
  bonsai::cuda::attention_backward<float>(s, qkvd.view(), st, doutd.view(), dqkv1.view());

  Matrix<float, Device> out2(N, A), dqkv2(N, W);
  Tensor<float, 3, Device> lse(s.batch, s.heads, s.seq), delta(s.batch, s.heads, s.seq);
  bonsai::cuda::fill_bytes(out2.view(), 0xFF);
  bonsai::cuda::fill_bytes(dqkv2.view(), 0xFF);
  bonsai::cuda::fill_bytes(lse.view(), 0xFF);
  bonsai::cuda::fill_bytes(delta.view(), 0xFF);
  bonsai::cuda::attention_forward<float>(s, qkvd.view(), out2.view(), lse.view());
  bonsai::cuda::attention_backward<float>(s, qkvd.view(), out2.view(), lse.view(), doutd.view(), dqkv2.view(), delta.view());
  bonsai::cuda::synchronize();

  const auto o1 = bonsai::cuda::to_host<float>(out1.view()), o2 = bonsai::cuda::to_host<float>(out2.view());
  const auto g1 = bonsai::cuda::to_host<float>(dqkv1.view()), g2 = bonsai::cuda::to_host<float>(dqkv2.view());
  CHECK(std::memcmp(o1.data(), o2.data(), sizeof(float) * o1.size()) == 0);
  CHECK(std::memcmp(g1.data(), g2.data(), sizeof(float) * g1.size()) == 0);
  const auto l1 = bonsai::cuda::to_host<float>(TensorView<float, 1, Device>(st.lse.data(), {s.batch * s.heads * s.seq}));
  const auto l2 = bonsai::cuda::to_host<float>(lse.view());
  CHECK(std::memcmp(l1.data(), l2.data(), sizeof(float) * l1.size()) == 0);
}

TEST_CASE("cuda: flash attention bf16 is deterministic and its unaligned-row fallback agrees") {
  SKIP_WITHOUT_DEVICE();
  // Contiguous bf16 rows take the tensor-core kernels; rows of W + 4 and A + 4 elements (not a
  // multiple of 16 bytes) take the float-tile kernels. Both must meet the bf16 bounds, and the
  // tensor-core backward must give the same bits twice.
  const AttentionShape s{2, 150, 4, 2, 64};
  Rng rng(0xB16);
  const index_t N = s.tokens(), W = s.qkv_width(), A = s.q_width(), KV = s.kv_width();
  const auto qkv = random_matrix<bf16>(N, W, rng, 1.0);
  const auto dout = random_matrix<bf16>(N, A, rng, 1.0);
  Matrix<double> out_ref(N, A), dqkv_ref(N, W);
  Tensor<double, 4> probs(s.batch, s.heads, s.seq, s.seq), dscores(s.batch, s.heads, s.seq, s.seq);
  cpu::attention_forward<double>(s, MatrixView<const double>(qkv.view()), out_ref.view(), probs.view());
  cpu::attention_backward<double>(s, MatrixView<const double>(qkv.view()), TensorView<const double, 4>(probs.view()),
                                  MatrixView<const double>(dout.view()), dqkv_ref.view(), dscores.view());
  Matrix<double> qkv_pad(N, W + 4), dout_pad(N, A + 4);
  for (index_t r = 0; r < N; ++r) {
    for (index_t c = 0; c < W + 4; ++c) qkv_pad(r, c) = c < W ? qkv(r, c) : 0.0;
    for (index_t c = 0; c < A + 4; ++c) dout_pad(r, c) = c < A ? dout(r, c) : 0.0;
  }
  const auto qkvd = bonsai::cuda::to_device<bf16>(qkv.view());
  const auto doutd = bonsai::cuda::to_device<bf16>(dout.view());
  const auto qkvpd = bonsai::cuda::to_device<bf16>(qkv_pad.view());
  const auto doutpd = bonsai::cuda::to_device<bf16>(dout_pad.view());
  const auto qkv_strided = matrix_view<Device>(qkvpd.data(), N, W, W + 4);
  const auto dout_strided = matrix_view<Device>(doutpd.data(), N, A, A + 4);

  const Bounds tol = bounds<bf16>();
  Matrix<bf16, Device> out1(N, A), dqkv1(N, W), dqkv2(N, W), out3(N, A), dqkv3(N, W);
  bonsai::cuda::fill_bytes(out1.view(), 0xFF);
  bonsai::cuda::fill_bytes(dqkv1.view(), 0xFF);
  bonsai::cuda::fill_bytes(dqkv2.view(), 0xFF);
  bonsai::cuda::fill_bytes(out3.view(), 0xFF);
  bonsai::cuda::fill_bytes(dqkv3.view(), 0xFF);
  bonsai::cuda::AttentionState<bf16> st, st3;
  bonsai::cuda::attention_forward<bf16>(s, qkvd.view(), out1.view(), st);
  bonsai::cuda::attention_backward<bf16>(s, qkvd.view(), st, doutd.view(), dqkv1.view());
  bonsai::cuda::attention_backward<bf16>(s, qkvd.view(), st, doutd.view(), dqkv2.view());
  bonsai::cuda::attention_forward<bf16>(s, qkv_strided, out3.view(), st3);
  bonsai::cuda::attention_backward<bf16>(s, qkv_strided, st3, dout_strided, dqkv3.view());
  bonsai::cuda::synchronize();

  const auto g1 = bonsai::cuda::to_host<float>(dqkv1.view()), g2 = bonsai::cuda::to_host<float>(dqkv2.view());
  CHECK(std::memcmp(g1.data(), g2.data(), sizeof(float) * g1.size()) == 0);
  const Matrix<bf16, Device>* outs[] = {&out1, &out3};
  const Matrix<bf16, Device>* grads[] = {&dqkv1, &dqkv3};
  for (int k = 0; k < 2; ++k) {
    INFO((k == 0 ? "contiguous rows (tensor cores)" : "padded rows (float tiles)"));
    const auto out = bonsai::cuda::to_host<double>(outs[k]->view());
    const auto dqkv = bonsai::cuda::to_host<double>(grads[k]->view());
    CHECK(rel_fro_cols(out, out_ref, 0, A) <= tol.out);
    CHECK(rel_fro_cols(dqkv, dqkv_ref, 0, A) <= tol.grad);
    CHECK(rel_fro_cols(dqkv, dqkv_ref, A, A + KV) <= tol.grad);
    CHECK(rel_fro_cols(dqkv, dqkv_ref, A + KV, A + 2 * KV) <= tol.grad);
  }
}

TEST_CASE("cuda: flash attention rejects bad shapes") {
  SKIP_WITHOUT_DEVICE();
  const AttentionShape s{2, 17, 3, 3, 64};  // qkv (34, 576), out (34, 192)
  Matrix<float, Device> qkv(34, 576), out(34, 192), dqkv(34, 576);
  bonsai::cuda::AttentionState<float> st;

  Matrix<float, Device> qkv_bad(34, 500), out_bad(34, 100);
  CHECK(throws_with([&] { bonsai::cuda::attention_forward<float>(s, qkv_bad.view(), out.view(), st); }, "(34, 500)",
                    "(34, 576)"));
  CHECK(throws_with([&] { bonsai::cuda::attention_forward<float>(s, qkv.view(), out_bad.view(), st); }, "(34, 100)",
                    "(34, 192)"));

  const AttentionShape s48{2, 17, 3, 3, 48};  // a head width without a kernel
  Matrix<float, Device> qkv48(34, 432), out48(34, 144);
  CHECK(throws_with([&] { bonsai::cuda::attention_forward<float>(s48, qkv48.view(), out48.view(), st); }, "head_dim = 48",
                    "32, 64 and 128"));

  const AttentionShape s_gqa{2, 17, 3, 2, 64};  // 3 query heads do not split over 2 kv heads
  CHECK(throws_with([&] { bonsai::cuda::attention_forward<float>(s_gqa, qkv.view(), out.view(), st); }, "not divisible",
                    "kv_heads = 2"));

  // Backward before any forward, and with another shape than the forward's.
  CHECK(throws_with([&] { bonsai::cuda::attention_backward<float>(s, qkv.view(), st, out.view(), dqkv.view()); },
                    "run attention_forward first", "seq 17"));
  bonsai::cuda::attention_forward<float>(s, qkv.view(), out.view(), st);
  const AttentionShape s16{2, 16, 3, 3, 64};
  Matrix<float, Device> qkv16(32, 576), out16(32, 192), dqkv16(32, 576);
  CHECK(throws_with([&] { bonsai::cuda::attention_backward<float>(s16, qkv16.view(), st, out16.view(), dqkv16.view()); },
                    "seq 17", "seq 16"));
  Matrix<float, Device> dqkv_bad(34, 192);
  CHECK(throws_with([&] { bonsai::cuda::attention_backward<float>(s, qkv.view(), st, out.view(), dqkv_bad.view()); },
                    "(34, 192)", "(34, 576)"));

  Tensor<float, 3, Device> lse_bad(2, 3, 16);
  CHECK(throws_with([&] { bonsai::cuda::attention_forward<float>(s, qkv.view(), out.view(), lse_bad.view()); }, "(2, 3, 16)",
                    "(2, 3, 17)"));
  bonsai::cuda::synchronize();
}
