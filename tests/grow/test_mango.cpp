// Mango's tensor-ring growth operator (spec growth.md §8, §12.1 item 13): the ring contraction
// and its transpose equal the dense map S on a tiny case; at initialisation (R = 1, and R = 2
// without bond noise) it reproduces the Net2Net + StackBERT plan it starts from tensor for tensor
// and keeps the function where the plan does; backward() is the exact gradient of the grown
// model's loss with respect to every core entry (central differences); a short operator training
// does not hurt held-out loss and its final materialisation equals the weights training used;
// models and plans it cannot handle are rejected with a sentence.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/grow/apply.hpp>
#include <bonsai/grow/mango.hpp>
#include <bonsai/grow/presets.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/train/adamw.hpp>
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

/// RMSNorm, rotary positions, SwiGLU; multi-head attention (no GQA), head_dim 2.
GptConfig llama_style() {
  GptConfig c = gpt2_style();
  c.norm = NormKind::rmsnorm;
  c.pos = PosKind::rope;
  c.act = ActKind::swiglu;
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

/// The Net2Net + StackBERT-like plan Mango starts from, built with the growth machinery: every
/// residual unit and head copied k times circularly, every d_model-block of the FFN likewise,
/// layers stacked (StackBERT) or followed by zero-output copies (Net2Net's deeper net).
GrowthPlan copy_plan(const GptConfig& c, index_t k, index_t layers, bool stack) {
  const index_t d = c.d_model, f = c.ffn_width();
  DepthMap depth = stack ? DepthMap::stack(c.n_layer, layers)
                         : DepthMap::insert_identity(c.n_layer, layers, LayerInit::zero_out);
  return make_growth_plan(c, WidthMap::tiled(d, k * d, Fill::copy),
                          WidthMap::tiled(c.kv_heads(), k * c.kv_heads(), Fill::copy),
                          WidthMap::tiled(f, k * f, Fill::copy, f / d), std::move(depth),
                          {.split_noise = 0.0, .fill_std = 0.0});
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

// ---- the dense map S, written out ---------------------------------------------------------

struct RingDims {
  index_t r, b1, b2, i1, i2, o1, o2, l1, l2;
};

/// Core entry [r, x, y, r'] of a row-major (R, n1, n2, R) array.
double core(const std::vector<double>& c, index_t R, index_t n2, index_t r, index_t x, index_t y,
            index_t rr, index_t n1) {
  return c[std::size_t(((r * n1 + x) * n2 + y) * R + rr)];
}

/// M2 = S M1 with every coefficient S[b1,i1,o1,l1; b2,i2,o2,l2] = Tr(S_B S_I S_O S_L) built from
/// the four cores and summed over all eight tensor indices; M1 (L1, B1, I1, O1), M2 (L2, B2, I2,
/// O2) as TensorRing stores them.
std::vector<double> dense_map(const RingDims& d, const std::vector<double>& sb,
                              const std::vector<double>& si, const std::vector<double>& so,
                              const std::vector<double>& sl, const std::vector<double>& m1) {
  const index_t R = d.r;
  std::vector<double> m2(static_cast<std::size_t>(d.l2 * d.b2 * d.i2 * d.o2), 0.0);
  for (index_t b2 = 0; b2 < d.b2; ++b2)
    for (index_t i2 = 0; i2 < d.i2; ++i2)
      for (index_t o2 = 0; o2 < d.o2; ++o2)
        for (index_t l2 = 0; l2 < d.l2; ++l2) {
          double sum = 0;
          for (index_t b1 = 0; b1 < d.b1; ++b1)
            for (index_t i1 = 0; i1 < d.i1; ++i1)
              for (index_t o1 = 0; o1 < d.o1; ++o1)
                for (index_t l1 = 0; l1 < d.l1; ++l1) {
                  double s = 0;  // the trace of the product of four R x R matrices
                  for (index_t r0 = 0; r0 < R; ++r0)
                    for (index_t r1 = 0; r1 < R; ++r1)
                      for (index_t r2 = 0; r2 < R; ++r2)
                        for (index_t r3 = 0; r3 < R; ++r3)
                          s += core(sb, R, d.b2, r0, b1, b2, r1, d.b1) *
                               core(si, R, d.i2, r1, i1, i2, r2, d.i1) *
                               core(so, R, d.o2, r2, o1, o2, r3, d.o1) *
                               core(sl, R, d.l2, r3, l1, l2, r0, d.l1);
                  sum += s * m1[std::size_t(((l1 * d.b1 + b1) * d.i1 + i1) * d.o1 + o1)];
                }
          m2[std::size_t(((l2 * d.b2 + b2) * d.i2 + i2) * d.o2 + o2)] = sum;
        }
  return m2;
}

std::vector<double> random_vector(index_t n, Rng& rng) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& x : v) x = rng.normal();
  return v;
}

}  // namespace

