// The Mixture-of-Experts FFN (nn/moe.hpp): its output equals a per-token reference that runs
// every expert on the token alone and gates by hand, for both gatings, k = 1, 2 and E, GELU and
// SwiGLU, Dense, LowRank and BlockDense experts; central differences agree with backward for the
// router, every expert parameter and x, with and without the load-balancing loss; the loss
// matches hand computations (1 for a uniform router); bad shapes and top-k values are rejected
// with sentences naming both values. In double. Upcycling a dense FFN into this layer is tested
// in tests/grow/test_upcycle.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <bonsai/bonsai.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/nn/moe.hpp>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "support/finite_diff.hpp"

using namespace bonsai;

namespace {

constexpr index_t d = 6, f = 10, n = 7, n_experts = 4;

template <class Up, class Down>
struct Fixture {
  Moe<Up, Down> moe;
  ParamArena<double> arena;
  typename Moe<Up, Down>::Context ctx;
  index_t tokens;
  std::vector<double> x, y, dy, dx;

  Fixture(const Up& up, const Down& down, ActKind act, index_t k, Gating gating, std::uint64_t seed,
          index_t tokens_ = n, index_t experts = n_experts)
      : moe(up, down, act, experts, k, gating),
        tokens(tokens_),
        x(std::size_t(tokens * d)),
        y(x.size()),
        dy(x.size()),
        dx(x.size()) {
    moe.declare(arena, "moe.");
    arena.allocate();
    Rng rng(seed);
    for (index_t i = 0; i < arena.size(); ++i) arena.values()[i] = 0.4 * rng.normal();
    // A wider router spreads the logits, so the top-k boundary is far from ties.
    auto r = arena.value("moe.router.weight");
    for (index_t i = 0; i < r.size(); ++i) r.data()[i] = 1.5 * rng.normal();
    for (double& v : x) v = rng.normal();
    for (double& v : dy) v = rng.normal();
  }
  MatrixView<const double> xv() const { return matrix_view(x.data(), tokens, d); }
  /// Forward only; returns aux.
  double forward() { return moe.forward(arena, ctx, xv(), matrix_view(y.data(), tokens, d)); }
  /// Forward and backward from zeroed gradients; returns sum(y * dy) + aux_weight * aux.
  double run(double aux_weight) {
    arena.zero_grads();
    const double aux = forward();
    moe.backward(arena, ctx, matrix_view(static_cast<const double*>(dy.data()), tokens, d),
                 matrix_view(dx.data(), tokens, d), aux_weight);
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * dy[i];
    return s + aux_weight * aux;
  }
  std::vector<double> grads() const { return {arena.grads(), arena.grads() + arena.size()}; }
};

using test::max_diff;

struct Reference {
  std::vector<double> y;  // (N, d)
  double aux = 0;
};

/// The layer computed token by token: every expert's output on the token alone (its own Mlp
/// forward), the router's logits, softmax, choice and weights by hand. `perm` feeds expert
/// perm[e]'s output where expert e's belongs (the identity for the true reference); `gating`
/// may differ from the layer's.
template <class Up, class Down>
Reference reference(Fixture<Up, Down>& fx, Gating gating, const std::vector<index_t>& perm) {
  const Moe<Up, Down>& moe = fx.moe;
  const index_t E = moe.experts(), k = moe.top_k(), N = fx.tokens;
  const double* wr = fx.arena.value("moe.router.weight").data();  // (E, d)
  Reference ref{std::vector<double>(std::size_t(N * d), 0.0), 0.0};
  const std::size_t ne = std::size_t(E);
  std::vector<double> f_count(ne, 0.0), p_mean(ne, 0.0);
  for (index_t t = 0; t < N; ++t) {
    const double* xt = fx.x.data() + t * d;
    std::vector<std::vector<double>> out(ne, std::vector<double>(std::size_t{d}));
    std::vector<double> z(ne), p(ne);
    for (index_t e = 0; e < E; ++e) {
      typename Mlp<Up, Down>::Context c;
      moe.expert(perm[std::size_t(e)])
          .forward(fx.arena, c, matrix_view(xt, 1, d),
                   matrix_view(out[std::size_t(e)].data(), 1, d));
      double s = 0;
      for (index_t i = 0; i < d; ++i) s += wr[e * d + i] * xt[i];
      z[std::size_t(e)] = s;
    }
    const double zmax = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (index_t e = 0; e < E; ++e) sum += std::exp(z[std::size_t(e)] - zmax);
    for (index_t e = 0; e < E; ++e) p[std::size_t(e)] = std::exp(z[std::size_t(e)] - zmax) / sum;
    std::vector<index_t> order(ne);
    std::iota(order.begin(), order.end(), index_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](index_t a, index_t b) { return z[std::size_t(a)] > z[std::size_t(b)]; });
    double chosen_sum = 0;
    for (index_t j = 0; j < k; ++j)
      chosen_sum += std::exp(z[std::size_t(order[std::size_t(j)])] - zmax);
    for (index_t j = 0; j < k; ++j) {
      const std::size_t e = std::size_t(order[std::size_t(j)]);
      const double w = gating == Gating::topk_softmax ? std::exp(z[e] - zmax) / chosen_sum : p[e];
      for (index_t i = 0; i < d; ++i) ref.y[std::size_t(t * d + i)] += w * out[e][std::size_t(i)];
      f_count[e] += 1;
    }
    for (index_t e = 0; e < E; ++e) p_mean[std::size_t(e)] += p[std::size_t(e)] / double(N);
  }
  for (index_t e = 0; e < E; ++e)
    ref.aux += double(E) * f_count[std::size_t(e)] / double(N * k) * p_mean[std::size_t(e)];
  return ref;
}

