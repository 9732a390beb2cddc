// cpu::attention_forward / attention_backward / attention_decode against a naive double
// reference (loops over heads, rows and keys) for multi-head and grouped-query attention, odd
// sequence lengths and head widths that are not powers of two; backward against central finite
// differences in double; decoding against the full forward; thread-count independence; errors.
#include <doctest/doctest.h>

#include <bonsai/backend/cpu/attention.hpp>
#include <bonsai/core/rng.hpp>
#include <cmath>
#include <cstring>
#include <vector>

using namespace bonsai;

namespace {

template <class T>
Matrix<T> random_qkv(const AttentionShape& s, Rng& rng, double stddev = 1.0) {
  Matrix<T> m(s.tokens(), s.qkv_width());  // (B*T, A + 2KV)
  fill_normal(m.view(), rng, 0.0, stddev);
  return m;
}

template <class T>
Tensor<T, 4> probs_buffer(const AttentionShape& s) {
  return Tensor<T, 4>(s.batch, s.heads, s.seq, s.seq);
}

/// The naive reference, in double: out (B*T, A) and P (B, Hq, T, T).
struct Reference {
  Matrix<double> out;
  Tensor<double, 4> probs;
};

template <class T>
Reference reference_forward(const AttentionShape& s, const Matrix<T>& qkv) {
  const index_t B = s.batch, Tn = s.seq, H = s.heads, hd = s.head_dim, A = s.q_width(),
                KV = s.kv_width(), G = s.group();
  Reference r{Matrix<double>(s.tokens(), A), Tensor<double, 4>(B, H, Tn, Tn)};
  const double scale = 1.0 / std::sqrt(double(hd));
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h) {
      const index_t g = h / G;
      for (index_t t = 0; t < Tn; ++t) {
        std::vector<double> sc(t + 1);
        double mx = -INFINITY;
        for (index_t u = 0; u <= t; ++u) {
          double d = 0;
          for (index_t i = 0; i < hd; ++i)
            d += double(qkv(b * Tn + t, h * hd + i)) * double(qkv(b * Tn + u, A + g * hd + i));
          sc[u] = d * scale;
          mx = std::max(mx, sc[u]);
        }
        double sum = 0;
        for (auto& x : sc) sum += (x = std::exp(x - mx));
        for (index_t u = 0; u <= t; ++u) r.probs(b, h, t, u) = sc[u] / sum;
        for (index_t i = 0; i < hd; ++i) {
          double o = 0;
          for (index_t u = 0; u <= t; ++u)
            o += r.probs(b, h, t, u) * double(qkv(b * Tn + u, A + KV + g * hd + i));
          r.out(b * Tn + t, h * hd + i) = o;
        }
      }
    }
  return r;
}

/// The reference's analytic gradient dqkv (B*T, A + 2KV) of sum(out ⊙ dout).
template <class T>
Matrix<double> reference_backward(const AttentionShape& s, const Matrix<T>& qkv, const Reference& r,
                                  const Matrix<T>& dout) {
  const index_t B = s.batch, Tn = s.seq, H = s.heads, hd = s.head_dim, A = s.q_width(),
                KV = s.kv_width(), G = s.group();
  Matrix<double> d(s.tokens(), s.qkv_width());
  const double scale = 1.0 / std::sqrt(double(hd));
  auto x = [&](index_t row, index_t col) { return double(qkv(row, col)); };
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h) {
      const index_t g = h / G, qc = h * hd, kc = A + g * hd, vc = A + KV + g * hd;
      for (index_t t = 0; t < Tn; ++t) {
        std::vector<double> dp(t + 1);
        double dot = 0;
        for (index_t u = 0; u <= t; ++u) {
          for (index_t i = 0; i < hd; ++i) dp[u] += double(dout(b * Tn + t, qc + i)) * x(b * Tn + u, vc + i);
          dot += dp[u] * r.probs(b, h, t, u);
        }
        for (index_t u = 0; u <= t; ++u) {
          const double p = r.probs(b, h, t, u), ds = p * (dp[u] - dot) * scale;
          for (index_t i = 0; i < hd; ++i) {
            d(b * Tn + t, qc + i) += ds * x(b * Tn + u, kc + i);
            d(b * Tn + u, kc + i) += ds * x(b * Tn + t, qc + i);
            d(b * Tn + u, vc + i) += p * double(dout(b * Tn + t, qc + i));
          }
        }
      }
    }
  return d;
}

