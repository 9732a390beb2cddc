// LiGO's learned growth operator (spec growth.md §5, §12.1 item 11): at initialisation it
// reproduces Net2Net + StackBERT plans tensor for tensor and keeps the function; the official
// code's unnormalised input maps do not; backward() is the exact gradient of the grown model's
// loss with respect to every operator parameter (central differences); training the operator
// does not hurt held-out loss and its final materialisation equals the weights training used;
// plans and arenas it cannot handle are rejected with a sentence.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/grow/apply.hpp>
#include <bonsai/train/learned_growth.hpp>
#include <bonsai/grow/ligo.hpp>
#include <bonsai/grow/presets.hpp>
#include <bonsai/nn/gpt.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/finite_diff.hpp"
#include "support/operator_gradients.hpp"

using namespace bonsai;
using bonsai::test::max_diff;

namespace {

using Model = Gpt<Dense<double>, Dense<double>>;

GptConfig gpt2_style() {
  GptConfig c;
  c.vocab_size = 13;
  c.max_seq_len = 6;
  c.n_layer = 2;
  c.d_model = 4;
  c.n_head = 2;
  c.ffn_dim = 8;
  return c;
}

GptConfig llama_style() {
  GptConfig c = gpt2_style();
  c.norm = NormKind::rmsnorm;
  c.pos = PosKind::rope;
  c.act = ActKind::swiglu;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.attn_dim = 8;  // head_dim 2
  return c;
}

/// Weights N(0, 0.5^2) everywhere (norm gains 1 + N(0, 0.5^2)), so norm statistics and every
/// bias matter.
void randomize(Model& model, std::uint64_t seed) {
  Rng rng(seed);
  auto& arena = model.arena();
  for (const ParamSlot& s : arena.slots()) {
    const bool gain = s.name.find("ln_") != std::string::npos && s.name.ends_with("weight");
    for (index_t i = 0; i < s.size(); ++i)
      arena.values()[s.offset + i] = (gain ? 1.0 : 0.0) + 0.5 * rng.normal();
  }
}

constexpr index_t B = 2, T = 6;

std::vector<std::int32_t> tokens(index_t vocab, std::uint64_t seed = 7) {
  Rng rng(seed);
  std::vector<std::int32_t> t(B * T);
  for (auto& x : t) x = std::int32_t(rng.uniform() * double(vocab));
  return t;
}

std::vector<double> logits(Model& model, const std::vector<std::int32_t>& tok) {
  Model::Context ctx;
  model.forward(ctx, TokenBatch{tok.data(), nullptr, B, T});
  const auto l = model.logits(ctx);
  return std::vector<double>(l.data(), l.data() + l.size());
}

std::vector<double> all_values(const ParamArena<double>& arena) {
  return std::vector<double>(arena.values(), arena.values() + arena.size());
}

/// Net2Net + StackBERT-like plans of `c`: D doubled (every residual unit copied twice), one
/// more key/value head group and FFN 8 -> 13 by random (non-uniform) copies, 2 -> 4 layers by
/// stacking or by Net2Net's zero-output layers.
GrowthPlan copy_plan(const GptConfig& c, bool stack, std::uint64_t seed = 5) {
  Rng rng(seed);
  WidthMap heads = WidthMap::random(c.kv_heads(), c.kv_heads() + 1, rng);
  WidthMap ffn = WidthMap::random(c.ffn_width(), c.ffn_width() + 5, rng);
  DepthMap depth = stack ? DepthMap::stack(c.n_layer, 4)
                         : DepthMap::insert_identity(c.n_layer, 4, LayerInit::zero_out);
  return make_growth_plan(c, WidthMap::tiled(c.d_model, 2 * c.d_model, Fill::copy),
                          std::move(heads), std::move(ffn), std::move(depth),
                          {.split_noise = 0.0, .fill_std = 0.0});
}

/// The largest difference, over every parameter, between LiGO's materialisation at
/// initialisation and grow_parameters; `bitwise` is set when every value is identical.
double init_difference(const GrowthPlan& plan, bool& bitwise, std::uint64_t seed = 3) {
  Model small(plan.from), grown(plan.to), learned(plan.to);
  randomize(small, seed);
  grow_parameters(plan, small.arena(), grown.arena());
  Ligo<double> ligo(plan, small.arena());
  randomize(learned, seed + 1);  // every value must be overwritten
  ligo.materialize(learned.arena());
  const auto a = all_values(grown.arena()), b = all_values(learned.arena());
  bitwise = a == b;
  return max_diff(a, b);
}

/// A (B, T) batch of a fixed sequence rule, next = (3 tok + 1) mod V, from random starts.
struct PatternBatch {
  std::vector<std::int32_t> in, tgt;
  PatternBatch(index_t vocab, std::uint64_t seed) : in(B * T), tgt(B * T) {
    Rng rng(seed);
    for (index_t b = 0; b < B; ++b) {
      std::int32_t tok = std::int32_t(rng.uniform() * double(vocab));
      for (index_t t = 0; t < T; ++t) {
        in[std::size_t(b * T + t)] = tok;
        tok = std::int32_t((3 * tok + 1) % vocab);
        tgt[std::size_t(b * T + t)] = tok;
      }
    }
  }
  TokenBatch batch() const { return {in.data(), tgt.data(), B, T}; }
};

double mean_loss(Model& model, const std::vector<PatternBatch>& batches) {
  Model::Context ctx;
  double sum = 0;
  for (const PatternBatch& p : batches) sum += model.forward(ctx, p.batch());
  return sum / double(batches.size());
}

}  // namespace