template <class Up, class Down>
Reference reference(Fixture<Up, Down>& fx) {
  std::vector<index_t> id(std::size_t(fx.moe.experts()));
  std::iota(id.begin(), id.end(), index_t(0));
  return reference(fx, fx.moe.gating(), id);
}

template <class Up, class Down>
void check_against_reference(const Up& up, const Down& down) {
  for (Gating g : {Gating::topk_softmax, Gating::softmax_topk})
    for (ActKind act : {ActKind::gelu, ActKind::swiglu})
      for (index_t k : {index_t(1), index_t(2), n_experts}) {
        CAPTURE(std::string(to_string(g)));
        CAPTURE(std::string(to_string(act)));
        CAPTURE(k);
        Fixture<Up, Down> fx(up, down, act, k, g, 11);
        const double aux = fx.forward();
        const Reference ref = reference(fx);
        CHECK(max_diff(fx.y, ref.y) <= 1e-12);
        CHECK(aux == doctest::Approx(ref.aux).epsilon(1e-13));
        CHECK(fx.ctx.aux == aux);
        // Every assignment lands on some expert; with k = E each expert takes every token.
        index_t total = 0;
        for (index_t e = 0; e < n_experts; ++e) total += fx.ctx.routed(e);
        CHECK(total == n * k);
        if (k == n_experts)
          for (index_t e = 0; e < n_experts; ++e) CHECK(fx.ctx.routed(e) == n);
        // A second call on the same context gives the same bits.
        const auto y0 = fx.y;
        fx.forward();
        CHECK(fx.y == y0);
      }
}

/// The smallest gap between consecutive sorted logits of any token (> 0: no ties anywhere).
template <class Up, class Down>
double smallest_logit_gap(const Fixture<Up, Down>& fx) {
  const index_t E = fx.moe.experts();
  double gap = INFINITY;
  for (index_t t = 0; t < fx.tokens; ++t) {
    std::vector<double> z(fx.ctx.z.data() + t * E, fx.ctx.z.data() + (t + 1) * E);
    std::sort(z.begin(), z.end());
    for (std::size_t i = 1; i < z.size(); ++i) gap = std::min(gap, z[i] - z[i - 1]);
  }
  return gap;
}