TEST_CASE("mango: the tensor-ring contraction and its transpose equal the dense map S") {
  const RingDims d{2, 3, 4, 2, 3, 4, 3, 2, 4};  // R = 2, every mode <= 4, sizes all differ
  const TensorRing<double> ring(d.r, {d.b1, d.b2}, {d.i1, d.i2}, {d.o1, d.o2}, {d.l1, d.l2});
  CHECK(ring.source_size() == d.b1 * d.i1 * d.o1 * d.l1);
  CHECK(ring.target_size() == d.b2 * d.i2 * d.o2 * d.l2);
  Rng rng(11);
  std::vector<double> sb = random_vector(ring.core_size(ring.b()), rng);
  std::vector<double> si = random_vector(ring.core_size(ring.i()), rng);
  std::vector<double> so = random_vector(ring.core_size(ring.o()), rng);
  std::vector<double> sl = random_vector(ring.core_size(ring.l()), rng);
  const std::vector<double> m1 = random_vector(ring.source_size(), rng);

  std::vector<double> m2(static_cast<std::size_t>(ring.target_size()), 99.0);  // overwritten
  ring.apply({sb.data(), si.data(), so.data(), sl.data()}, m1.data(), m2.data());
  const std::vector<double> want = dense_map(d, sb, si, so, sl, m1);
  double scale = 0;
  for (double x : want) scale = std::max(scale, std::abs(x));
  REQUIRE(scale > 1.0);
  CHECK(max_diff(m2, want) <= 1e-12 * scale);

  // The transpose: f = <G, S M1> is linear in each core, so df/dcore[e] is f with that core
  // replaced by the unit tensor e (the others kept), computed with the dense map.
  const std::vector<double> g2 = random_vector(ring.target_size(), rng);
  std::vector<double> dsb(sb.size(), 0.0), dsi(si.size(), 0.0), dso(so.size(), 0.0),
      dsl(sl.size(), 0.0);
  ring.backward({sb.data(), si.data(), so.data(), sl.data()}, m1.data(), g2.data(),
                {dsb.data(), dsi.data(), dso.data(), dsl.data()});
  auto dot = [&](const std::vector<double>& m) {
    double s = 0;
    for (std::size_t n = 0; n < m.size(); ++n) s += g2[n] * m[n];
    return s;
  };
  std::vector<std::vector<double>*> cores{&sb, &si, &so, &sl};
  std::vector<const std::vector<double>*> grads{&dsb, &dsi, &dso, &dsl};
  for (std::size_t c = 0; c < cores.size(); ++c) {
    CAPTURE(c);
    const std::vector<double> keep = *cores[c];
    double worst = 0, largest = 0;
    for (std::size_t e = 0; e < keep.size(); ++e) {
      std::fill(cores[c]->begin(), cores[c]->end(), 0.0);
      (*cores[c])[e] = 1.0;
      const double want_e = dot(dense_map(d, sb, si, so, sl, m1));
      worst = std::max(worst, std::abs((*grads[c])[e] - want_e));
      largest = std::max(largest, std::abs(want_e));
    }
    *cores[c] = keep;
    REQUIRE(largest > 1.0);
    CHECK(worst <= 1e-12 * largest);
  }
  // backward adds to what the gradients hold.
  const std::vector<double> once = dsb;
  ring.backward({sb.data(), si.data(), so.data(), sl.data()}, m1.data(), g2.data(),
                {dsb.data(), dsi.data(), dso.data(), dsl.data()});
  for (std::size_t e = 0; e < once.size(); ++e) CHECK(dsb[e] == doctest::Approx(2 * once[e]));
}