TEST_CASE("ligo: at init it reproduces Net2Net and StackBERT plans and keeps the function") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    for (bool stack : {false, true}) {
      CAPTURE(std::string(to_string(c.norm)));
      CAPTURE(stack);
      const GrowthPlan plan = copy_plan(c, stack);
      REQUIRE(!plan.ffn.uniform());
      REQUIRE(!plan.heads.uniform());
      CHECK(plan.to.d_model == 8);
      CHECK(plan.to.n_layer == 4);
      bool bitwise = false;
      CHECK(init_difference(plan, bitwise) <= 1e-12);
      CHECK(bitwise);

      Model small(c), big(plan.to);
      randomize(small, 3);
      Ligo<double> ligo(plan, small.arena());
      ligo.materialize(big.arena());
      const auto tok = tokens(c.vocab_size);
      const double diff = max_diff(logits(small, tok), logits(big, tok));
      if (stack)
        CHECK(diff > 1e-3);  // stacking changes the function, by design
      else
        CHECK(diff <= 1e-10);
    }
    // The library's presets, where the operator can start from them: Net2Net widening heads and
    // FFN with zero-output layers, and StackBERT.
    for (GrowthMethod m : {GrowthMethod::net2net, GrowthMethod::stackbert}) {
      CAPTURE(std::string(to_string(m)));
      const GrowthTarget t = m == GrowthMethod::net2net ? GrowthTarget{0, 2 * c.n_head, 11, 3}
                                                        : GrowthTarget{0, 0, 0, 4};
      bool bitwise = false;
      CHECK(init_difference(make_preset(m, c, t, {.fill_std = 0.0}), bitwise) <= 1e-12);
      CHECK(bitwise);
    }
  }
}

TEST_CASE("ligo: the operator's parameters and their initial maps") {
  const GptConfig c = llama_style();
  const GrowthPlan plan = copy_plan(c, false);
  Model small(c);
  randomize(small, 3);
  Ligo<double> ligo(plan, small.arena());
  auto& arena = ligo.arena();
  CHECK(arena.slot("res.B").shape == std::vector<index_t>{8, 4});
  CHECK(arena.slot("res.A").shape == std::vector<index_t>{8, 4});
  CHECK(arena.slot("depth.mlp.gate").shape == std::vector<index_t>{4, 2});
  CHECK(arena.slot("h.3.attn.q.B").shape == std::vector<index_t>{12, 8});  // H' hd x H hd
  CHECK(arena.slot("h.3.attn.k.B").shape == std::vector<index_t>{6, 4});   // Hkv' hd x Hkv hd
  CHECK(arena.slot("h.3.attn.proj.A").shape == std::vector<index_t>{12, 8});
  CHECK(arena.slot("h.0.mlp.up.B").shape == std::vector<index_t>{13, 8});
  CHECK(arena.slot("h.0.mlp.down.A").shape == std::vector<index_t>{13, 8});
  CHECK(arena.find("depth.ln_1") != nullptr);
  // A = Q^T: each row a copy's share 1 / count; B = P: plain copies.
  const auto a = arena.value("res.A"), b = arena.value("res.B");
  for (index_t j = 0; j < 8; ++j)
    for (index_t i = 0; i < 4; ++i) {
      CHECK(b.data()[j * 4 + i] == (i == j % 4 ? 1.0 : 0.0));
      CHECK(a.data()[j * 4 + i] == (i == j % 4 ? 0.5 : 0.0));
    }
  // Depth: one-hot on the source layer; the zero_out layers' output projections blend nothing.
  const auto proj = arena.value("depth.attn.proj"), ln = arena.value("depth.ln_1");
  for (index_t l = 0; l < 4; ++l) {
    const LayerSource& s = plan.depth[l];
    double sum_proj = 0, sum_ln = 0;
    for (index_t j = 0; j < 2; ++j) {
      sum_proj += proj.data()[l * 2 + j];
      sum_ln += ln.data()[l * 2 + j];
    }
    CHECK(ln.data()[l * 2 + s.src] == 1.0);
    CHECK(sum_ln == 1.0);
    CHECK(sum_proj == (s.init == LayerInit::zero_out ? 0.0 : 1.0));
  }
  CHECK(ligo.config().d_model == 8);
  // init() restores the maps after training moved them.
  const auto before = all_values(arena);
  for (index_t i = 0; i < arena.size(); ++i) arena.values()[i] += 0.1;
  ligo.init();
  CHECK(all_values(arena) == before);
}