/// Central differences of sum(y * dy) + aux_weight aux over every parameter and every entry of
/// x; no probe may change any token's choice of experts.
template <class Up, class Down>
void check_gradients(Fixture<Up, Down>& fx, double aux_weight, double tol = 1e-7) {
  fx.run(aux_weight);
  const auto g = fx.grads();
  const auto dx = fx.dx;
  const auto choice = fx.ctx.choice;
  // h = 1e-6 moves a logit by at most ~1e-5 here; the gaps are far larger.
  REQUIRE(smallest_logit_gap(fx) > 1e-3);
  index_t flips = 0;
  const auto loss = [&] {
    const double l = fx.run(aux_weight);
    if (fx.ctx.choice != choice) ++flips;
    return l;
  };
  const double worst_params =
      test::worst_central_difference(fx.arena.values(), fx.arena.size(), 1, g.data(), loss);
  const double worst_x =
      test::worst_central_difference(fx.x.data(), index_t(fx.x.size()), 1, dx.data(), loss);
  CHECK(flips == 0);
  CHECK(worst_params <= tol);
  CHECK(worst_x <= tol);
}

}  // namespace

TEST_CASE("moe: Dense experts equal the per-token reference over all experts") {
  check_against_reference(Dense<double>(d, f), Dense<double>(f, d));
}

TEST_CASE("moe: LowRank experts equal the per-token reference over all experts") {
  check_against_reference(LowRank<double>(d, f, 3), LowRank<double>(f, d, 3));
}

TEST_CASE("moe: BlockDense experts equal the per-token reference over all experts") {
  check_against_reference(block_dense<double>(d, f, 4, 2), block_dense<double>(f, d, 4, 2));
}

TEST_CASE("moe: many tokens run the parallel paths and still equal the reference") {
  using D = Dense<double>;
  for (Gating g : {Gating::topk_softmax, Gating::softmax_topk}) {
    CAPTURE(std::string(to_string(g)));
    Fixture<D, D> fx(D(d, f), D(f, d), ActKind::swiglu, 2, g, 5, 3000, 8);
    fx.forward();
    const Reference ref = reference(fx);
    CHECK(max_diff(fx.y, ref.y) <= 1e-11);
    CHECK(fx.ctx.aux == doctest::Approx(ref.aux).epsilon(1e-12));
    const auto y0 = fx.y;
    fx.forward();
    CHECK(fx.y == y0);
  }
}

TEST_CASE("moe: a context reused with a different token count matches a fresh one") {
  using D = Dense<double>;
  Fixture<D, D> big(D(d, f), D(f, d), ActKind::gelu, 2, Gating::topk_softmax, 21);
  big.forward();
  const auto y_big = big.y;
  // The same layer and parameters on the first 3 tokens, through big's context.
  Fixture<D, D> small(D(d, f), D(f, d), ActKind::gelu, 2, Gating::topk_softmax, 21, 3);
  std::copy_n(big.arena.values(), big.arena.size(), small.arena.values());
  std::copy_n(big.x.data(), 3 * d, small.x.data());
  std::vector<double> y3(std::size_t(3 * d));
  big.moe.forward(big.arena, big.ctx, small.xv(), matrix_view(y3.data(), 3, d));
  small.forward();
  CHECK(y3 == small.y);
  CHECK(max_diff(y3, std::vector<double>(y_big.begin(), y_big.begin() + 3 * d)) <= 1e-13);
  big.forward();
  CHECK(big.y == y_big);
}

TEST_CASE("moe: central differences agree with backward for every parameter and x") {
  using D = Dense<double>;
  for (Gating g : {Gating::topk_softmax, Gating::softmax_topk})
    for (ActKind act : {ActKind::gelu, ActKind::swiglu})
      for (index_t k : {index_t(1), index_t(2), n_experts})
        for (double aux_weight : {0.0, 0.7}) {
          CAPTURE(std::string(to_string(g)));
          CAPTURE(std::string(to_string(act)));
          CAPTURE(k);
          CAPTURE(aux_weight);
          Fixture<D, D> fx(D(d, f), D(f, d), act, k, g, 8);
          check_gradients(fx, aux_weight);
        }
}

TEST_CASE("moe: central differences agree with backward for LowRank experts") {
  using L = LowRank<double>;
  for (Gating g : {Gating::topk_softmax, Gating::softmax_topk}) {
    CAPTURE(std::string(to_string(g)));
    Fixture<L, L> fx(L(d, f, 3), L(f, d, 3), ActKind::swiglu, 2, g, 8);
    check_gradients(fx, 0.7);
  }
}