template <class T, class U>
double max_rel_error(const T* a, const U* b, index_t n) {
  double err = 0, scale = 1;
  for (index_t i = 0; i < n; ++i) {
    err = std::max(err, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return err / scale;
}

const AttentionShape shapes[] = {
    {2, 7, 4, 4, 6},     // MHA, odd T, one row block
    {2, 67, 4, 2, 12},   // GQA 2:1, two row blocks, the last of 3 rows
    {1, 131, 4, 1, 10},  // multi-query, three row blocks
    {3, 64, 2, 2, 5},    // exactly one full block
};

}  // namespace

TEST_CASE("attention: forward matches the naive reference (MHA, GQA, MQA)") {
  Rng rng(2024);
  for (const auto& s : shapes) {
    CAPTURE(s);
    const auto qkv = random_qkv<float>(s, rng);
    Matrix<float> out(s.tokens(), s.q_width());
    auto probs = probs_buffer<float>(s);
    fill_normal(probs.view(), rng);  // stale contents must not leak
    cpu::attention_forward<float>(s, qkv.view(), out.view(), probs.view());
    const Reference ref = reference_forward(s, qkv);
    CHECK(max_rel_error(out.data(), ref.out.data(), out.size()) < 2e-6);
    CHECK(max_rel_error(probs.data(), ref.probs.data(), probs.size()) < 2e-6);  // zeros above the diagonal
  }
}

TEST_CASE("attention: block size does not change the forward or backward") {
  Rng rng(7);
  const AttentionShape s{2, 45, 4, 2, 8};
  const auto qkv = random_qkv<double>(s, rng), dout = [&] {
    Matrix<double> m(s.tokens(), s.q_width());
    fill_normal(m.view(), rng);
    return m;
  }();
  Matrix<double> out0(s.tokens(), s.q_width()), out1(s.tokens(), s.q_width());
  Matrix<double> d0(s.tokens(), s.qkv_width()), d1(s.tokens(), s.qkv_width());
  auto p0 = probs_buffer<double>(s), p1 = probs_buffer<double>(s), ds = probs_buffer<double>(s);
  cpu::detail::attention_forward_blocked<double>(s, qkv.view(), out0.view(), p0.view(), s.seq);
  cpu::detail::attention_backward_blocked<double>(s, qkv.view(), p0.view(), dout.view(), d0.view(), ds.view(), s.seq);
  for (index_t block : {1, 4, 16, 44, 100}) {
    CAPTURE(block);
    cpu::detail::attention_forward_blocked<double>(s, qkv.view(), out1.view(), p1.view(), block);
    cpu::detail::attention_backward_blocked<double>(s, qkv.view(), p1.view(), dout.view(), d1.view(), ds.view(), block);
    CHECK(max_rel_error(out1.data(), out0.data(), out0.size()) < 1e-13);
    CHECK(max_rel_error(p1.data(), p0.data(), p0.size()) < 1e-13);
    CHECK(max_rel_error(d1.data(), d0.data(), d0.size()) < 1e-13);
  }
}

TEST_CASE("attention: backward matches central finite differences in double") {
  Rng rng(11);
  for (const AttentionShape s : {AttentionShape{2, 5, 4, 2, 3}, AttentionShape{1, 6, 4, 1, 5}, AttentionShape{2, 4, 2, 2, 4}})
    for (index_t block : {index_t(2), cpu::detail::attention_block}) {
      CAPTURE(s);
      CAPTURE(block);
      auto qkv = random_qkv<double>(s, rng);
      Matrix<double> R(s.tokens(), s.q_width()), out(s.tokens(), s.q_width()), dqkv(s.tokens(), s.qkv_width());
      fill_normal(R.view(), rng);
      auto probs = probs_buffer<double>(s), ds = probs_buffer<double>(s);
      auto loss = [&] {
        cpu::detail::attention_forward_blocked<double>(s, qkv.view(), out.view(), probs.view(), block);
        double l = 0;
        for (index_t i = 0; i < out.size(); ++i) l += out.data()[i] * R.data()[i];
        return l;
      };
      loss();
      for (index_t i = 0; i < dqkv.size(); ++i) dqkv.data()[i] = NAN;  // written with =, never read
      cpu::detail::attention_backward_blocked<double>(s, qkv.view(), probs.view(), R.view(), dqkv.view(), ds.view(), block);
      const double h = 1e-5;
      double worst = 0;
      for (index_t i = 0; i < qkv.size(); ++i) {
        const double x0 = qkv.data()[i];
        qkv.data()[i] = x0 + h;
        const double lp = loss();
        qkv.data()[i] = x0 - h;
        const double lm = loss();
        qkv.data()[i] = x0;
        worst = std::max(worst, std::abs((lp - lm) / (2 * h) - dqkv.data()[i]));
      }
      CHECK(worst < 1e-8);
    }
}

TEST_CASE("attention: float backward matches the reference's analytic gradient") {
  Rng rng(12);
  for (const auto& s : shapes) {
    CAPTURE(s);
    const auto qkv = random_qkv<float>(s, rng);
    Matrix<float> out(s.tokens(), s.q_width()), dout(s.tokens(), s.q_width()), dqkv(s.tokens(), s.qkv_width());
    fill_normal(dout.view(), rng);
    auto probs = probs_buffer<float>(s), ds = probs_buffer<float>(s);
    fill_normal(ds.view(), rng);
    fill_normal(dqkv.view(), rng);
    cpu::attention_forward<float>(s, qkv.view(), out.view(), probs.view());
    cpu::attention_backward<float>(s, qkv.view(), probs.view(), dout.view(), dqkv.view(), ds.view());
    const Matrix<double> ref = reference_backward(s, qkv, reference_forward(s, qkv), dout);
    CHECK(max_rel_error(dqkv.data(), ref.data(), ref.size()) < 1e-5);
  }
}

TEST_CASE("attention: leading dimensions wider than the rows are honoured") {
  Rng rng(13);
  const AttentionShape s{2, 70, 4, 2, 6};
  Matrix<float> qkv_buf(s.tokens(), s.qkv_width() + 5), out_buf(s.tokens(), s.q_width() + 3);
  Matrix<float> dout_buf(s.tokens(), s.q_width() + 2), dqkv_buf(s.tokens(), s.qkv_width() + 4);
  fill_normal(qkv_buf.view(), rng);
  fill_normal(dout_buf.view(), rng);
  const auto qkv = columns(qkv_buf.view(), 2, s.qkv_width());
  const auto out = columns(out_buf.view(), 1, s.q_width());
  const auto dout = columns(dout_buf.view(), 1, s.q_width());
  const auto dqkv = columns(dqkv_buf.view(), 3, s.qkv_width());
  auto probs = probs_buffer<float>(s), ds = probs_buffer<float>(s);
  cpu::attention_forward<float>(s, qkv, out, probs.view());
  cpu::attention_backward<float>(s, qkv, probs.view(), dout, dqkv, ds.view());
  Matrix<float> q(s.tokens(), s.qkv_width()), o(s.tokens(), s.q_width()), d(s.tokens(), s.q_width());
  as_eigen(q) = as_eigen(MatrixView<const float>(qkv));
  as_eigen(d) = as_eigen(MatrixView<const float>(dout));
  const Reference ref = reference_forward(s, q);
  const Matrix<double> dref = reference_backward(s, q, ref, d);
  as_eigen(o) = as_eigen(out);
  Matrix<float> dq(s.tokens(), s.qkv_width());
  as_eigen(dq) = as_eigen(dqkv);
  CHECK(max_rel_error(o.data(), ref.out.data(), o.size()) < 2e-6);
  CHECK(max_rel_error(dq.data(), dref.data(), dq.size()) < 1e-5);
  for (index_t r = 0; r < s.tokens(); ++r) {  // columns outside the views are untouched
    REQUIRE(out_buf(r, 0) == 0.0f);
    REQUIRE(dqkv_buf(r, 0) == 0.0f);
    REQUIRE(dqkv_buf(r, s.qkv_width() + 3) == 0.0f);
  }
}

TEST_CASE("attention: decoding with a KV cache equals the full forward's rows") {
  Rng rng(14);
  for (const AttentionShape s : {AttentionShape{2, 75, 4, 2, 6}, AttentionShape{1, 20, 3, 1, 8}, AttentionShape{2, 9, 2, 2, 4}}) {
    CAPTURE(s);
    const auto qkv = random_qkv<float>(s, rng);
    Matrix<float> full(s.tokens(), s.q_width());
    auto probs = probs_buffer<float>(s);
    cpu::attention_forward<float>(s, qkv.view(), full.view(), probs.view());

    cpu::KvCache<float> cache(s.batch, s.kv_heads, s.seq + 3, s.head_dim);
    // Steps: a prefill of 5 tokens, single tokens, a chunk of 3, then single tokens to the end.
    std::vector<index_t> steps{5, 1, 1, 3};
    for (index_t done = 10; done < s.seq; ++done) steps.push_back(1);
    index_t pos = 0;
    for (index_t n : steps) {
      n = std::min(n, s.seq - pos);
      if (n == 0) break;
      const AttentionShape step{s.batch, n, s.heads, s.kv_heads, s.head_dim};
      Matrix<float> x(s.batch * n, s.qkv_width()), out(s.batch * n, s.q_width());
      for (index_t b = 0; b < s.batch; ++b)
        for (index_t r = 0; r < n; ++r)
          for (index_t c = 0; c < s.qkv_width(); ++c) x(b * n + r, c) = qkv(b * s.seq + pos + r, c);
      cpu::attention_decode<float>(step, x.view(), pos, cache, out.view());
      CHECK(cache.length() == pos + n);
      double err = 0;
      for (index_t b = 0; b < s.batch; ++b)
        for (index_t r = 0; r < n; ++r)
          for (index_t c = 0; c < s.q_width(); ++c)
            err = std::max(err, double(std::abs(out(b * n + r, c) - full(b * s.seq + pos + r, c))));
      CHECK(err < 1e-5);
      pos += n;
    }
    CHECK(pos == s.seq);

    // Rewinding: decoding the last token again at its own position gives the same row.
    const AttentionShape one{s.batch, 1, s.heads, s.kv_heads, s.head_dim};
    Matrix<float> x(s.batch, s.qkv_width()), out(s.batch, s.q_width());
    for (index_t b = 0; b < s.batch; ++b)
      for (index_t c = 0; c < s.qkv_width(); ++c) x(b, c) = qkv(b * s.seq + s.seq - 1, c);
    cpu::attention_decode<float>(one, x.view(), s.seq - 1, cache, out.view());
    for (index_t b = 0; b < s.batch; ++b)
      for (index_t c = 0; c < s.q_width(); ++c)
        CHECK(out(b, c) == doctest::Approx(full(b * s.seq + s.seq - 1, c)).epsilon(1e-4));
  }
}

TEST_CASE("attention: results are bit-identical for 1 and 2 threads") {
  Rng rng(15);
  const AttentionShape s{2, 150, 4, 2, 16};
  const auto qkv = random_qkv<float>(s, rng);
  Matrix<float> dout(s.tokens(), s.q_width());
  fill_normal(dout.view(), rng);
  const int threads = max_threads();
  auto run = [&](int n, Matrix<float>& out, Tensor<float, 4>& probs, Matrix<float>& dqkv) {
    set_threads(n);
    auto ds = probs_buffer<float>(s);
    cpu::attention_forward<float>(s, qkv.view(), out.view(), probs.view());
    cpu::attention_backward<float>(s, qkv.view(), probs.view(), dout.view(), dqkv.view(), ds.view());
  };
  Matrix<float> o1(s.tokens(), s.q_width()), o2(s.tokens(), s.q_width());
  Matrix<float> d1(s.tokens(), s.qkv_width()), d2(s.tokens(), s.qkv_width());
  auto p1 = probs_buffer<float>(s), p2 = probs_buffer<float>(s);
  run(1, o1, p1, d1);
  run(2, o2, p2, d2);
  set_threads(threads);
  CHECK(std::memcmp(o1.data(), o2.data(), sizeof(float) * o1.size()) == 0);
  CHECK(std::memcmp(p1.data(), p2.data(), sizeof(float) * p1.size()) == 0);
  CHECK(std::memcmp(d1.data(), d2.data(), sizeof(float) * d1.size()) == 0);
}

TEST_CASE("attention: the Workspace overloads equal the view overloads") {
  Rng rng(16);
  const AttentionShape s{2, 70, 4, 2, 8};
  const auto qkv = random_qkv<float>(s, rng);
  Matrix<float> dout(s.tokens(), s.q_width());
  fill_normal(dout.view(), rng);
  Matrix<float> o1(s.tokens(), s.q_width()), o2(s.tokens(), s.q_width());
  Matrix<float> d1(s.tokens(), s.qkv_width()), d2(s.tokens(), s.qkv_width());
  auto probs = probs_buffer<float>(s), ds = probs_buffer<float>(s);
  cpu::attention_forward<float>(s, qkv.view(), o1.view(), probs.view());
  cpu::attention_backward<float>(s, qkv.view(), probs.view(), dout.view(), d1.view(), ds.view());
  Workspace<float> ws;
  for (int step = 0; step < 2; ++step) {  // the second step reuses the grown workspaces
    cpu::attention_forward(s, qkv.view(), o2.view(), ws);
    cpu::attention_backward(s, qkv.view(), ws, dout.view(), d2.view());
    CHECK(ws.capacity() == s.probs_size());
    CHECK(std::memcmp(o1.data(), o2.data(), sizeof(float) * o1.size()) == 0);
    CHECK(std::memcmp(d1.data(), d2.data(), sizeof(float) * d1.size()) == 0);
  }
  Workspace<float> empty;
  CHECK_THROWS_WITH_AS(cpu::attention_backward(s, qkv.view(), empty, dout.view(), d2.view()),
                       doctest::Contains("the probs workspace holds 0 elements"), Error);
}

TEST_CASE("attention: bad shapes throw bonsai::Error naming them") {
  const AttentionShape s{2, 5, 4, 2, 3};  // qkv (10, 24), out (10, 12)
  Matrix<float> qkv(10, 24), out(10, 12), dqkv(10, 24);
  auto probs = probs_buffer<float>(s), ds = probs_buffer<float>(s);
  CHECK_NOTHROW(cpu::attention_forward<float>(s, qkv.view(), out.view(), probs.view()));

  CHECK_THROWS_WITH_AS(cpu::attention_forward<float>(AttentionShape{2, 5, 3, 2, 3}, qkv.view(), out.view(), probs.view()),
                       doctest::Contains("heads = 3 is not divisible by kv_heads = 2"), Error);
  CHECK_THROWS_WITH_AS(cpu::attention_forward<float>(AttentionShape{2, 5, 0, 2, 3}, qkv.view(), out.view(), probs.view()),
                       doctest::Contains("every size must be positive"), Error);
  Matrix<float> narrow(10, 23);
  CHECK_THROWS_WITH_AS(cpu::attention_forward<float>(s, narrow.view(), out.view(), probs.view()),
                       doctest::Contains("qkv has shape (10, 23) but AttentionShape{batch 2, seq 5, heads 4, "
                                         "kv_heads 2, head_dim 3} takes (10, 24)"),
                       Error);
  Matrix<float> out_bad(10, 11);
  CHECK_THROWS_WITH_AS(cpu::attention_forward<float>(s, qkv.view(), out_bad.view(), probs.view()),
                       doctest::Contains("out has shape (10, 11)"), Error);
  Tensor<float, 4> p_bad(2, 4, 5, 4);
  CHECK_THROWS_WITH_AS(cpu::attention_forward<float>(s, qkv.view(), out.view(), p_bad.view()),
                       doctest::Contains("probs has shape (2, 4, 5, 4)"), Error);
  CHECK_THROWS_WITH_AS(cpu::attention_backward<float>(s, qkv.view(), probs.view(), out_bad.view(), dqkv.view(), ds.view()),
                       doctest::Contains("dout has shape (10, 11)"), Error);
  CHECK_THROWS_WITH_AS(cpu::attention_backward<float>(s, qkv.view(), probs.view(), out.view(), narrow.view(), ds.view()),
                       doctest::Contains("dqkv has shape (10, 23) but qkv has shape (10, 24)"), Error);
  CHECK_THROWS_WITH_AS(cpu::attention_backward<float>(s, qkv.view(), probs.view(), out.view(), dqkv.view(), p_bad.view()),
                       doctest::Contains("dscores has shape (2, 4, 5, 4)"), Error);
  CHECK_THROWS_AS(cpu::attention_backward<float>(s, qkv.view(), probs.view(), out.view(), dqkv.view(), probs.view()), Error);

  cpu::KvCache<float> cache(2, 2, 8, 3);
  const AttentionShape step{2, 1, 4, 2, 3};
  Matrix<float> x(2, 24), o(2, 12);
  CHECK_THROWS_WITH_AS(cpu::attention_decode<float>(step, x.view(), 1, cache, o.view()),
                       doctest::Contains("positions [1, 2) do not follow the cache's filled positions [0, 0)"), Error);
  cpu::KvCache<float> wrong(2, 1, 8, 3);
  CHECK_THROWS_WITH_AS(cpu::attention_decode<float>(step, x.view(), 0, wrong, o.view()),
                       doctest::Contains("the cache holds (2, 1, 8, 3)"), Error);
  for (index_t p = 0; p < 8; ++p) cpu::attention_decode<float>(step, x.view(), p, cache, o.view());
  CHECK_THROWS_WITH_AS(cpu::attention_decode<float>(step, x.view(), 8, cache, o.view()),
                       doctest::Contains("within max_T = 8"), Error);
}