TEST_CASE("mango: at initialisation it reproduces the Net2Net and StackBERT plan it starts from") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    for (const auto& [k, layers] : {std::pair<index_t, index_t>{2, 4}, {3, 3}}) {
      for (bool stack : {false, true}) {
        CAPTURE(std::string(to_string(c.norm)));
        CAPTURE(k);
        CAPTURE(stack);
        const GrowthPlan plan = copy_plan(c, k, layers, stack);
        CHECK(plan.to.d_model == k * c.d_model);
        CHECK(plan.to.n_layer == layers);
        CHECK(plan.function_preserving() == !stack);
        // make_mango_plan builds the same maps.
        const GrowthPlan same = make_mango_plan(c, k * c.d_model, plan.depth);
        for (index_t j = 0; j < plan.ffn.to(); ++j) CHECK(same.ffn.source(j) == plan.ffn.source(j));
        CHECK(same.to.ffn_width() == plan.to.ffn_width());

        Model small(c), grown(plan.to), learned(plan.to);
        randomize(small, 3);
        grow_parameters(plan, small.arena(), grown.arena());
        Mango<double> mango(plan, small.arena());
        CHECK(mango.rank() == 1);
        const index_t nb = c.act == ActKind::swiglu ? 10 : 8;  // 4 + (2 or 1) F / D + F / D
        CHECK(mango.blocks() == nb);
        CHECK(mango.block_name(3) == "o");
        CHECK(mango.block_name(nb - 1) == "down.1");
        CHECK(mango.arena().slot("S_B").shape == std::vector<index_t>{1, nb, nb, 1});
        CHECK(mango.arena().slot("S_I").shape == std::vector<index_t>{1, 4, 4 * k, 1});
        CHECK(mango.arena().slot("S_O").shape == std::vector<index_t>{1, 4, 4 * k, 1});
        CHECK(mango.arena().slot("S_L").shape == std::vector<index_t>{1, 2, layers, 1});
        randomize(learned, 4);  // every value must be overwritten
        mango.materialize(learned.arena());
        CHECK(max_diff(all_values(grown.arena()), all_values(learned.arena())) <= 1e-12);

        const auto tok = tokens(c.vocab_size);
        const double diff = max_diff(logits(small, tok), logits(learned, tok));
        if (stack)
          CHECK(diff > 1e-3);  // stacking changes the function, by design
        else
          CHECK(diff <= 1e-10);

        // init() restores the cores after they moved.
        auto& op = mango.arena();
        const auto before = all_values(op);
        for (index_t i = 0; i < op.size(); ++i) op.values()[i] += 0.1;
        mango.init();
        CHECK(all_values(op) == before);
      }
    }
  }
}