TEST_CASE("ligo: the official code's unnormalised input maps do not keep the function") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    CAPTURE(std::string(to_string(c.norm)));
    const GrowthPlan plan = copy_plan(c, false);
    Model small(c), big(plan.to);
    randomize(small, 3);
    Ligo<double> ligo(plan, small.arena(), {.normalize_inputs = false});
    ligo.materialize(big.arena());
    const auto tok = tokens(c.vocab_size);
    CHECK(max_diff(logits(small, tok), logits(big, tok)) > 1e-3);
    // The input maps are plain copies: the fan-in weights are the grown ones times the count.
    const auto a = ligo.arena().value("res.A");
    for (index_t j = 0; j < 8; ++j) CHECK(a.data()[j * 4 + j % 4] == 1.0);
  }
}

TEST_CASE("ligo: backward is the exact gradient of the loss w.r.t. every operator parameter") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    for (bool stack : {false, true}) {
      CAPTURE(std::string(to_string(c.norm)));
      CAPTURE(stack);
      const GrowthPlan plan = copy_plan(c, stack);
      Model small(c), big(plan.to);
      randomize(small, 13);
      Ligo<double> ligo(plan, small.arena());
      const auto in = tokens(c.vocab_size, 41), tgt = tokens(c.vocab_size, 42);
      bonsai::test::check_operator_gradients(ligo, big, TokenBatch{in.data(), tgt.data(), B, T});
    }
  }
}

TEST_CASE("ligo: short operator training keeps held-out loss and ends on its own weights") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    CAPTURE(std::string(to_string(c.norm)));
    const GrowthPlan plan = copy_plan(c, true);
    Model small(c), big(plan.to), check(plan.to);
    randomize(small, 17);
    Ligo<double> ligo(plan, small.arena());
    std::vector<PatternBatch> train, held_out;
    for (std::uint64_t s = 0; s < 4; ++s) train.emplace_back(c.vocab_size, 100 + s);
    for (std::uint64_t s = 0; s < 3; ++s) held_out.emplace_back(c.vocab_size, 200 + s);

    ligo.materialize(big.arena());
    const double before = mean_loss(big, held_out);
    std::size_t next = 0;
    auto next_batch = [&] { return train[next++ % train.size()].batch(); };
    // The weights and operator parameters of the last step, before its optimizer update.
    const index_t steps = 30;
    std::vector<double> used, op_used;
    auto observe = [&](index_t step, double) {
      if (step != steps - 1) return;
      used = all_values(big.arena());
      op_used = all_values(ligo.arena());
    };
    const auto losses =
        train_learned_growth(ligo, big, next_batch, {.steps = steps, .lr = 1e-3}, observe);
    REQUIRE(losses.size() == std::size_t(steps));
    REQUIRE(!used.empty());
    const double after = mean_loss(big, held_out);
    MESSAGE("held-out loss ", before, " -> ", after, "; train ", losses.front(), " -> ",
            losses.back());
    CHECK(after <= before);
    CHECK(losses.back() < losses.front());

    // The on-the-fly weights of the last step are materialize() of the parameters it used, and
    // the final target is materialize() of the trained parameters.
    const auto trained = all_values(ligo.arena());
    CHECK(trained != op_used);
    std::copy(op_used.begin(), op_used.end(), ligo.arena().values());
    ligo.materialize(check.arena());
    CHECK(all_values(check.arena()) == used);
    std::copy(trained.begin(), trained.end(), ligo.arena().values());
    ligo.materialize(check.arena());
    CHECK(all_values(check.arena()) == all_values(big.arena()));
    CHECK(all_values(big.arena()) != used);
  }
}

