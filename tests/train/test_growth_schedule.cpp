// Growth in training runs: the --grow schedule parser, planning every stage up front, the
// learning rate after growth, and the optimizer carried across a growth.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/train/growth.hpp>

using namespace bonsai;

namespace {
GptConfig small_config() {
  GptConfig c;
  c.vocab_size = 13;
  c.max_seq_len = 8;
  c.n_layer = 2;
  c.d_model = 8;
  c.n_head = 2;
  return c;
}
}  // namespace

TEST_CASE("growth schedule: stages parse, and bad ones are rejected with a sentence") {
  const auto st = parse_growth_schedule("100:lemon:d=16,heads=4,layers=3;250:stackbert:layers=6");
  REQUIRE(st.size() == 2);
  CHECK(st[0].at == 100);
  CHECK(st[0].method == GrowthMethod::lemon);
  CHECK(st[0].target.d_model == 16);
  CHECK(st[0].target.n_head == 4);
  CHECK(st[0].target.n_layer == 3);
  CHECK(st[0].target.ffn_dim == 0);
  CHECK(st[1].method == GrowthMethod::stackbert);
  CHECK(parse_growth_schedule("").empty());
  CHECK_THROWS_WITH_AS(parse_growth_schedule("100:lemon"), doctest::Contains("STEP:METHOD"), Error);
  CHECK_THROWS_WITH_AS(parse_growth_schedule("100:grow:d=16"), doctest::Contains("unknown growth method"), Error);
  CHECK_THROWS_WITH_AS(parse_growth_schedule("100:lemon:width=16"), doctest::Contains("unknown size 'width'"), Error);
  CHECK_THROWS_WITH_AS(parse_growth_schedule("100:lemon:d=-3"), doctest::Contains("not a non-negative integer"), Error);
  CHECK_THROWS_WITH_AS(parse_growth_schedule("100:lemon:d=99999999999999999999999"), doctest::Contains("too large"), Error);
  CHECK_THROWS_WITH_AS(parse_growth_schedule("200:lemon:d=16;100:lemon:d=32"), doctest::Contains("does not come after"), Error);
}

TEST_CASE("growth schedule: every stage is planned from the previous one before training") {
  const auto stages = parse_growth_schedule("10:lemon:d=12,heads=3,layers=3;20:stackbert:layers=6");
  const auto plans = plan_growth(small_config(), stages, 30, {});
  REQUIRE(plans.size() == 2);
  CHECK(plans[0].to.d_model == 12);
  CHECK(plans[1].from.d_model == 12);
  CHECK(plans[1].to.n_layer == 6);
  CHECK(plans[1].to.norm_eps == doctest::Approx(plans[0].to.norm_eps));
  // A later stage that shrinks, or one past the end, fails up front.
  CHECK_THROWS_WITH_AS(plan_growth(small_config(), parse_growth_schedule("10:lemon:d=12;20:lemon:d=10"), 30, {}),
                       doctest::Contains("never shrinks"), Error);
  CHECK_THROWS_WITH_AS(plan_growth(small_config(), stages, 20, {}), doctest::Contains("outside the run"), Error);
  CHECK_THROWS_WITH_AS(plan_growth(small_config(), parse_growth_schedule("10:stackbert:d=12"), 30, {}),
                       doctest::Contains("grows depth only"), Error);
}

TEST_CASE("growth schedule: the learning rate keeps, rewinds to the peak, or re-warms up") {
  const auto s = LrSchedule::cosine(1.0, 10, 100, 0.1);
  const std::vector<index_t> events{40, 60, 80};
  const GrowthLr keep = GrowthLr::parse("keep"), rewind = GrowthLr::parse("rewind"),
                 rewarm = GrowthLr::parse("rewarm:5");
  for (index_t step : {0, 39, 40, 55, 99}) CHECK(keep.at(s, step, events) == s.at(step));
  CHECK(rewind.at(s, 39, events) == s.at(39));
  CHECK(rewind.at(s, 40, events) == doctest::Approx(1.0));  // back at the peak
  CHECK(rewind.at(s, 45, events) == s.at(15));
  CHECK(rewind.at(s, 60, events) == doctest::Approx(1.0));  // the second event rewinds too
  CHECK(rewind.at(s, 85, events) == s.at(35));              // the third does not
  CHECK(rewarm.at(s, 40, events) == doctest::Approx(s.at(40) / 5));
  CHECK(rewarm.at(s, 44, events) == doctest::Approx(s.at(44)));
  CHECK(rewarm.at(s, 30, events) == s.at(30));
  CHECK(rewarm.to_string() == "rewarm:5");
  CHECK_THROWS_WITH_AS(GrowthLr::parse("rewarm:0"), doctest::Contains("N > 0"), Error);
  CHECK_THROWS_WITH_AS(GrowthLr::parse("restart"), doctest::Contains("keep, rewind or rewarm:N"), Error);
}

