// train/adamw.hpp: AdamW against a scalar double reference of PyTorch's torch.optim.AdamW.
#include <doctest/doctest.h>

#include <bonsai/core/parallel.hpp>
#include <bonsai/train/adamw.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace bonsai;

namespace {

/// A small model's worth of slots, matrices (decayed) and vectors (not), filled at random.
template <class T>
void lay_out(ParamArena<T>& arena, index_t scale = 1) {
  arena.add("wte", {7 * scale, 5});
  arena.add("ln.g", {5 * scale});
  arena.add("fc.w", {4 * scale, 3 * scale});
  arena.add("fc.b", {4 * scale});
  arena.add("blocks", {2, 3, 2 * scale});
  arena.allocate();
  std::mt19937 gen(7);
  std::normal_distribution<double> normal;
  for (index_t i = 0; i < arena.size(); ++i) arena.values()[i] = T(normal(gen));
}

template <class T>
void random_grads(ParamArena<T>& arena, std::mt19937& gen) {
  std::normal_distribution<double> normal(0.0, 0.3);
  for (index_t i = 0; i < arena.size(); ++i) arena.grads()[i] = T(normal(gen));
}

/// torch.optim.AdamW's update for one tensor, in double, written out the plain way.
struct Reference {
  std::vector<double> p, m, v;
  int t = 0;
  void step(const std::vector<double>& grad, const std::vector<bool>& decays, double lr,
            const AdamWConfig& c) {
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (decays[i]) p[i] *= 1.0 - lr * c.weight_decay;
      m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * grad[i];
      v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * grad[i] * grad[i];
      const double m_hat = m[i] / (1.0 - std::pow(c.beta1, t));
      const double v_hat = v[i] / (1.0 - std::pow(c.beta2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + c.eps);
    }
  }
};

template <class T>
void check_against_reference(double tolerance) {
  ParamArena<T> arena;
  lay_out(arena);
  const AdamWConfig config{.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  AdamW<T> opt(arena, config);

  Reference ref;
  std::vector<bool> decays(std::size_t(arena.size()));
  for (const ParamSlot& s : arena.slots())
    for (index_t i = 0; i < s.size(); ++i) decays[std::size_t(s.offset + i)] = s.decays();
  ref.p.assign(arena.values(), arena.values() + arena.size());
  ref.m.assign(ref.p.size(), 0.0);
  ref.v.assign(ref.p.size(), 0.0);

  std::mt19937 gen(11);
  const double lrs[] = {1e-3, 3e-3, 6e-3, 5e-3, 2e-3, 1e-3};
  const double scales[] = {1.0, 0.5, 0.25, 1.0, 0.8, 2.0};
  for (int s = 0; s < 6; ++s) {
    random_grads(arena, gen);
    std::vector<double> g(arena.grads(), arena.grads() + arena.size());
    for (double& x : g) x *= double(T(scales[s]));
    opt.step(arena, lrs[s], scales[s]);
    ref.step(g, decays, lrs[s], config);
  }
  CHECK(opt.step_count() == 6);
  for (index_t i = 0; i < arena.size(); ++i) {
    const auto k = std::size_t(i);
    REQUIRE(double(arena.values()[i]) == doctest::Approx(ref.p[k]).epsilon(tolerance));
    REQUIRE(double(opt.m().data()[i]) == doctest::Approx(ref.m[k]).epsilon(tolerance));
    REQUIRE(double(opt.v().data()[i]) == doctest::Approx(ref.v[k]).epsilon(tolerance));
  }
}

template <class T>
bool same_bits(const T* a, const T* b, index_t n) {
  return std::memcmp(a, b, sizeof(T) * std::size_t(n)) == 0;
}

}  // namespace

TEST_CASE("adamw: matches a double reference of PyTorch AdamW over six steps") {
  check_against_reference<double>(1e-12);
  check_against_reference<float>(2e-5);
}

TEST_CASE("adamw: decays matrices only, by exactly 1 - lr * wd") {
  ParamArena<float> arena;
  lay_out(arena);
  std::vector<float> before(arena.values(), arena.values() + arena.size());
  AdamW<float> opt(arena);  // defaults: 0.9, 0.95, 1e-8, 0.1
  CHECK(opt.config().beta2 == 0.95);
  CHECK(opt.config().weight_decay == 0.1);
  opt.step(arena, 0.5);  // zero gradients: only the decay moves anything
  const float keep = float(1.0 - 0.5 * 0.1);
  for (const ParamSlot& s : arena.slots()) {
    CAPTURE(s.name);
    CHECK(s.decays() == (s.shape.size() >= 2));
    for (index_t i = s.offset; i < s.offset + s.size(); ++i)
      REQUIRE(arena.values()[i] ==
              (s.decays() ? before[std::size_t(i)] * keep : before[std::size_t(i)]));
  }
}

TEST_CASE("adamw: grad_scale scales the gradients without touching them") {
  ParamArena<float> a, b;
  lay_out(a);
  lay_out(b);
  std::mt19937 gen(3);
  random_grads(a, gen);
  const float scale = 0.375f;  // a power-of-two fraction: a * scale is exact
  for (index_t i = 0; i < a.size(); ++i) b.grads()[i] = a.grads()[i] * scale;
  std::vector<float> grads(a.grads(), a.grads() + a.size());
  AdamW<float> oa(a), ob(b);
  oa.step(a, 1e-2, scale);
  ob.step(b, 1e-2);
  CHECK(same_bits(a.grads(), grads.data(), a.size()));
  CHECK(same_bits(a.values(), b.values(), a.size()));
  CHECK(same_bits(oa.v().data(), ob.v().data(), a.size()));
}

TEST_CASE("adamw: the same bits with one thread and with two") {
  ParamArena<float> a, b;
  lay_out(a, 120);  // ~130k scalars: several parallel chunks
  lay_out(b, 120);
  REQUIRE(a.size() > 4 * detail::adamw_chunk);
  AdamW<float> oa(a), ob(b);
  const int threads = max_threads();
  std::mt19937 ga(5), gb(5);
  for (int s = 0; s < 3; ++s) {
    random_grads(a, ga);
    random_grads(b, gb);
    set_threads(1);
    oa.step(a, 1e-3 * (s + 1), 0.7);
    set_threads(2);
    ob.step(b, 1e-3 * (s + 1), 0.7);
  }
  set_threads(threads);
  CHECK(same_bits(a.values(), b.values(), a.size()));
  CHECK(same_bits(oa.m().data(), ob.m().data(), a.size()));
  CHECK(same_bits(oa.v().data(), ob.v().data(), a.size()));
}

TEST_CASE("adamw: restoring moments and step count resumes exactly") {
  ParamArena<float> a, b;
  lay_out(a);
  lay_out(b);
  AdamW<float> straight(a), first(b);
  std::mt19937 ga(9), gb(9);
  for (int s = 0; s < 4; ++s) {
    random_grads(a, ga);
    straight.step(a, 1e-2);
    if (s < 2) {
      random_grads(b, gb);
      first.step(b, 1e-2);
    }
  }
  // A fresh optimizer given the saved state (per slot, as a checkpoint would) continues.
  AdamW<float> resumed(b);
  for (const ParamSlot& s : b.slots()) {
    std::memcpy(resumed.m(s).data(), first.m(s).data(), sizeof(float) * std::size_t(s.size()));
    std::memcpy(resumed.v(s).data(), first.v(s).data(), sizeof(float) * std::size_t(s.size()));
  }
  resumed.set_step_count(first.step_count());
  for (int s = 2; s < 4; ++s) {
    random_grads(b, gb);
    resumed.step(b, 1e-2);
  }
  CHECK(resumed.step_count() == 4);
  CHECK(same_bits(a.values(), b.values(), a.size()));
  CHECK(same_bits(straight.m().data(), resumed.m().data(), a.size()));

  resumed.reset();
  CHECK(resumed.step_count() == 0);
  CHECK(resumed.v().data()[0] == 0.0f);
}

TEST_CASE("adamw: rejects a different arena and bad hyper-parameters") {
  ParamArena<float> a, b;
  lay_out(a);
  b.add("w", {3, 3});
  b.allocate();
  AdamW<float> opt(a);
  CHECK_THROWS_WITH_AS(opt.step(b, 1e-3), doctest::Contains("made for"), Error);
  CHECK_THROWS_AS(opt.step(a, std::nan("")), Error);
  CHECK_THROWS_AS(AdamW<float>(a, AdamWConfig{.beta2 = 1.0}), Error);
  CHECK_THROWS_AS(opt.set_step_count(-1), Error);
}