TEST_CASE("mango: rank 2 keeps the function without bond noise and bond noise moves it slightly") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    CAPTURE(std::string(to_string(c.norm)));
    const GrowthPlan plan = copy_plan(c, 2, 4, false);
    Model small(c), one(plan.to), two(plan.to), noisy(plan.to);
    randomize(small, 5);
    Mango<double>(plan, small.arena()).materialize(one.arena());
    Mango<double> quiet(plan, small.arena(), {.rank = 2, .bond_noise = 0.0});
    CHECK(quiet.rank() == 2);
    CHECK(quiet.arena().slot("S_I").shape == std::vector<index_t>{2, 4, 8, 2});
    quiet.materialize(two.arena());
    CHECK(max_diff(all_values(one.arena()), all_values(two.arena())) <= 1e-12);
    const auto tok = tokens(c.vocab_size);
    const auto base = logits(small, tok);
    CHECK(max_diff(base, logits(two, tok)) <= 1e-10);
    // There every entry outside bond (0, 0) has gradient exactly 0 (a cycle that leaves bond 0
    // passes two of them), so bond noise is what lets them train.
    {
      const auto in = tokens(c.vocab_size, 51), tgt = tokens(c.vocab_size, 52);
      Model::Context ctx;
      two.arena().zero_grads();
      two.forward(ctx, TokenBatch{in.data(), tgt.data(), B, T}, 1.0);
      two.backward(ctx);
      auto& op = quiet.arena();
      op.zero_grads();
      quiet.backward(two.arena());
      double on = 0, off = 0;
      for (const ParamSlot& s : op.slots()) {
        const index_t n = s.size() / 4;  // (2, n1, n2, 2): entry [r, x, r'] at (r n + x) 2 + r'
        for (index_t r = 0; r < 2; ++r)
          for (index_t x = 0; x < n; ++x)
            for (index_t rr = 0; rr < 2; ++rr) {
              const double g = std::abs(op.grads()[s.offset + (r * n + x) * 2 + rr]);
              (r == 0 && rr == 0 ? on : off) = std::max(r == 0 && rr == 0 ? on : off, g);
            }
      }
      CHECK(on > 1e-3);
      CHECK(off == 0.0);
    }

    // Default bond noise (1e-3): the off-(0, 0) bond entries are non-zero, the function moves
    // a little.
    Mango<double> mango(plan, small.arena(), {.rank = 2});
    CHECK(mango.options().bond_noise == 1e-3);
    const auto s_b = mango.arena().value("S_B");
    CHECK(s_b.data()[1] != 0.0);  // S_B[0, 0, 0, 1]
    CHECK(s_b.data()[0] == 1.0);  // S_B[0, 0, 0, 0]
    mango.materialize(noisy.arena());
    const double moved = max_diff(base, logits(noisy, tok));
    MESSAGE("logit change with bond noise 1e-3: ", moved);
    CHECK(moved > 1e-12);
    CHECK(moved < 1e-3);
  }
}

TEST_CASE("mango: a float operator materialises the plan it starts from") {
  using F = Gpt<Dense<float>, Dense<float>>;
  const GptConfig c = llama_style();
  const GrowthPlan plan = copy_plan(c, 2, 4, false);
  F small(c), grown(plan.to), learned(plan.to);
  Rng rng(8);
  for (index_t i = 0; i < small.arena().size(); ++i)
    small.arena().values()[i] = float(1.0 + 0.5 * rng.normal());
  grow_parameters(plan, small.arena(), grown.arena());
  Mango<float> mango(plan, small.arena(), {.rank = 2, .bond_noise = 0.0});
  mango.materialize(learned.arena());
  double worst = 0;
  for (index_t i = 0; i < grown.arena().size(); ++i)
    worst =
        std::max(worst, double(std::abs(grown.arena().values()[i] - learned.arena().values()[i])));
  CHECK(worst <= 1e-6);
  mango.arena().zero_grads();
  learned.arena().zero_grads();
  mango.backward(learned.arena());
}