TEST_CASE("moe: the load-balancing loss alone trains only the router, and correctly") {
  using D = Dense<double>;
  for (Gating g : {Gating::topk_softmax, Gating::softmax_topk}) {
    CAPTURE(std::string(to_string(g)));
    Fixture<D, D> fx(D(d, f), D(f, d), ActKind::gelu, 2, g, 8);
    std::fill(fx.dy.begin(), fx.dy.end(), 0.0);
    check_gradients(fx, 1.0);
    fx.run(1.0);
    const ParamSlot& router = fx.arena.slot("moe.router.weight");
    double router_norm = 0, expert_norm = 0;
    for (const ParamSlot& s : fx.arena.slots())
      for (index_t i = 0; i < s.size(); ++i)
        (&s == &router ? router_norm : expert_norm) += std::abs(fx.arena.grads()[s.offset + i]);
    CHECK(router_norm > 1e-3);
    CHECK(expert_norm == 0.0);
  }
}

TEST_CASE("moe: the load-balancing loss is 1 for a uniform router and ties go to low indices") {
  using D = Dense<double>;
  for (Gating g : {Gating::topk_softmax, Gating::softmax_topk})
    for (index_t k : {index_t(1), index_t(2), n_experts}) {
      CAPTURE(std::string(to_string(g)));
      CAPTURE(k);
      Fixture<D, D> fx(D(d, f), D(f, d), ActKind::gelu, k, g, 4);
      auto r = fx.arena.value("moe.router.weight");
      std::fill_n(r.data(), r.size(), 0.0);
      // p = 1/E everywhere, so aux = E sum_e f_e / E = 1 whatever the assignment.
      CHECK(fx.forward() == 1.0);
      for (index_t t = 0; t < n; ++t)
        for (index_t j = 0; j < k; ++j) CHECK(fx.ctx.choice[std::size_t(t * k + j)] == j);
      for (index_t e = 0; e < n_experts; ++e) CHECK(fx.ctx.routed(e) == (e < k ? n : 0));
      const double w = g == Gating::topk_softmax ? 1.0 / double(k) : 1.0 / double(n_experts);
      for (index_t t = 0; t < n; ++t)
        for (index_t j = 0; j < k; ++j) CHECK(fx.ctx.w.data()[t * k + j] == doctest::Approx(w));
      CHECK(max_diff(fx.y, reference(fx).y) <= 1e-12);
    }
}

TEST_CASE("moe: the load-balancing loss and its router gradient match a hand computation") {
  // d = 1, E = 2, k = 1; x = (2, 1), Wr = (1, 0): z = (2, 0) and (1, 0), both tokens choose
  // expert 0, so f = (1, 0) and aux = 2 (sigma(2) + sigma(1)) / 2. With dy = 0 and aux weight 1,
  // d aux / d p[t, e] = a_e = E f_e / N = (1, 0), dz[t, 0] = p0 (1 - p0) = -dz[t, 1], and
  // dWr = dz^T x.
  using D = Dense<double>;
  Moe<D, D> moe(D(1, 3), D(3, 1), ActKind::gelu, 2, 1, Gating::softmax_topk);
  ParamArena<double> arena;
  moe.declare(arena, "");
  arena.allocate();
  Rng rng(2);
  for (index_t i = 0; i < arena.size(); ++i) arena.values()[i] = rng.normal();
  auto wr = arena.value("router.weight");
  REQUIRE(wr.size() == 2);
  wr.data()[0] = 1.0;
  wr.data()[1] = 0.0;
  std::vector<double> x = {2.0, 1.0}, y(2), dy(2, 0.0), dx(2);
  Moe<D, D>::Context ctx;
  const double aux =
      moe.forward(arena, ctx, matrix_view(static_cast<const double*>(x.data()), 2, 1),
                  matrix_view(y.data(), 2, 1));
  const auto sigma = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  CHECK(aux == doctest::Approx(1.6118556566078872).epsilon(1e-15));
  CHECK(aux == doctest::Approx(sigma(2) + sigma(1)).epsilon(1e-15));
  CHECK(ctx.routed(0) == 2);
  CHECK(ctx.routed(1) == 0);
  moe.backward(arena, ctx, matrix_view(static_cast<const double*>(dy.data()), 2, 1),
               matrix_view(dx.data(), 2, 1), 1.0);
  const double dw0 = 2 * sigma(2) * sigma(-2) + 1 * sigma(1) * sigma(-1);
  auto g = arena.grad("router.weight");
  CHECK(g.data()[0] == doctest::Approx(dw0).epsilon(1e-14));
  CHECK(g.data()[1] == doctest::Approx(-dw0).epsilon(1e-14));
  // dx = dz Wr: only Wr[0] = 1 is non-zero.
  CHECK(dx[0] == doctest::Approx(sigma(2) * sigma(-2)).epsilon(1e-14));
  CHECK(dx[1] == doctest::Approx(sigma(1) * sigma(-1)).epsilon(1e-14));
  // The expert that took no tokens gets exactly zero gradient.
  for (const ParamSlot& s : arena.slots())
    if (s.name.starts_with("experts.1."))
      for (index_t i = 0; i < s.size(); ++i) CHECK(arena.grads()[s.offset + i] == 0.0);
}