TEST_CASE("ligo: plans and arenas it cannot handle are rejected with a sentence") {
  const GptConfig c = gpt2_style();
  Model small(c);
  randomize(small, 1);
  auto error = [&](const GrowthPlan& p) {
    return ::test::error_of([&] { Ligo<double> ligo(p, small.arena()); });
  };
  // Structured FFNs.
  GptConfig lr = c;
  lr.ffn = FfnKind::lowrank;
  lr.rank = 3;
  {
    Gpt<LowRank<double>, LowRank<double>> low(lr);
    const GrowthPlan p = make_preset(GrowthMethod::stackbert, lr, {0, 0, 0, 4});
    const std::string e = ::test::error_of([&] { Ligo<double> ligo(p, low.arena()); });
    CHECK(e.find("dense FFN maps only") != std::string::npos);
    CHECK(e.find("lowrank") != std::string::npos);
  }
  // MSG's masked plan, AKI, LEMON's avg fill and noisy split, cancel layers, non-uniform
  // residual copies.
  CHECK(error(make_preset(GrowthMethod::msg, c, {8, 4, 16, 4})).find("MSG") != std::string::npos);
  CHECK(error(make_preset(GrowthMethod::aki, c, {0, 4, 16, 4})).find("AKI") != std::string::npos);
  CHECK(error(make_preset(GrowthMethod::lemon, c, {6, 4, 16, 4}, {.split_noise = 0.0}))
            .find("avg-filled") != std::string::npos);
  CHECK(error(make_preset(GrowthMethod::lemon, c, {8, 4, 16, 4})).find("split noise") !=
        std::string::npos);
  const GrowthPlan good = copy_plan(c, false);
  CHECK(error(make_growth_plan(c, good.residual, good.heads, good.ffn,
                               DepthMap::insert_identity(2, 4, LayerInit::cancel)))
            .find("cancel layer") != std::string::npos);
  CHECK(error(make_growth_plan(c, WidthMap(4, {0, 1, 2, 3, 0, 0}, std::vector<Fill>(6, Fill::copy)),
                               good.heads, good.ffn, good.depth))
            .find("unequally often") != std::string::npos);
  CHECK(error(make_growth_plan(c, good.residual, good.heads, WidthMap::appended(8, 12, Fill::zero),
                               good.depth))
            .find("FFN unit 8 is zero-filled") != std::string::npos);
  // A source arena of another model, a target arena of the wrong shape.
  {
    Model other(llama_style());
    const std::string e = ::test::error_of([&] { Ligo<double> ligo(good, other.arena()); });
    CAPTURE(e);
    CHECK(e.find("source arena") != std::string::npos);
  }
  {
    GptConfig wide = gpt2_style();
    wide.d_model = 6;
    Model wrong_source(wide);
    const std::string e = ::test::error_of([&] { Ligo<double> ligo(good, wrong_source.arena()); });
    CHECK(e ==
          "LiGO: the source arena's 'wte' is (13, 6) but the plan's source model makes it (13, 4)");
  }
  Ligo<double> ligo(good, small.arena());
  Model wrong_target(c);
  const std::string e = ::test::error_of([&] { ligo.materialize(wrong_target.arena()); });
  CHECK(e ==
        "LiGO: the target arena's 'wte' is (13, 4) but the plan's grown model makes it (13, 8)");
  CHECK(::test::error_of([&] { ligo.backward(wrong_target.arena()); }) == e);
  Model big(ligo.config());
  GptConfig other_eps = ligo.config();
  other_eps.norm_eps = 1e-3;
  Model eps_model(other_eps);
  PatternBatch p(c.vocab_size, 1);
  CHECK(::test::error_of([&] {
          train_learned_growth(ligo, eps_model, [&] { return p.batch(); }, {.steps = 1});
        }).find("build it with the operator's config()") != std::string::npos);
}