TEST_CASE("mango: backward is the exact gradient of the loss w.r.t. every core entry") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    for (const auto& [rank, stack] : {std::pair<index_t, bool>{1, true}, {2, false}}) {
      CAPTURE(std::string(to_string(c.norm)));
      CAPTURE(rank);
      CAPTURE(stack);
      const GrowthPlan plan = copy_plan(c, 2, 4, stack);
      Model small(c), big(plan.to);
      randomize(small, 13);
      Mango<double> mango(plan, small.arena(), {.rank = rank, .bond_noise = 0.1});
      const auto in = tokens(c.vocab_size, 41), tgt = tokens(c.vocab_size, 42);
      bonsai::test::check_operator_gradients(mango, big, TokenBatch{in.data(), tgt.data(), B, T});
    }
  }
}

TEST_CASE("mango: a short core training does not hurt held-out loss and ends on its own weights") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    CAPTURE(std::string(to_string(c.norm)));
    const GrowthPlan plan = copy_plan(c, 2, 4, true);
    Model small(c), big(plan.to), check(plan.to);
    randomize(small, 17);
    Mango<double> mango(plan, small.arena(), {.rank = 2});
    std::vector<PatternBatch> train, held_out;
    for (std::uint64_t s = 0; s < 4; ++s) train.emplace_back(c.vocab_size, 100 + s);
    for (std::uint64_t s = 0; s < 3; ++s) held_out.emplace_back(c.vocab_size, 200 + s);

    mango.materialize(big.arena());
    const double before = mean_loss(big, held_out);
    AdamW<double> opt(mango.arena(), {.weight_decay = 0.0});
    Model::Context ctx;
    const index_t steps = 30;
    std::vector<double> losses, used, op_used;
    for (index_t step = 0; step < steps; ++step) {
      mango.materialize(big.arena());
      big.arena().zero_grads();
      losses.push_back(big.forward(ctx, train[std::size_t(step) % train.size()].batch(), 1.0));
      big.backward(ctx);
      mango.arena().zero_grads();
      mango.backward(big.arena());
      if (step == steps - 1) {  // the weights and cores of the last step, before its update
        used = all_values(big.arena());
        op_used = all_values(mango.arena());
      }
      opt.step(mango.arena(), 1e-3);
    }
    mango.materialize(big.arena());
    const double after = mean_loss(big, held_out);
    MESSAGE("held-out loss ", before, " -> ", after, "; train ", losses.front(), " -> ",
            losses.back());
    CHECK(after <= before);
    CHECK(losses.back() < losses.front());

    // The on-the-fly weights of the last step are materialize() of the cores it used, and the
    // final target is materialize() of the trained cores.
    const auto trained = all_values(mango.arena());
    CHECK(trained != op_used);
    std::copy(op_used.begin(), op_used.end(), mango.arena().values());
    mango.materialize(check.arena());
    CHECK(all_values(check.arena()) == used);
    std::copy(trained.begin(), trained.end(), mango.arena().values());
    mango.materialize(check.arena());
    CHECK(all_values(check.arena()) == all_values(big.arena()));
    CHECK(all_values(big.arena()) != used);
  }
}

TEST_CASE("mango: identity layers keep their output blocks at zero while the cores train") {
  const GptConfig c = gpt2_style();
  const GrowthPlan plan = copy_plan(c, 2, 4, false);  // layers 1 and 3 are zero_out copies
  REQUIRE(plan.depth[1].init == LayerInit::zero_out);
  Model small(c), big(plan.to);
  randomize(small, 21);
  Mango<double> mango(plan, small.arena(), {.rank = 2, .bond_noise = 0.1});
  AdamW<double> opt(mango.arena(), {.weight_decay = 0.0});
  PatternBatch p(c.vocab_size, 3);
  Model::Context ctx;
  for (int step = 0; step < 3; ++step) {
    mango.materialize(big.arena());
    big.arena().zero_grads();
    big.forward(ctx, p.batch(), 1.0);
    big.backward(ctx);
    mango.arena().zero_grads();
    mango.backward(big.arena());
    opt.step(mango.arena(), 1e-2);
  }
  mango.materialize(big.arena());
  for (const char* name : {"h.1.attn.proj.weight", "h.1.mlp.down.weight", "h.3.attn.proj.weight",
                           "h.3.mlp.down.weight", "h.1.attn.proj.bias", "h.3.mlp.down.bias"}) {
    CAPTURE(name);
    double sum = 0;
    const auto v = big.arena().value(name);
    for (index_t i = 0; i < v.size(); ++i) sum += v.data()[i] * v.data()[i];
    CHECK(sum == 0.0);
  }
  double kept = 0;  // the same layer's input-side blocks come from the ring
  const auto qkv = big.arena().value("h.1.attn.qkv.weight");
  for (index_t i = 0; i < qkv.size(); ++i) kept += qkv.data()[i] * qkv.data()[i];
  CHECK(kept > 0.0);
}