TEST_CASE("growth schedule: the optimizer's step count restarts only with reset") {
  const GptConfig c = small_config();
  const GrowthPlan p = make_preset(GrowthMethod::lemon, c, {12, 3, 0, 3});
  Gpt<Dense<float>, Dense<float>> a(c), b(p.to);
  AdamW<float> opt(a.arena());
  opt.set_step_count(7);
  for (index_t i = 0; i < opt.size(); ++i) opt.m().data()[i] = 1.0f;
  CHECK(grow_optimizer(p, StateGrowth::reset, opt, a.arena(), b.arena()).step_count() == 0);
  const AdamW<float> carried = grow_optimizer(p, StateGrowth::carry, opt, a.arena(), b.arena());
  CHECK(carried.step_count() == 7);
  CHECK(carried.size() == b.arena().size());
  CHECK(carried.m().data()[b.arena().slot("wte").offset] == 1.0f);
  CHECK(parse_state_growth("duplicate") == StateGrowth::duplicate);
  CHECK(parse_state_growth("gradient") == StateGrowth::gradient);
  CHECK_THROWS_WITH_AS(parse_state_growth("copy"), doctest::Contains("optimizer state policy"), Error);
}

TEST_CASE("growth schedule: MSG's masks ramp by 1 / N per step, one growth at a time") {
  const auto stages = parse_growth_schedule("10:msg:d=12;20:lemon:d=16;30:msg:layers=3");
  const auto plans = plan_growth(small_config(), stages, 40, {});
  CHECK(plans[0].options.masked);
  CHECK(!plans[1].options.masked);
  // Given N, or half the way to the next stage or the end.
  CHECK(mask_ramps(stages, plans, 40, 4) == std::vector<index_t>{4, 0, 4});
  CHECK(mask_ramps(stages, plans, 40, 0) == std::vector<index_t>{5, 0, 5});
  // The step at the growth trains with 0; after t optimizer steps the mask is t / N, then 1.
  CHECK(mask_value(10, 10, 4) == 0.0);
  CHECK(mask_value(11, 10, 4) == 0.25);
  CHECK(mask_value(13, 10, 4) == 0.75);
  CHECK(mask_value(14, 10, 4) == 1.0);
  CHECK(mask_value(30, 10, 4) == 1.0);
  // A ramp that would still run at the next growth, or past the end, fails before training.
  CHECK_THROWS_WITH_AS(mask_ramps(stages, plans, 40, 11), doctest::Contains("one growth ramps at a time"), Error);
  const auto last = parse_growth_schedule("10:msg:d=12");
  CHECK_THROWS_WITH_AS(mask_ramps(last, plan_growth(small_config(), last, 15, {}), 15, 6),
                       doctest::Contains("end of the run at step 15"), Error);
}

TEST_CASE("growth schedule: an upcycle stage parses, plans and maps the optimizer state") {
  const auto st = parse_growth_schedule(
      "10:lemon:d=12,heads=3;20:upcycle:experts=6,top_k=2,granularity=2,every=1,"
      "gating=softmax_topk,router=zero,scale=split");
  REQUIRE(st.size() == 2);
  const UpcycleOptions& u = st[1].upcycle;
  CHECK(st[1].method == GrowthMethod::upcycle);
  CHECK(u.experts == 6);
  CHECK(u.top_k == 2);
  CHECK(u.granularity == 2);
  CHECK(u.every == 1);
  CHECK(u.gating == Gating::softmax_topk);
  CHECK(u.router == RouterInit::zero);
  CHECK(u.scale == UpcycleScale::split);
  CHECK(to_json(st[1])["gating"] == "softmax_topk");
  const auto plans = plan_growth(small_config(), st, 30, {});
  REQUIRE(plans.size() == 2);
  const GrowthPlan& p = plans[1];
  REQUIRE(p.upcycle);
  CHECK(p.from.d_model == 12);
  CHECK(p.to.d_model == 12);
  CHECK(p.to.moe_experts == 6);
  CHECK(p.to.moe_hidden() == p.from.ffn_width() / 2);
  CHECK(p.function_preserving() == u.function_preserving(p.from.act));

  // Shared parameters keep their moments (unless reset); experts and routers start at 0.
  Gpt<Dense<double>, Dense<double>> dense(p.from), moe(p.to);
  std::vector<double> src(std::size_t(dense.arena().size()), 0.5), dst(std::size_t(moe.arena().size()), 7.0);
  grow_state(p, StateGrowth::carry, Moment::first, dense.arena(), src.data(), moe.arena(), dst.data());
  for (const ParamSlot& s : moe.arena().slots())
    CHECK(dst[std::size_t(s.offset)] == (s.name.find(".moe.") != std::string::npos ? 0.0 : 0.5));
  grow_state(p, StateGrowth::reset, Moment::second, dense.arena(), src.data(), moe.arena(), dst.data());
  CHECK(std::all_of(dst.begin(), dst.end(), [](double v) { return v == 0.0; }));
  CHECK_THROWS_WITH_AS(grow_parameters(p, dense.arena(), moe.arena()),
                       doctest::Contains("needs the models"), Error);

  CHECK_THROWS_WITH_AS(parse_growth_schedule("5:upcycle:experts=4,width=2"),
                       doctest::Contains("unknown upcycle option 'width'"), Error);
  CHECK_THROWS_WITH_AS(parse_growth_schedule("5:upcycle:gating=best"),
                       doctest::Contains("unknown gating 'best'"), Error);
  // Nothing grows after an upcycling, and nothing upcycles twice.
  CHECK_THROWS_WITH_AS(plan_growth(small_config(), parse_growth_schedule("5:upcycle:experts=4;9:lemon:d=16"), 30, {}),
                       doctest::Contains("cannot grow a model with Mixture-of-Experts layers"), Error);
  CHECK_THROWS_WITH_AS(plan_growth(small_config(), parse_growth_schedule("5:upcycle:experts=4;9:upcycle:experts=4"), 30, {}),
                       doctest::Contains("already has Mixture-of-Experts layers"), Error);
}

