// The MLP over a kept set of channels (spec sat.md §5, §9.2-3): for any kept set, the compact
// gather / GEMM / scatter-add path equals the dense path with the omitted channels' activations
// zeroed (a growth mask of 0 on them), in outputs, dx and every parameter gradient; omitted
// channels' weights get exactly zero gradient; central differences agree with the sparse
// backward; channels that are already inactive leave the output unchanged; maps that cannot
// restrict are rejected with a sentence. Dense and LowRank maps, GELU and SwiGLU, in double.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/mlp.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "support/finite_diff.hpp"

using namespace bonsai;

namespace {

constexpr index_t d = 6, f = 10, n = 7;

template <class Up, class Down>
struct Fixture {
  Mlp<Up, Down> mlp;
  ParamArena<double> arena;
  typename Mlp<Up, Down>::Context ctx;
  std::vector<double> x, y, dy, dx;

  Fixture(const Up& up, const Down& down, ActKind act, std::uint64_t seed)
      : mlp(up, down, act), x(std::size_t(n * d)), y(x.size()), dy(x.size()), dx(x.size()) {
    mlp.declare(arena, "mlp.");
    arena.allocate();
    Rng rng(seed);
    for (index_t i = 0; i < arena.size(); ++i) arena.values()[i] = 0.4 * rng.normal();
    for (double& v : x) v = rng.normal();
    for (double& v : dy) v = rng.normal();
  }
  MatrixView<const double> xv() const { return matrix_view(x.data(), n, d); }
  /// Forward and backward from zeroed gradients; returns sum(y * dy).
  double run(const double* mask, std::span<const index_t> kept) {
    arena.zero_grads();
    mlp.forward(arena, ctx, xv(), matrix_view(y.data(), n, d), mask, kept);
    mlp.backward(arena, ctx, matrix_view(static_cast<const double*>(dy.data()), n, d),
                 matrix_view(dx.data(), n, d));
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * dy[i];
    return s;
  }
  std::vector<double> grads() const { return {arena.grads(), arena.grads() + arena.size()}; }
};

using test::max_diff;

/// Whether parameter entry `i` belongs to an omitted channel: a row of up/gate (or of U), an
/// up/gate bias entry, or a column of down (or of V).
template <class Up, class Down>
std::vector<bool> omitted_entries(const Fixture<Up, Down>& fx, const std::vector<bool>& kept) {
  std::vector<bool> out(std::size_t(fx.arena.size()), false);
  for (const ParamSlot& s : fx.arena.slots()) {
    const bool producer = s.name.starts_with("mlp.up.") || s.name.starts_with("mlp.gate.");
    const bool bias = s.name.ends_with(".bias");
    for (index_t e = 0; e < s.size(); ++e) {
      index_t channel = -1;
      if (producer && bias)
        channel = e;
      else if (producer && (s.name.ends_with(".weight") || s.name.ends_with(".U")))
        channel = e / s.shape[1];
      else if (s.name.starts_with("mlp.down.") &&
               (s.name.ends_with(".weight") || s.name.ends_with(".V")))
        channel = e % s.shape[1];
      if (channel >= 0 && !kept[std::size_t(channel)]) out[std::size_t(s.offset + e)] = true;
    }
  }
  return out;
}

template <class Up, class Down>
void check_gather_equals_mask(const Up& up, const Down& down, ActKind act) {
  for (const std::vector<index_t>& kept :
       {std::vector<index_t>{1, 2, 5, 8, 9}, std::vector<index_t>{0, 3, 4, 6, 7, 9},
        std::vector<index_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
    CAPTURE(kept.size());
    Fixture<Up, Down> fx(up, down, act, 3);
    std::vector<bool> in(f, false);
    for (index_t i : kept) in[std::size_t(i)] = true;
    // With and without a growth mask on top.
    for (bool growth : {false, true}) {
      CAPTURE(growth);
      std::vector<double> mask(f), both(f);
      for (index_t i = 0; i < f; ++i) {
        mask[std::size_t(i)] = growth ? 0.25 + 0.07 * double(i) : 1.0;
        both[std::size_t(i)] = in[std::size_t(i)] ? mask[std::size_t(i)] : 0.0;
      }
      const double dense = fx.run(both.data(), {});
      const auto y0 = fx.y, dx0 = fx.dx, g0 = fx.grads();
      const double sparse = fx.run(growth ? mask.data() : nullptr, kept);
      CHECK(sparse == doctest::Approx(dense).epsilon(1e-13));
      CHECK(max_diff(fx.y, y0) <= 1e-12);
      CHECK(max_diff(fx.dx, dx0) <= 1e-12);
      const auto g = fx.grads();
      CHECK(max_diff(g, g0) <= 1e-12);
      const auto omitted = omitted_entries(fx, in);
      index_t zeros = 0;
      for (std::size_t i = 0; i < g.size(); ++i)
        if (omitted[i]) {
          CHECK(g[i] == 0.0);
          ++zeros;
        }
      CHECK((zeros > 0) == (index_t(kept.size()) < f));
    }
  }
}

}  // namespace

TEST_CASE("sparse mlp: the kept-channel path equals the dense path with omitted channels zeroed") {
  for (ActKind act : {ActKind::gelu, ActKind::swiglu}) {
    CAPTURE(std::string(to_string(act)));
    check_gather_equals_mask(Dense<double>(d, f), Dense<double>(f, d), act);
    check_gather_equals_mask(LowRank<double>(d, f, 3), LowRank<double>(f, d, 3), act);
  }
}

TEST_CASE("sparse mlp: central differences agree with the kept-channel backward") {
  for (ActKind act : {ActKind::gelu, ActKind::swiglu}) {
    CAPTURE(std::string(to_string(act)));
    Fixture<Dense<double>, Dense<double>> fx(Dense<double>(d, f), Dense<double>(f, d), act, 8);
    const std::vector<index_t> kept = {0, 2, 3, 7};
    fx.run(nullptr, kept);
    const auto g = fx.grads();
    const auto dx = fx.dx;
    const auto loss = [&] { return fx.run(nullptr, kept); };
    const double worst =
        std::max(test::worst_central_difference(fx.arena.values(), fx.arena.size(), 3, g.data(), loss),
                 test::worst_central_difference(fx.x.data(), n * d, 5, dx.data(), loss));
    CHECK(worst <= 1e-7);
  }
}

TEST_CASE("sparse mlp: omitting channels that are already inactive changes nothing") {
  // Zero up rows (GELU: gelu(0 + 0) = 0) make channels 1, 4 and 6 inactive.
  Fixture<Dense<double>, Dense<double>> fx(Dense<double>(d, f), Dense<double>(f, d), ActKind::gelu,
                                           5);
  const ParamSlot& up = fx.arena.slot("mlp.up.weight");
  const ParamSlot& bias = fx.arena.slot("mlp.up.bias");
  for (index_t c : {1, 4, 6}) {
    for (index_t j = 0; j < d; ++j) fx.arena.values()[up.offset + c * d + j] = 0.0;
    fx.arena.values()[bias.offset + c] = 0.0;
  }
  fx.run(nullptr, {});
  const auto dense = fx.y;
  fx.run(nullptr, std::vector<index_t>{0, 2, 3, 5, 7, 8, 9});
  CHECK(max_diff(fx.y, dense) <= 1e-13);
}

TEST_CASE("sparse mlp: maps that cannot restrict and bad kept sets are rejected") {
  using BD = BlockDense<double>;
  Fixture<BD, BD> bd(block_dense<double>(d, f, 4, 2), block_dense<double>(f, d, 4, 2),
                     ActKind::gelu, 1);
  CHECK_THROWS_WITH_AS(bd.run(nullptr, std::vector<index_t>{0, 1}),
                       doctest::Contains("only Dense and LowRank"), Error);
  Fixture<LowRank<double>, LowRank<double>> lr(LowRank<double>(d, f, 3), LowRank<double>(f, d, 3),
                                               ActKind::gelu, 1);
  CHECK_THROWS_WITH_AS(lr.run(nullptr, std::vector<index_t>{0, 1}),
                       doctest::Contains("keeps at least 3"), Error);
  Fixture<Dense<double>, Dense<double>> dn(Dense<double>(d, f), Dense<double>(f, d), ActKind::gelu,
                                           1);
  CHECK_THROWS_WITH_AS(dn.run(nullptr, std::vector<index_t>{3, 1}),
                       doctest::Contains("increasing indices below 10"), Error);
  CHECK_THROWS_WITH_AS(dn.run(nullptr, std::vector<index_t>{0, 10}),
                       doctest::Contains("increasing indices below 10"), Error);
}
