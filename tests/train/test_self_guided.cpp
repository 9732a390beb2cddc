// Self-guided training of a whole model: the a(t) schedules, reduce-flop's frequency, the
// guided model at initialisation, the structured gradients at a = 1, the release of the guides
// (parameters, optimizer state and checkpoint without them), and the fixed-FLOPs bookkeeping.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/train/adamw.hpp>
#include <bonsai/train/checkpoint.hpp>
#include <bonsai/train/self_guided.hpp>
#include <cmath>

#include "support/temp_dir.hpp"

using namespace bonsai;

namespace {

GptConfig tiny(FfnKind ffn, bool swiglu = false) {
  GptConfig c;
  c.vocab_size = 13;
  c.max_seq_len = 8;
  c.n_layer = 3;
  c.d_model = 8;
  c.n_head = 2;
  c.ffn_dim = 16;
  c.ffn = ffn;
  c.rank = ffn == FfnKind::lowrank ? 3 : 4;
  c.blocks = 2;
  c.init_std = 0.3;
  if (swiglu) c.act = ActKind::swiglu;
  return c;
}

struct Batch {
  std::vector<std::int32_t> in, tgt;
  TokenBatch view() const { return {in.data(), tgt.data(), 2, 6}; }
};
Batch random_batch(Rng& rng, index_t vocab) {
  Batch b{std::vector<std::int32_t>(12), std::vector<std::int32_t>(12)};
  for (auto& t : b.in) t = std::int32_t(rng.uniform() * double(vocab));
  for (auto& t : b.tgt) t = std::int32_t(rng.uniform() * double(vocab));
  return b;
}

template <class Model>
std::vector<double> logits_of(Model& model, const Batch& b) {
  typename Model::Context ctx;
  model.forward(ctx, b.view());
  const auto l = model.logits(ctx);
  return {l.data(), l.data() + l.size()};
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

/// Runs f(std::type_identity<S>) for the three structures.
template <class T, class F>
void for_each_structure(F&& f) {
  f(std::type_identity<LowRank<T>>{}, FfnKind::lowrank);
  f(std::type_identity<BlockDense<T>>{}, FfnKind::blockdense);
  f(std::type_identity<BlockShuffle<T>>{}, FfnKind::blockshuffle);
}

}  // namespace

TEST_CASE("SGT cosine and linear schedules") {
  const auto cosine = GuideSchedule::over_fraction(GuideDecay::cosine, 0.5, 200);
  CHECK(cosine.guided_steps == 100);
  const double expect[] = {1.0, 0.8536, 0.5, 0.1464, 0.0};
  for (int k = 0; k <= 4; ++k) CHECK(cosine.alpha(25 * k) == doctest::Approx(expect[k]).epsilon(1e-4));
  const GuideSchedule linear{GuideDecay::linear, 100};
  CHECK(linear.alpha(0) == 1.0);
  CHECK(linear.alpha(50) == doctest::Approx(0.5));
  CHECK(linear.alpha(75) == doctest::Approx(0.25));
  for (const GuideSchedule& s : {cosine, linear}) {
    CHECK(s.alpha(100) == 0.0);
    CHECK(s.alpha(1000) == 0.0);
    CHECK(!s.released(99));
    CHECK(s.released(100));
    for (index_t t = 0; t < 120; ++t) CHECK(s.alpha(t + 1) <= s.alpha(t));  // never increases
  }
  CHECK(GuideSchedule::over_fraction(GuideDecay::cosine, 0.3, 101).guided_steps == 30);
  CHECK(GuideSchedule::over_fraction(GuideDecay::cosine, 0.0, 100).alpha(0) == 0.0);
  CHECK(parse_guide_decay("linear") == GuideDecay::linear);
  CHECK_THROWS_AS(parse_guide_decay("step"), Error);
}

TEST_CASE("SGT fixed-FLOPs bookkeeping reproduces the paper's xl ratio") {
  // xl LowRank 32% (spec §6, §12.11): per unit of base steps, structured 1.29e20, dense 2.10e20
  // training FLOPs, and the guides (23 dense FFNs of d = 2048, 25.5B tokens, x3 for training).
  const double guides = 23 * 2.0 * 2 * 2048.0 * 8192.0 * 3 * 25.5e9;
  const index_t base = 100000;
  const index_t tg = guided_steps_for_equal_flops(base, 2.10e20, 1.29e20, guides, 0.5);
  CHECK(double(tg) / double(base) == doctest::Approx(0.43).epsilon(0.01));
  const double total = 1.29e20 * double(base + tg) / double(base) + 0.5 * guides * double(tg) / double(base);
  CHECK(total == doctest::Approx(2.10e20).epsilon(0.01));
  CHECK(total <= 2.10e20);
  CHECK_THROWS_AS(guided_steps_for_equal_flops(10, 1.0, 2.0, 1.0, 0.5), Error);
}

TEST_CASE("SGT guided model at initialisation computes the structured model") {
  for_each_structure<double>([](auto s, FfnKind kind) {
    using S = typename decltype(s)::type;
    for (bool swiglu : {false, true}) {
      const GptConfig c = tiny(kind, swiglu);
      Gpt<S, S> plain(c);
      GuidedGpt<S, S> guided(c);
      Rng r1(7), r2(7);
      plain.init(r1);
      guided.init(r2);
      CHECK(guided.param_count() > plain.param_count());
      Rng rng(8);
      const Batch b = random_batch(rng, c.vocab_size);
      const auto reference = logits_of(plain, b);
      set_guides(guided, 0.0);
      CHECK(logits_of(guided, b) == reference);  // a = 0: exactly the structured model
      for (double alpha : {0.3, 1.0}) {
        set_guides(guided, alpha);
        CHECK(max_abs_diff(logits_of(guided, b), reference) < 1e-12);  // W0 = S_merged
      }
    }
  });
}

TEST_CASE("SGT at a = 1 gives the structured maps no gradient") {
  using S = LowRank<float>;
  const GptConfig c = tiny(FfnKind::lowrank);
  GuidedGpt<S, S> model(c);
  Rng rng(9);
  model.init(rng);
  set_guides(model, 1.0);
  const Batch b = random_batch(rng, c.vocab_size);
  typename GuidedGpt<S, S>::Context ctx;
  model.arena().zero_grads();
  model.forward(ctx, b.view(), 1.0f);
  model.backward(ctx);
  int structured = 0, guides = 0;
  for (const ParamSlot& s : model.arena().slots()) {
    if (s.name.find(".mlp.") == std::string::npos || s.name.ends_with("bias") || s.name.starts_with("h.0."))
      continue;
    const auto g = model.arena().grad(s);
    float m = 0;
    for (index_t i = 0; i < g.size(); ++i) m = std::max(m, std::abs(g.data()[i]));
    if (s.name.ends_with("guide")) {
      ++guides;
      CHECK(m > 0.0f);
    } else {
      ++structured;
      INFO(s.name);
      CHECK(m == 0.0f);
    }
  }
  CHECK(guides == 2 * (c.n_layer - 1));
  CHECK(structured == 4 * (c.n_layer - 1));
}

TEST_CASE("SGT reduce-flop runs the guide on a fraction alpha of the maps") {
  using S = LowRank<float>;
  GuidedGpt<S, S> model(tiny(FfnKind::lowrank));
  Rng rng(10);
  const GuideSchedule schedule{GuideDecay::cosine, 400};
  index_t active = 0, draws = 0;
  for (index_t t = 0; t < schedule.guided_steps; ++t) {
    const double alpha = schedule.alpha(t);
    set_guides(model, alpha, /*reduce_flop=*/true, rng);
    for (auto& block : model.blocks())
      block.mlp().for_each_map([&](const auto& map) {
        CHECK((map.alpha() == 0.0 || map.alpha() == alpha));
        active += map.alpha() > 0;
        ++draws;
      });
  }
  CHECK(draws == 400 * 4);
  CHECK(double(active) / double(draws) == doctest::Approx(0.5).epsilon(0.06));
}

TEST_CASE("SGT release drops the guides from the model, the optimizer and the checkpoint") {
  for_each_structure<float>([](auto s, FfnKind kind) {
    using S = typename decltype(s)::type;
    const GptConfig c = tiny(kind);
    GuidedGpt<S, S> guided(c);
    Rng rng(11);
    guided.init(rng);
    AdamW<float> opt(guided.arena());
    typename GuidedGpt<S, S>::Context ctx;
    const GuideSchedule schedule{GuideDecay::cosine, 3};
    for (index_t t = 0; t < 3; ++t) {  // a few guided steps, so every tensor moves
      set_guides(guided, schedule.alpha(t), true, rng);
      const Batch b = random_batch(rng, c.vocab_size);
      guided.arena().zero_grads();
      guided.forward(ctx, b.view(), 1.0f);
      guided.backward(ctx);
      opt.step(guided.arena(), 1e-2);
    }
    set_guides(guided, 0.0);
    const Batch b = random_batch(rng, c.vocab_size);
    std::vector<double> before;
    {
      typename GuidedGpt<S, S>::Context ectx;
      guided.forward(ectx, b.view());
      const auto l = guided.logits(ectx);
      before.assign(l.data(), l.data() + l.size());
    }

    Gpt<S, S> plain = release_guides(guided);
    const AdamW<float> carried = opt.carried_to(guided.arena(), plain.arena());
    CHECK(plain.param_count() == Gpt<S, S>(c).param_count());
    CHECK(guided.param_count() - plain.param_count() == 2 * (c.n_layer - 1) * c.d_model * c.ffn_dim);
    for (const ParamSlot& p : plain.arena().slots()) CHECK(p.name.find("guide") == std::string::npos);
    CHECK(carried.size() == plain.param_count());
    CHECK(carried.step_count() == 3);
    for (const ParamSlot& p : plain.arena().slots()) {
      const ParamSlot& g = guided.arena().slot(p.name);
      for (index_t i = 0; i < p.size(); ++i) {
        REQUIRE(plain.arena().values()[p.offset + i] == guided.arena().values()[g.offset + i]);
        REQUIRE(carried.m().data()[p.offset + i] == opt.m().data()[g.offset + i]);
        REQUIRE(carried.v().data()[p.offset + i] == opt.v().data()[g.offset + i]);
      }
    }
    std::vector<double> after;
    {
      typename Gpt<S, S>::Context pctx;
      plain.forward(pctx, b.view());
      const auto l = plain.logits(pctx);
      after.assign(l.data(), l.data() + l.size());
    }
    CHECK(after == before);  // the released model is the guided one at a = 0, bit for bit

    test::TempDir dir("sgt_release");
    const auto ck = save_checkpoint<float>(dir.path, 3, plain.arena(),
                                           {const_cast<float*>(carried.m().data()), std::size_t(carried.size())},
                                           {const_cast<float*>(carried.v().data()), std::size_t(carried.size())},
                                           nlohmann::json::object(), nlohmann::json::object());
    for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
      const auto st = SafetensorsFile::open(ck / file);
      for (const auto& t : st.tensors()) CHECK(t.name.find("guide") == std::string::npos);
    }
  });
}
