// Attention over a kept set of query heads (spec sat.md §5, §9.2-3, §9.7): for any kept set,
// the compact path equals the full layer with the omitted heads' output columns zeroed, in
// outputs, dx and every gradient except those columns, whose gradient is exactly 0 on the
// kept path; omitted heads' q rows (and, under GQA, the k and v rows of groups with no kept
// head) get exactly zero gradient; central differences agree; bad kept sets are rejected.
// MHA and GQA, learned positions and RoPE, with and without a growth mask, in double.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/attention.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "support/finite_diff.hpp"

using namespace bonsai;

namespace {

constexpr index_t B = 2, T = 5;

GptConfig config(bool gqa, bool rope) {
  GptConfig c;
  c.vocab_size = 11;
  c.max_seq_len = T;
  c.d_model = 8;
  c.n_head = 4;
  c.n_kv_head = gqa ? 2 : 0;
  if (rope) c.pos = PosKind::rope;
  return c;
}

struct Fixture {
  GptConfig c;
  Attention<double> attn;
  ParamArena<double> arena;
  Attention<double>::Context ctx;
  std::vector<double> x, y, dy, dx;

  Fixture(const GptConfig& cfg, std::uint64_t seed)
      : c(cfg),
        attn(cfg),
        x(std::size_t(B * T * cfg.d_model)),
        y(x.size()),
        dy(x.size()),
        dx(x.size()) {
    attn.declare(arena, "attn.");
    arena.allocate();
    Rng rng(seed);
    for (index_t i = 0; i < arena.size(); ++i) arena.values()[i] = 0.4 * rng.normal();
    for (double& v : x) v = rng.normal();
    for (double& v : dy) v = rng.normal();
  }
  double run(const double* mask, std::span<const index_t> kept) {
    const index_t n = B * T, d = c.d_model;
    arena.zero_grads();
    attn.forward(arena, ctx, matrix_view(static_cast<const double*>(x.data()), n, d),
                 matrix_view(y.data(), n, d), B, T, mask, kept);
    attn.backward(arena, ctx, matrix_view(static_cast<const double*>(dy.data()), n, d),
                  matrix_view(dx.data(), n, d));
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * dy[i];
    return s;
  }
  std::vector<double> grads() const { return {arena.grads(), arena.grads() + arena.size()}; }
  /// Whether flat entry i is in an omitted head's output columns.
  bool omitted_proj(index_t i, const std::vector<bool>& kept) const {
    const ParamSlot& p = arena.slot("attn.proj.weight");
    if (i < p.offset || i >= p.offset + p.size()) return false;
    return !kept[std::size_t(((i - p.offset) % p.shape[1]) / c.head_dim())];
  }
};

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST_CASE(
    "sparse attention: the kept-head path equals the layer with omitted heads' outputs zeroed") {
  for (bool gqa : {false, true})
    for (bool rope : {false, true})
      for (const std::vector<index_t>& kept :
           {std::vector<index_t>{1, 2}, std::vector<index_t>{0, 1, 3}, std::vector<index_t>{2},
            std::vector<index_t>{0, 1, 2, 3}})
        for (bool growth : {false, true}) {
          CAPTURE(gqa);
          CAPTURE(rope);
          CAPTURE(kept.size());
          CAPTURE(growth);
          const GptConfig c = config(gqa, rope);
          Fixture fx(c, 3);
          std::vector<bool> in(4, false);
          for (index_t h : kept) in[std::size_t(h)] = true;
          std::vector<double> mask(std::size_t(c.attention_width() + 2 * c.kv_width()));
          for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = 0.5 + 0.03 * double(i);
          const double* m = growth ? mask.data() : nullptr;
          const double sparse = fx.run(m, kept);
          const auto y = fx.y, dx = fx.dx, g = fx.grads();
          // The oracle: every head computed, the omitted heads' output columns set to 0.
          const ParamSlot& proj = fx.arena.slot("attn.proj.weight");
          for (index_t i = proj.offset; i < proj.offset + proj.size(); ++i)
            if (fx.omitted_proj(i, in)) fx.arena.values()[i] = 0.0;
          const double dense = fx.run(m, {});
          CHECK(sparse == doctest::Approx(dense).epsilon(1e-13));
          CHECK(max_diff(y, fx.y) <= 1e-12);
          CHECK(max_diff(dx, fx.dx) <= 1e-12);
          const auto g0 = fx.grads();
          double worst = 0;
          for (index_t i = 0; i < fx.arena.size(); ++i) {
            if (fx.omitted_proj(i, in)) {
              CHECK(g[std::size_t(i)] == 0.0);
              continue;
            }
            worst = std::max(worst, std::abs(g[std::size_t(i)] - g0[std::size_t(i)]));
          }
          CHECK(worst <= 1e-12);
          // Omitted heads' q rows and the rows of key/value heads no kept head uses: exactly 0.
          const ParamSlot& qkv = fx.arena.slot("attn.qkv.weight");
          const index_t hd = c.head_dim(), A = c.attention_width(), group = c.n_head / c.kv_heads();
          for (index_t r = 0; r < qkv.shape[0]; ++r) {
            bool used = false;
            if (r < A)
              used = in[std::size_t(r / hd)];
            else
              for (index_t h = 0; h < 4; ++h)
                used = used || (in[std::size_t(h)] && ((r - A) % c.kv_width()) / hd == h / group);
            if (!used)
              for (index_t e = 0; e < c.d_model; ++e)
                CHECK(g[std::size_t(qkv.offset + r * c.d_model + e)] == 0.0);
          }
        }
}

TEST_CASE("sparse attention: central differences agree with the kept-head backward") {
  for (bool gqa : {false, true}) {
    CAPTURE(gqa);
    Fixture fx(config(gqa, true), 9);
    const std::vector<index_t> kept = {0, 3};
    fx.run(nullptr, kept);
    const auto g = fx.grads();
    const auto dx = fx.dx;
    const auto loss = [&] { return fx.run(nullptr, kept); };
    const double worst = std::max(
        test::worst_central_difference(fx.arena.values(), fx.arena.size(), 2, g.data(), loss),
        test::worst_central_difference(fx.x.data(), index_t(fx.x.size()), 3, dx.data(), loss));
    CHECK(worst <= 1e-7);
  }
}

TEST_CASE("sparse attention: bad kept heads are rejected with a sentence") {
  Fixture fx(config(false, false), 1);
  CHECK_THROWS_WITH_AS(fx.run(nullptr, std::vector<index_t>{2, 1}),
                       doctest::Contains("increasing indices below 4"), Error);
  CHECK_THROWS_WITH_AS(fx.run(nullptr, std::vector<index_t>{4}),
                       doctest::Contains("increasing indices below 4"), Error);
}