TEST_CASE("mango: models and plans it cannot handle are rejected with a sentence") {
  const GptConfig c = gpt2_style();
  Model small(c);
  randomize(small, 1);
  auto error = [&](const GrowthPlan& p, MangoOptions o = {}) {
    return ::test::error_of([&] { Mango<double> mango(p, small.arena(), o); });
  };
  const GrowthPlan good = copy_plan(c, 2, 4, false);
  CHECK(error(good) == "(no bonsai::Error thrown)");
  {  // grouped-query attention
    GptConfig gqa = gpt2_style();
    gqa.n_head = 4;  // head_dim 1, attention width = d_model
    gqa.n_kv_head = 2;
    Model m(gqa);
    const std::string e =
        ::test::error_of([&] { Mango<double> mango(copy_plan(gqa, 2, 4, false), m.arena()); });
    CAPTURE(e);
    CHECK(e.find("grouped-query attention (n_head = 4, n_kv_head = 2)") != std::string::npos);
  }
  {  // attention width != d_model
    GptConfig wide = gpt2_style();
    wide.n_head = 4;
    wide.attn_dim = 8;
    Model m(wide);
    const std::string e = ::test::error_of([&] {
      Mango<double> mango(make_preset(GrowthMethod::stackbert, wide, {0, 0, 0, 4}), m.arena());
    });
    CHECK(e ==
          "Mango: the attention width 8 differs from d_model = 4; every weight block must be "
          "d_model x d_model");
  }
  {  // structured FFN
    GptConfig lr = c;
    lr.ffn = FfnKind::lowrank;
    lr.rank = 3;
    Gpt<LowRank<double>, LowRank<double>> low(lr);
    const GrowthPlan p = make_preset(GrowthMethod::stackbert, lr, {0, 0, 0, 4});
    const std::string e = ::test::error_of([&] { Mango<double> mango(p, low.arena()); });
    CHECK(e.find("dense FFN matrices only") != std::string::npos);
    CHECK(e.find("lowrank") != std::string::npos);
  }
  {  // FFN width not a multiple of d_model
    GptConfig odd = c;
    odd.ffn_dim = 6;
    Model m(odd);
    const std::string e = ::test::error_of([&] {
      Mango<double> mango(make_preset(GrowthMethod::stackbert, odd, {0, 0, 0, 4}), m.arena());
    });
    CHECK(e.find("the FFN width 6 is not a multiple of d_model = 4") != std::string::npos);
  }
  // Non-uniform residual copies (4 -> 6, units 0 copied 3 times), and uniform but not circular.
  CHECK(error(make_growth_plan(c, WidthMap(4, {0, 1, 2, 3, 0, 0}, std::vector<Fill>(6, Fill::copy)),
                               WidthMap::identity(2), WidthMap::identity(8), good.depth))
            .find("not by a whole multiple; the operator starts from uniform circular k-fold "
                  "copies") != std::string::npos);
  CHECK(error(make_growth_plan(
            c, WidthMap(4, {0, 0, 1, 1, 2, 2, 3, 3}, std::vector<Fill>(8, Fill::copy)), good.heads,
            good.ffn, good.depth)) ==
        "Mango: residual unit 1 is a copy of unit 0 but the operator starts from uniform circular "
        "k-fold copies (unit 1 copies unit 1, WidthMap::tiled(4, 8, copy))");
  // Net2Net's random head and FFN maps, LEMON's whole-FFN circular map, F' / D' != F / D.
  CHECK(error(make_growth_plan(c, good.residual,
                               WidthMap(2, {0, 1, 1, 0}, std::vector<Fill>(4, Fill::copy)),
                               good.ffn, good.depth)) ==
        "Mango: head 2 is a copy of head 1, but the operator copies the heads circularly like the "
        "residual stream (head 2 copies head 0, WidthMap::tiled(2, 4, copy))");
  CHECK(error(make_growth_plan(c, good.residual, good.heads, WidthMap::tiled(8, 16, Fill::copy),
                               good.depth)) ==
        "Mango: FFN unit 4 is a copy of unit 4, but the operator copies every d_model-block of the "
        "FFN like the residual stream (unit 4 copies unit 0, WidthMap::tiled(8, 16, copy, 2))");
  CHECK(error(make_growth_plan(c, good.residual, good.heads, WidthMap::tiled(8, 24, Fill::copy, 2),
                               good.depth)) ==
        "Mango: the FFN grows 8 -> 24 units while d_model grows 4 -> 8; the number of "
        "d_model-blocks F / D = 2 must stay (F' = 16)");
  // Plans the operator does not start from: cancel layers, split noise, AKI, MSG.
  CHECK(error(make_growth_plan(c, good.residual, good.heads, good.ffn,
                               DepthMap::insert_identity(2, 4, LayerInit::cancel)))
            .find("layer 1 is a cancel layer") != std::string::npos);
  CHECK(error(make_growth_plan(c, good.residual, good.heads, good.ffn, good.depth,
                               {.split_noise = 0.01}))
            .find("split noise 0.01") != std::string::npos);
  CHECK(error(make_preset(GrowthMethod::msg, c, {8, 4, 16, 4})).find("MSG") != std::string::npos);
  CHECK(error(make_preset(GrowthMethod::aki, c, {0, 4, 16, 4})).find("AKI") != std::string::npos);
  // Options.
  CHECK(error(good, {.rank = 0}) == "Mango: the ring rank is 0 but must be at least 1");
  CHECK(error(good, {.rank = 2, .bond_noise = -1.0}) ==
        "Mango: bond_noise is -1 but must be finite and >= 0");
  CHECK(::test::error_of([] {
          TensorRing<double> r(1, {2, 2}, {0, 3}, {1, 1}, {1, 1});
        }) == "TensorRing: mode I has extents 0 -> 3; both must be positive");
  CHECK(::test::error_of([] { make_mango_plan(gpt2_style(), 6, DepthMap::identity(2)); }) ==
        "Mango: d_model 4 -> 6 is not a whole multiple (the residual stream is copied k times)");
  // A source arena of another model, a target arena of the wrong shape.
  {
    GptConfig wide = c;
    wide.d_model = 6;
    wide.n_head = 3;
    Model wrong_source(wide);
    CHECK(
        ::test::error_of([&] { Mango<double> mango(good, wrong_source.arena()); }) ==
        "Mango: the source arena's 'wte' is (13, 6) but the plan's source model makes it (13, 4)");
  }
  Mango<double> mango(good, small.arena());
  Model wrong_target(c);
  const std::string e = ::test::error_of([&] { mango.materialize(wrong_target.arena()); });
  CHECK(e ==
        "Mango: the target arena's 'wte' is (13, 4) but the plan's grown model makes it (13, 8)");
  CHECK(::test::error_of([&] { mango.backward(wrong_target.arena()); }) == e);
  CHECK(::test::error_of([&] { (void)mango.block_name(8); }) == "Mango: block 8 of 8");
}
