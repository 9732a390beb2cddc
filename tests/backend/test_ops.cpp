// The op seam on the host: every Ops<Host> op gives, bit for bit, what the CPU kernel it stands
// for gives on the same random inputs (outputs, saved state, accumulated gradients), and the
// seam's state types are the CPU backend's.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <cstring>
#include <type_traits>
#include <vector>

using namespace bonsai;

namespace {

using Ops_ = Ops<Host>;

Matrix<float> random(index_t rows, index_t cols, Rng& rng) {
  Matrix<float> m(rows, cols);
  fill_normal(m.view(), rng, 0.0, 1.0);
  return m;
}

template <class A, class B>
bool same(const A& a, const B& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

MatrixView<const float, Host> c(const Matrix<float>& m) { return m.view(); }

}  // namespace

static_assert(std::is_same_v<NormState<float>, cpu::NormState<float>> &&
                  std::is_same_v<RopeTable<float>, cpu::RopeTable<float>> &&
                  std::is_same_v<KvCache<float>, cpu::KvCache<float>>,
              "Ops<Host>'s state types are the CPU backend's");

TEST_CASE("Ops<Host>: embedding forward and backward") {
  Rng rng(1);
  const index_t V = 11, C = 6, B = 2, T = 5, P = 8;
  const Matrix<float> wte = random(V, C, rng), wpe = random(P, C, rng), dy = random(B * T, C, rng);
  std::vector<std::int32_t> tok(B * T);
  for (auto& t : tok) t = std::int32_t(rng.uniform() * double(V));
  Matrix<float> y1(B * T, C), y2(B * T, C);
  EmbeddingState<Host> es;
  Ops_::embedding_forward<float>(tok.data(), B, T, 2, c(wte), c(wpe), y1.view(), es);
  cpu::embedding_forward<float>(tok.data(), B, T, 2, c(wte), c(wpe), y2.view());
  CHECK(same(y1, y2));
  Matrix<float> dwte1 = random(V, C, rng), dwpe1 = random(P, C, rng);
  Matrix<float> dwte2(V, C), dwpe2(P, C);
  as_eigen(dwte2) = as_eigen(dwte1);
  as_eigen(dwpe2) = as_eigen(dwpe1);
  Ops_::embedding_backward<float>(tok.data(), B, T, c(dy), dwte1.view(), dwpe1.view(), es);
  cpu::embedding_backward<float>(tok.data(), B, T, c(dy), dwte2.view(), dwpe2.view());
  CHECK(same(dwte1, dwte2));
  CHECK(same(dwpe1, dwpe2));
}

TEST_CASE("Ops<Host>: LayerNorm and RMSNorm forward and backward, with and without a mask") {
  Rng rng(2);
  const index_t N = 7, C = 12;
  const Matrix<float> x = random(N, C, rng), dy = random(N, C, rng), w = random(1, C, rng),
                      b = random(1, C, rng);
  std::vector<float> mask(C, 1.0f);
  for (index_t i = C / 2; i < C; ++i) mask[std::size_t(i)] = 0.25f;
  for (const float* m : {static_cast<const float*>(nullptr), static_cast<const float*>(mask.data())}) {
    for (bool layernorm : {true, false}) {
      CAPTURE(layernorm);
      Matrix<float> y1(N, C), y2(N, C), dx1 = random(N, C, rng), dx2(N, C), dw1(1, C), dw2(1, C),
          db1(1, C), db2(1, C);
      as_eigen(dx2) = as_eigen(dx1);
      as_eigen(dw1).setConstant(0.5f);
      as_eigen(dw2).setConstant(0.5f);
      as_eigen(db1).setConstant(-1.0f);
      as_eigen(db2).setConstant(-1.0f);
      NormState<float> s1;
      cpu::NormState<float> s2;
      if (layernorm) {
        Ops_::layernorm_forward<float>(c(x), w.data(), b.data(), y1.view(), 1e-5f, s1, m);
        cpu::layernorm_forward<float>(c(x), w.data(), b.data(), y2.view(), 1e-5f, s2, m);
        Ops_::layernorm_backward<float>(c(dy), c(x), w.data(), dx1.view(), dw1.data(), db1.data(),
                                        true, s1, m);
        cpu::layernorm_backward<float>(c(dy), c(x), w.data(), dx2.view(), dw2.data(), db2.data(),
                                       true, s2, m);
      } else {
        Ops_::rmsnorm_forward<float>(c(x), w.data(), y1.view(), 1e-5f, s1, m);
        cpu::rmsnorm_forward<float>(c(x), w.data(), y2.view(), 1e-5f, s2, m);
        Ops_::rmsnorm_backward<float>(c(dy), c(x), w.data(), dx1.view(), dw1.data(), false, s1, m);
        cpu::rmsnorm_backward<float>(c(dy), c(x), w.data(), dx2.view(), dw2.data(), false, s2, m);
      }
      CHECK(same(y1, y2));
      CHECK(same(dx1, dx2));
      CHECK(same(dw1, dw2));
      CHECK(same(db1, db2));
    }
  }
}

TEST_CASE("Ops<Host>: RoPE, attention forward, backward and decoding") {
  Rng rng(3);
  const AttentionShape s{2, 9, 4, 2, 6};  // grouped-query: 4 query heads over 2 kv heads
  const RopeTable<float> table(16, s.head_dim);
  Matrix<float> qkv1 = random(s.tokens(), s.qkv_width(), rng), qkv2(s.tokens(), s.qkv_width());
  as_eigen(qkv2) = as_eigen(qkv1);
  Ops_::rope_forward<float>(qkv1.view(), s, table, 3);
  cpu::rope_forward<float>(qkv2.view(), s, table, 3);
  CHECK(same(qkv1, qkv2));
  Ops_::rope_backward<float>(qkv1.view(), s, table, 1);
  cpu::rope_backward<float>(qkv2.view(), s, table, 1);
  CHECK(same(qkv1, qkv2));

  Matrix<float> out1(s.tokens(), s.q_width()), out2(s.tokens(), s.q_width());
  AttentionState<float> st1;
  Workspace<float> st2;
  Ops_::attention_forward<float>(s, c(qkv1), out1.view(), st1);
  cpu::attention_forward<float>(s, c(qkv2), out2.view(), st2);
  CHECK(same(out1, out2));
  const Matrix<float> dout = random(s.tokens(), s.q_width(), rng);
  Matrix<float> dqkv1(s.tokens(), s.qkv_width()), dqkv2(s.tokens(), s.qkv_width());
  Ops_::attention_backward<float>(s, c(qkv1), st1, c(dout), dqkv1.view());
  cpu::attention_backward<float>(s, c(qkv2), st2, c(dout), dqkv2.view());
  CHECK(same(dqkv1, dqkv2));

  KvCache<float> k1(s.batch, s.kv_heads, 12, s.head_dim);
  cpu::KvCache<float> k2(s.batch, s.kv_heads, 12, s.head_dim);
  const AttentionShape step{s.batch, 3, s.heads, s.kv_heads, s.head_dim};
  const Matrix<float> fresh = random(step.tokens(), step.qkv_width(), rng);
  Matrix<float> d1(step.tokens(), step.q_width()), d2(step.tokens(), step.q_width());
  Ops_::attention_decode<float>(step, c(fresh), 0, k1, d1.view());
  cpu::attention_decode<float>(step, c(fresh), 0, k2, d2.view());
  CHECK(same(d1, d2));
  CHECK(k1.length() == k2.length());
}

TEST_CASE("Ops<Host>: softmax cross-entropy and GEMM") {
  Rng rng(4);
  const index_t N = 6, V = 13;
  Matrix<float> l1 = random(N, V, rng), l2(N, V);
  as_eigen(l2) = as_eigen(l1);
  std::vector<std::int32_t> targets{0, 3, -1, 12, 5, 7};
  LossState<Host> ls;
  const double a = Ops_::softmax_cross_entropy<float>(l1.view(), targets.data(), true, 0.5f, ls);
  const double b = cpu::softmax_cross_entropy<float>(l2.view(), targets.data(), true, 0.5f);
  CHECK(a == b);
  CHECK(same(l1, l2));

  const Matrix<float> x = random(5, 7, rng), w = random(9, 7, rng);
  Matrix<float> y1 = random(5, 9, rng), y2(5, 9);
  as_eigen(y2) = as_eigen(y1);
  Ops_::gemm<float>(2.0f, c(x), Op::N, c(w), Op::T, 1.0f, y1.view());
  cpu::gemm<float>(2.0f, c(x), Op::N, c(w), Op::T, 1.0f, y2.view());
  CHECK(same(y1, y2));
}

TEST_CASE("Ops<Host>: residual adds, column scaling, GELU and SwiGLU") {
  Rng rng(5);
  const index_t N = 5, C = 8;
  const Matrix<float> x = random(N, C, rng), b = random(N, C, rng), g = random(N, C, rng),
                      dh = random(N, C, rng), col = random(1, C, rng);
  Matrix<float> y1(N, C), y2(N, C);
  Ops_::add<float>(c(x), c(b), y1.view());
  cpu::add<float>(c(x), c(b), y2.view());
  CHECK(same(y1, y2));
  Ops_::add_scaled<float>(c(x), c(b), col.data(), y1.view());
  cpu::add_scaled<float>(c(x), c(b), col.data(), y2.view());
  CHECK(same(y1, y2));
  Ops_::scaled_columns<float>(c(x), col.data(), y1.view());
  cpu::scaled_columns<float>(c(x), col.data(), y2.view());
  CHECK(same(y1, y2));
  Ops_::scale_columns<float>(y1.view(), col.data());
  cpu::scale_columns<float>(y2.view(), col.data());
  CHECK(same(y1, y2));
  Ops_::gelu_forward<float>(c(x), y1.view());
  cpu::gelu_forward<float>(c(x), y2.view());
  CHECK(same(y1, y2));
  CHECK(y1(2, 3) == epilogue::gelu(x(2, 3)));
  Ops_::gelu_backward<float>(c(dh), c(x), y1.view());
  cpu::gelu_backward<float>(c(dh), c(x), y2.view());
  CHECK(same(y1, y2));
  Ops_::swiglu_forward<float>(c(g), c(x), y1.view());
  cpu::swiglu_forward<float>(c(g), c(x), y2.view());
  CHECK(same(y1, y2));
  Matrix<float> dg1(N, C), dg2(N, C);
  Ops_::swiglu_backward<float>(c(dh), c(g), c(x), dg1.view(), y1.view());
  cpu::swiglu_backward<float>(c(dh), c(g), c(x), dg2.view(), y2.view());
  CHECK(same(y1, y2));
  CHECK(same(dg1, dg2));
}

TEST_CASE("Ops<Host>: SAT's gathers and scatter-adds of rows and column blocks") {
  Rng rng(6);
  const Matrix<float> src = random(6, 4, rng);
  const std::vector<index_t> rows{4, 1, 4};  // a repeated row adds twice, in order
  Matrix<float> picked(3, 4);
  Ops_::gather_rows<float>(c(src), rows, picked.view());
  for (index_t i = 0; i < 3; ++i)
    for (index_t e = 0; e < 4; ++e) CHECK(picked(i, e) == src(rows[std::size_t(i)], e));
  Matrix<float> sum(6, 4);
  as_eigen(sum) = as_eigen(src);
  Ops_::scatter_add_rows<float>(c(picked), rows, sum.view());
  for (index_t e = 0; e < 4; ++e) {
    CHECK(sum(4, e) == (src(4, e) + src(4, e)) + src(4, e));
    CHECK(sum(1, e) == src(1, e) + src(1, e));
    CHECK(sum(0, e) == src(0, e));
  }

  const Matrix<float> proj = random(3, 12, rng);  // (d, A): 4 heads of 3
  const std::vector<index_t> heads{3, 0};
  Matrix<float> kept(3, 6);
  Ops_::gather_column_blocks<float>(c(proj), heads, 3, kept.view());
  for (index_t o = 0; o < 3; ++o)
    for (index_t e = 0; e < 3; ++e) {
      CHECK(kept(o, e) == proj(o, 9 + e));
      CHECK(kept(o, 3 + e) == proj(o, e));
    }
  Matrix<float> back(3, 12);
  Ops_::scatter_add_column_blocks<float>(c(kept), heads, 3, back.view());
  for (index_t o = 0; o < 3; ++o)
    for (index_t j = 0; j < 12; ++j) CHECK(back(o, j) == (j < 3 || j >= 9 ? proj(o, j) : 0.0f));
  Matrix<float> small(2, 4);
  CHECK_THROWS_WITH(Ops_::gather_rows<float>(c(src), rows, small.view()),
                    doctest::Contains("gather_rows: the compact matrix has shape (2, 4)"));
}
