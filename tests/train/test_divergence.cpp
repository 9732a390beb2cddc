// train/divergence.hpp: the first non-finite tensor of an arena and the report naming it.
#include <doctest/doctest.h>

#include <bonsai/train/divergence.hpp>
#include <limits>

using namespace bonsai;

namespace {
ParamArena<float> small_arena() {
  ParamArena<float> a;
  a.add("wte", {4, 3});
  a.add("h.0.mlp.up.weight", {5, 3});
  a.add("ln_f.bias", {3});
  a.allocate();
  for (index_t i = 0; i < a.size(); ++i) a.values()[i] = 0.01f * float(i), a.grads()[i] = -0.5f;
  return a;
}
}  // namespace

TEST_CASE("divergence: the first non-finite tensor, values before gradients") {
  ParamArena<float> a = small_arena();
  CHECK_FALSE(first_non_finite(a).has_value());

  const ParamSlot& up = a.slot("h.0.mlp.up.weight");
  a.grads()[up.offset + 7] = std::numeric_limits<float>::quiet_NaN();
  a.grads()[up.offset + 9] = std::numeric_limits<float>::infinity();
  auto where = first_non_finite(a);
  REQUIRE(where.has_value());
  CHECK(where->tensor == "h.0.mlp.up.weight");
  CHECK(where->gradient);
  CHECK(where->element == 7);
  CHECK(std::isnan(where->value));

  // A broken value is the cause: it is reported before any gradient, even in a later tensor.
  a.values()[a.slot("ln_f.bias").offset + 2] = -std::numeric_limits<float>::infinity();
  where = first_non_finite(a);
  REQUIRE(where.has_value());
  CHECK(where->tensor == "ln_f.bias");
  CHECK_FALSE(where->gradient);
  CHECK(where->element == 2);
  CHECK(where->value == -std::numeric_limits<double>::infinity());
}

TEST_CASE("divergence: the report names the step, loss, norm and tensor") {
  NonFinite w{"h.0.attn.qkv.weight", true, 5, std::numeric_limits<double>::infinity()};
  CHECK(divergence_report(12, std::nan(""), std::numeric_limits<double>::infinity(), w) ==
        "step 12: the loss is nan and the gradient norm inf; the first non-finite tensor is the "
        "gradient of h.0.attn.qkv.weight (element 5 is inf)");
  w.gradient = false;
  CHECK(divergence_report(3, 2.5, 0.75, w) ==
        "step 3: the loss is 2.5 and the gradient norm 0.75; the first non-finite tensor is the "
        "value of h.0.attn.qkv.weight (element 5 is inf)");
  CHECK(divergence_report(0, std::nan(""), 1.0, std::nullopt) ==
        "step 0: the loss is nan and the gradient norm 1; every parameter and gradient is finite");
}

TEST_CASE("divergence: the loss-spike guard judges a loss against the mean of the last ones") {
  LossSpikeGuard guard({.factor = 3.0, .window = 4, .warmup = 2});
  CHECK(guard.enabled());
  CHECK_FALSE(guard.is_spike(1e9));  // nothing seen: not armed
  guard.observe(2.0);
  CHECK_FALSE(guard.is_spike(1e9));  // one loss: not armed yet
  guard.observe(4.0);
  CHECK(guard.mean() == doctest::Approx(3.0));
  CHECK_FALSE(guard.is_spike(9.0));  // exactly k times the mean is not above it
  CHECK(guard.is_spike(9.0001));
  // The window keeps the last 4 losses only.
  for (const double l : {1.0, 1.0, 1.0, 1.0}) guard.observe(l);
  CHECK(guard.mean() == doctest::Approx(1.0));
  CHECK(guard.is_spike(3.5));
  CHECK(guard.report(57, 3.5).find("step 57: the loss 3.5 is 3.5 times the mean of the last 4 "
                                   "losses (1), above the spike factor 3") == 0);
  // Its state round-trips, and reset() disarms it.
  LossSpikeGuard copy({.factor = 3.0, .window = 4, .warmup = 2});
  copy.restore(guard.state());
  CHECK(copy.state() == guard.state());
  CHECK(copy.is_spike(3.5));
  copy.reset();
  CHECK_FALSE(copy.is_spike(1e9));
  // k = 0 turns it off: it holds nothing and never fires.
  LossSpikeGuard off({.factor = 0});
  for (int i = 0; i < 20; ++i) off.observe(1.0);
  CHECK_FALSE(off.is_spike(1e30));
  CHECK(off.state().empty());
  CHECK_THROWS_WITH_AS(LossSpikeGuard({.factor = 0.5}), doctest::Contains("--spike-factor 0.5"),
                       Error);
  CHECK_THROWS_WITH_AS(LossSpikeGuard({.window = 0}), doctest::Contains("--spike-window 0"), Error);
}