TEST_CASE("moe: float experts agree with double ones") {
  // The same parameters and inputs in float and in double, through forward and backward.
  using D = Dense<double>;
  using F = Dense<float>;
  Fixture<D, D> fx(D(d, f), D(f, d), ActKind::swiglu, 2, Gating::softmax_topk, 9);
  fx.run(0.5);
  Moe<F, F> moe(F(d, f), F(f, d), ActKind::swiglu, n_experts, 2, Gating::softmax_topk);
  ParamArena<float> arena;
  moe.declare(arena, "moe.");
  arena.allocate();
  for (index_t i = 0; i < arena.size(); ++i) arena.values()[i] = float(fx.arena.values()[i]);
  std::vector<float> x(fx.x.begin(), fx.x.end()), dy(fx.dy.begin(), fx.dy.end()), y(x.size()),
      dx(x.size());
  Moe<F, F>::Context ctx;
  const float aux = moe.forward(arena, ctx, matrix_view(static_cast<const float*>(x.data()), n, d),
                                matrix_view(y.data(), n, d));
  moe.backward(arena, ctx, matrix_view(static_cast<const float*>(dy.data()), n, d),
               matrix_view(dx.data(), n, d), 0.5f);
  CHECK(double(aux) == doctest::Approx(fx.ctx.aux).epsilon(1e-5));
  const auto worst = [](const auto& a, const auto& b, std::size_t size) {
    double m = 0;
    for (std::size_t i = 0; i < size; ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
  };
  CHECK(worst(y, fx.y, y.size()) <= 1e-4);
  CHECK(worst(dx, fx.dx, dx.size()) <= 1e-4);
  CHECK(worst(arena.grads(), fx.arena.grads(), std::size_t(arena.size())) <= 1e-4);
}

TEST_CASE("moe: a wrong reference is told apart") {
  using D = Dense<double>;
  Fixture<D, D> fx(D(d, f), D(f, d), ActKind::gelu, 2, Gating::topk_softmax, 11);
  fx.forward();
  // The experts' outputs permuted (each expert takes the next one's output).
  const Reference permuted = reference(fx, Gating::topk_softmax, {1, 2, 3, 0});
  CHECK(max_diff(fx.y, permuted.y) > 1e-3);
  // The other gating.
  const Reference other = reference(fx, Gating::softmax_topk, {0, 1, 2, 3});
  CHECK(max_diff(fx.y, other.y) > 1e-3);
}

TEST_CASE("moe: parameter names, counts and FLOPs") {
  using D = Dense<double>;
  Fixture<D, D> fx(D(d, f), D(f, d), ActKind::swiglu, 2, Gating::softmax_topk, 1);
  CHECK(fx.arena.slot("moe.router.weight").shape == std::vector<index_t>{n_experts, d});
  CHECK(fx.arena.slot("moe.experts.3.gate.weight").shape == std::vector<index_t>{f, d});
  CHECK(fx.arena.slot("moe.experts.0.down.bias").shape == std::vector<index_t>{d});
  CHECK(fx.arena.find("moe.router.bias") == nullptr);
  CHECK(fx.arena.size() == n_experts * d + n_experts * (3 * d * f + 2 * f + d));
  // Router 2 N d E, plus k FFNs of 3 GEMMs (up, gate, down) per token.
  CHECK(fx.moe.flops(100) == 2 * 100 * d * n_experts + 2 * 3 * (2 * 100 * d * f));
  CHECK(fx.moe.experts() == n_experts);
  CHECK(fx.moe.top_k() == 2);
  CHECK(fx.moe.gating() == Gating::softmax_topk);
  CHECK(fx.moe.width() == d);
  CHECK(fx.moe.hidden() == f);
  CHECK(fx.moe.act() == ActKind::swiglu);
}

TEST_CASE("moe: bad top-k, expert counts and shapes are rejected with a sentence") {
  using D = Dense<double>;
  using M = Moe<D, D>;
  const D up(d, f), down(f, d);
  CHECK_THROWS_WITH_AS(
      M(up, down, ActKind::gelu, 4, 5),
      doctest::Contains("top_k = 5 must lie between 1 and the number of experts, 4"), Error);
  CHECK_THROWS_WITH_AS(
      M(up, down, ActKind::gelu, 4, 0),
      doctest::Contains("top_k = 0 must lie between 1 and the number of experts, 4"), Error);
  CHECK_THROWS_WITH_AS(M(up, down, ActKind::gelu, 0, 1),
                       doctest::Contains("at least one expert, got 0"), Error);
  CHECK_THROWS_WITH_AS(M(D(d, f), D(f, d + 1), ActKind::gelu, 2, 1),
                       doctest::Contains("takes 6 features but down returns 7"), Error);

  Fixture<D, D> fx(up, down, ActKind::gelu, 2, Gating::topk_softmax, 1);
  std::vector<double> buf(std::size_t(n * (d + 1)));
  const auto y = matrix_view(fx.y.data(), n, d);
  CHECK_THROWS_WITH_AS(
      fx.moe.forward(fx.arena, fx.ctx,
                     matrix_view(static_cast<const double*>(buf.data()), n, d + 1), y),
      doctest::Contains("x has shape (7, 7) but the experts take 6 features"), Error);
  CHECK_THROWS_WITH_AS(fx.moe.forward(fx.arena, fx.ctx, fx.xv(), matrix_view(buf.data(), n - 1, d)),
                       doctest::Contains("y has shape (6, 6) but x has shape (7, 6)"), Error);
  CHECK_THROWS_WITH_AS(
      fx.moe.backward(fx.arena, fx.ctx, matrix_view(static_cast<const double*>(fx.dy.data()), n, d),
                      matrix_view(fx.dx.data(), n, d)),
      doctest::Contains("completed forward pass"), Error);
  fx.forward();
  CHECK_THROWS_WITH_AS(
      fx.moe.backward(fx.arena, fx.ctx,
                      matrix_view(static_cast<const double*>(fx.dy.data()), n - 1, d),
                      matrix_view(fx.dx.data(), n, d)),
      doctest::Contains("dy has shape (6, 6) but the forward pass produced (7, 6)"), Error);
  CHECK_THROWS_WITH_AS(fx.moe.expert(4), doctest::Contains("expert 4 does not exist among 4"),
                       Error);
}

TEST_CASE("moe: gating names round-trip and unknown names list the accepted ones") {
  for (Gating g : {Gating::topk_softmax, Gating::softmax_topk})
    CHECK(parse_gating(to_string(g)) == g);
  CHECK(std::string(to_string(Gating::topk_softmax)) == "topk_softmax");
  CHECK_THROWS_WITH_AS(
      parse_gating("top2"),
      doctest::Contains("unknown gating 'top2' (expected topk_softmax|softmax_topk)"), Error);
}

namespace {

GptConfig moe_gpt(index_t every, bool dense_first, bool llama) {
  GptConfig c;
  c.vocab_size = 11;
  c.max_seq_len = 6;
  c.n_layer = 2;
  c.d_model = 6;
  c.n_head = 2;
  c.ffn_dim = 8;
  c.init_std = 0.4;
  c.dense_first_ffn = dense_first;
  c.moe_experts = 3;
  c.moe_top_k = 2;
  c.moe_every = every;
  c.moe_ffn_dim = 4;
  c.moe_aux_loss = 0.3;  // large, so a wrong aux gradient shows
  if (llama) {
    c.norm = NormKind::rmsnorm;
    c.pos = PosKind::rope;
    c.act = ActKind::swiglu;
    c.n_head = 3;  // head_dim 2, even for the rotation
    c.moe_gating = Gating::softmax_topk;
  }
  return c;
}

template <class Map>
void check_moe_gpt_gradients(const GptConfig& c) {
  Gpt<Map, Map> model(c);
  Rng rng(5);
  model.init(rng);
  auto& arena = model.arena();
  for (index_t i = 0; i < arena.size(); ++i) arena.values()[i] += 0.1 * rng.normal();
  std::vector<std::int32_t> in(12), tgt(12);
  for (auto& t : in) t = std::int32_t(rng.uniform() * double(c.vocab_size));
  for (auto& t : tgt) t = std::int32_t(rng.uniform() * double(c.vocab_size));
  const TokenBatch batch{in.data(), tgt.data(), 2, 6};
  typename Gpt<Map, Map>::Context ctx;
  arena.zero_grads();
  const double ce = model.forward(ctx, batch, 1.0);
  const double aux = model.moe_aux_loss(ctx);
  model.backward(ctx);
  CHECK(std::isfinite(ce));
  CHECK(aux > 0.5);  // one per MoE layer when balanced, more when not
  const std::vector<double> grad(arena.grads(), arena.grads() + arena.size());
  const double worst = test::worst_central_difference(
      arena.values(), arena.size(), 1, grad.data(), [&] {
        const double loss = model.forward(ctx, batch);
        return loss + c.moe_aux_loss * model.moe_aux_loss(ctx);
      });
  CHECK(worst < 1e-6);
}

}  // namespace

TEST_CASE("moe: a Gpt with MoE layers has exact gradients of cross-entropy plus aux loss") {
  for (bool llama : {false, true})
    for (index_t every : {1, 2})
      for (bool first : {false, true}) {
        CAPTURE(llama);
        CAPTURE(every);
        CAPTURE(first);
        check_moe_gpt_gradients<Dense<double>>(moe_gpt(every, first, llama));
      }
  GptConfig c = moe_gpt(1, true, false);
  c.ffn = FfnKind::lowrank;
  c.rank = 2;
  check_moe_gpt_gradients<LowRank<double>>(c);
}

TEST_CASE("moe: a Gpt's MoE layers, their names and FLOPs") {
  const GptConfig c = moe_gpt(2, false, false);
  Gpt<Dense<double>, Dense<double>> model(c);
  const auto& arena = model.arena();
  CHECK(arena.find("h.0.mlp.up.weight") != nullptr);
  CHECK(arena.find("h.0.moe.router.weight") == nullptr);
  CHECK(arena.slot("h.1.moe.router.weight").shape == std::vector<index_t>{3, 6});
  CHECK(arena.slot("h.1.moe.experts.2.up.weight").shape == std::vector<index_t>{4, 6});
  CHECK(arena.find("h.1.mlp.up.weight") == nullptr);
  CHECK(model.blocks()[1].moe() != nullptr);
  CHECK(model.blocks()[0].moe() == nullptr);
  CHECK_THROWS_WITH_AS(model.blocks()[1].mlp(), doctest::Contains("Mixture-of-Experts"), Error);
  // Layer 1's FFN: the router and k = 2 experts of 4 units per token.
  const index_t N = 12, d = 6;
  const index_t dense_ffn = 2 * 2 * N * d * 8, moe_ffn = 2 * N * d * 3 + 2 * (2 * 2 * N * d * 4);
  GptConfig plain = c;
  plain.moe_experts = 0;
  Gpt<Dense<double>, Dense<double>> reference(plain);
  CHECK(model.flops(2, 6) - reference.flops(2, 6) == moe_ffn - dense_ffn);

  GptConfig bad = c;
  bad.moe_top_k = 4;
  CHECK_THROWS_WITH_AS(bad.validate(),
                       doctest::Contains("moe_top_k = 4 must lie between 1 and moe_experts = 3"),
                       Error);
  bad = c;
  bad.moe_every = 3;
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("moe_every = 3 must lie between 1 and"),
                       Error);
}