TEST_CASE("growth schedule: ligo and mango stages parse, start function-preserving and refuse what they cannot learn") {
  const auto st = parse_growth_schedule("10:ligo:d=16,heads=4,ffn=48,layers=3,steps=7,lr=1e-3;"
                                        "20:mango:d=32,heads=8,ffn=96,layers=5,rank=3");
  REQUIRE(st.size() == 2);
  CHECK(st[0].method == GrowthMethod::ligo);
  CHECK(st[0].is_learned());
  CHECK(st[0].learned.steps == 7);
  CHECK(st[0].learned.lr == 1e-3);
  CHECK(st[0].target.ffn_dim == 48);
  CHECK(st[1].method == GrowthMethod::mango);
  CHECK(st[1].ring_rank == 3);
  CHECK(st[1].target.rank == 0);
  CHECK(st[1].learned.steps == 100);  // the paper's operator training
  CHECK(st[1].learned.lr == 2e-4);
  CHECK(to_json(st[0])["steps"] == 7);
  CHECK(to_json(st[1])["ring_rank"] == 3);
  CHECK_FALSE(to_json(parse_growth_schedule("5:lemon:d=16")[0]).contains("steps"));

  GptConfig c = small_config();
  c.ffn_dim = 16;
  const auto plans = plan_growth(c, st, 30, {});
  REQUIRE(plans.size() == 2);
  for (const GrowthPlan& p : plans) {
    CHECK(p.function_preserving());
    // The operators start from these plans: what grow_parameters writes.
    Gpt<Dense<double>, Dense<double>> small(p.from), grown(p.to), learned(p.to);
    Rng rng(4);
    small.init(rng);
    grow_parameters(p, small.arena(), grown.arena());
    if (&p == &plans[0]) Ligo<double>(p, small.arena()).materialize(learned.arena());
    else Mango<double>(p, small.arena(), {.bond_noise = 0.0}).materialize(learned.arena());
    double worst = 0;
    for (index_t i = 0; i < grown.arena().size(); ++i)
      worst = std::max(worst, std::abs(grown.arena().values()[i] - learned.arena().values()[i]));
    CHECK(worst <= 1e-12);
  }
  CHECK(plans[0].to.d_model == 16);
  CHECK(plans[0].to.n_layer == 3);
  CHECK(plans[1].to.d_model == 32);
  CHECK(plans[1].to.n_layer == 5);

  CHECK_THROWS_WITH_AS(parse_growth_schedule("5:ligo:d=16,lr=fast"),
                       doctest::Contains("lr = 'fast' is not a positive number"), Error);
  CHECK_THROWS_WITH_AS(parse_growth_schedule("5:ligo:d=16,lr=0"), doctest::Contains("positive"), Error);
  CHECK_THROWS_WITH_AS(parse_growth_schedule("5:lemon:d=16,steps=3"),
                       doctest::Contains("unknown size 'steps'"), Error);
  CHECK_THROWS_WITH_AS(plan_growth(c, parse_growth_schedule("5:ligo:d=12"), 30, {}),
                       doctest::Contains("whole multiple"), Error);
  CHECK_THROWS_WITH_AS(plan_growth(c, parse_growth_schedule("5:mango:d=16,layers=4"), 30, {}),
                       doctest::Contains("one whole factor"), Error);
  CHECK_THROWS_WITH_AS(plan_growth(c, parse_growth_schedule("5:mango:d=16,heads=4,ffn=32,rank=0"), 30, {}),
                       doctest::Contains("ring rank"), Error);
  CHECK_THROWS_WITH_AS(plan_growth(c, parse_growth_schedule("5:ligo:d=16"), 30, {.split_noise = 0.02}),
                       doctest::Contains("--grow-noise 0.02 does not apply"), Error);
  GptConfig lowrank = c;
  lowrank.ffn = FfnKind::lowrank;
  lowrank.rank = 4;
  CHECK_THROWS_WITH_AS(plan_growth(lowrank, parse_growth_schedule("5:ligo:d=16"), 30, {}),
                       doctest::Contains("dense FFN"), Error);
}
