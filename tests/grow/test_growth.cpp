// Growth of whole GPT models (spec growth.md §12): function preservation of every exact preset
// in double (max |logit difference| <= 1e-10) for LayerNorm and RMSNorm, divisible and
// non-divisible widths and structured FFNs; negative tests that show where a method is not
// exact; the copy patterns of stacking and AKI; optimizer-state policies; bad plans.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/grow/apply.hpp>
#include <bonsai/grow/presets.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/train/adamw.hpp>
#include <cmath>
#include <string>
#include <type_traits>

#include "support/errors.hpp"

using namespace bonsai;

namespace {

constexpr double tol = 1e-10;

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

/// GPT-2 style with BlockShuffle FFNs in 2 blocks: D 8, FFN 16, 3 layers (layer 0 dense), so
/// D/B and F/B are multiples of B and maps can keep both block layouts.
GptConfig blockshuffle_style() {
  GptConfig c = gpt2_style();
  c.ffn = FfnKind::blockshuffle;
  c.blocks = 2;
  c.d_model = 8;
  c.ffn_dim = 16;
  c.n_layer = 3;
  return c;
}

/// Weights N(0, 0.5^2) everywhere (norm gains 1 + N(0, 0.5^2)), so norm statistics and every
/// bias matter.
template <class M>
void randomize(M& model, std::uint64_t seed) {
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

template <class M>
std::vector<double> logits(M& model, const std::vector<std::int32_t>& tok) {
  typename M::Context ctx;
  model.forward(ctx, TokenBatch{tok.data(), nullptr, B, T});
  const auto l = model.logits(ctx);
  return std::vector<double>(l.data(), l.data() + l.size());
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

/// The grown model of `plan` from a random source, and the largest logit difference.
template <class Up = Dense<double>, class Down = Dense<double>>
double grown_difference(const GrowthPlan& plan, std::uint64_t seed = 3) {
  Gpt<Up, Down> small(plan.from);
  randomize(small, seed);
  Gpt<Up, Down> big(plan.to);
  grow_parameters(plan, small.arena(), big.arena());
  const auto tok = tokens(plan.from.vocab_size);
  return max_diff(logits(small, tok), logits(big, tok));
}

std::vector<double> values(ParamArena<double>& arena, const std::string& name) {
  const auto v = arena.value(name);
  return std::vector<double>(v.data(), v.data() + v.size());
}

}  // namespace

TEST_CASE("grow: LEMON keeps the function for LayerNorm and RMSNorm models, any width") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    const index_t h = c.n_head;
    for (GrowthTarget t : {GrowthTarget{6, h * 3 / 2, 12, 3}, GrowthTarget{8, 2 * h, 16, 4},
                           GrowthTarget{7, h, 13, 2}, GrowthTarget{4, h, 8, 4}}) {
      for (LayerInit init : {LayerInit::zero_out, LayerInit::cancel}) {
        CAPTURE(to_string(c.norm));
        CAPTURE(t.d_model);
        CAPTURE(t.n_layer);
        CAPTURE(to_string(init));
        const GrowthPlan p = make_preset(GrowthMethod::lemon, c, t, {.new_layers = init});
        CHECK(p.function_preserving());
        CHECK(p.to.d_model == t.d_model);
        CHECK(p.to.n_layer == t.n_layer);
        CHECK(p.to.head_dim() == c.head_dim());
        CHECK(grown_difference(p) <= tol);
      }
    }
  }
}

TEST_CASE("grow: LEMON scales eps by s = k D / D' and the copies of a split weight differ but sum to it") {
  const GptConfig c = gpt2_style();
  const GrowthPlan p = make_preset(GrowthMethod::lemon, c, {6, 3, 12, 2});
  CHECK(p.norm_scale() == doctest::Approx(4.0 / 6.0));
  CHECK(p.to.norm_eps == doctest::Approx(c.norm_eps * 4.0 / 6.0));

  Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
  randomize(small, 5);
  grow_parameters(p, small.arena(), big.arena());
  // mlp.down reads the FFN units: 8 -> 12 circular, units 0..3 copied twice.
  const auto w = values(small.arena(), "h.1.mlp.down.weight");  // (4, 8)
  const auto g = values(big.arena(), "h.1.mlp.down.weight");    // (6, 12)
  for (index_t r = 0; r < 4; ++r)
    for (index_t u = 0; u < 4; ++u) {
      const double a = g[std::size_t(r * 12 + u)], b = g[std::size_t(r * 12 + u + 8)];
      CHECK(std::abs(a - b) > 1e-6);  // symmetry broken
      CHECK(a + b == doctest::Approx(w[std::size_t(r * 8 + u)]).epsilon(1e-12));
    }
}

TEST_CASE("grow: the wrong residual fill or an unscaled eps breaks LEMON (negative tests)") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    CAPTURE(to_string(c.norm));
    const GrowthPlan good = make_preset(GrowthMethod::lemon, c, {6, 0, 0, 0});
    // The other fill rule: LayerNorm with zero fill, RMSNorm with avg fill.
    const Fill wrong = c.norm == NormKind::layernorm ? Fill::zero : Fill::avg;
    const GrowthPlan bad = make_growth_plan(c, WidthMap::tiled(4, 6, wrong), good.heads, good.ffn,
                                            good.depth, good.options, good.rank);
    CHECK_FALSE(bad.function_preserving());
    CHECK(grown_difference(bad) > 1e-3);
    // eps not rescaled: an O(eps) error, visible at eps = 1e-2.
    GptConfig big_eps = c;
    big_eps.norm_eps = 1e-2;
    GrowthPlan unscaled = make_preset(GrowthMethod::lemon, big_eps, {6, 0, 0, 0});
    CHECK(grown_difference(unscaled) <= tol);
    unscaled.to.norm_eps = big_eps.norm_eps;
    CHECK(grown_difference(unscaled) > 1e-6);
  }
}

TEST_CASE("grow: Net2Net is exact for FFN and head widening and uniform residual copies only") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    CAPTURE(to_string(c.norm));
    // FFN and heads with random (non-uniform) copy maps, deeper with zero-output blocks.
    const GrowthPlan heads_ffn = make_preset(GrowthMethod::net2net, c, {0, 3 * c.n_head, 21, 5});
    CHECK(heads_ffn.function_preserving());
    CHECK(grown_difference(heads_ffn) <= tol);
    // Uniform 2x residual copies: exact.
    const GrowthPlan uniform = make_growth_plan(c, WidthMap::tiled(4, 8, Fill::copy), heads_ffn.heads,
                                                heads_ffn.ffn, DepthMap::identity(2));
    CHECK(uniform.function_preserving());
    CHECK(uniform.norm_scale() == 1.0);
    CHECK(grown_difference(uniform) <= tol);
    // Non-uniform residual copies [0 1 2 3 0 0]: the norm statistics change.
    const GrowthPlan skewed = make_growth_plan(c, WidthMap(4, {0, 1, 2, 3, 0, 0}, std::vector<Fill>(6, Fill::copy)),
                                               WidthMap::identity(c.kv_heads()),
                                               WidthMap::identity(8), DepthMap::identity(2));
    CHECK_FALSE(skewed.function_preserving());
    CHECK(grown_difference(skewed) > 1e-3);
  }
}

TEST_CASE("grow: the tied head needs the final norm divided by the copy count") {
  const GptConfig c = gpt2_style();
  const GrowthPlan p = make_growth_plan(c, WidthMap::tiled(4, 8, Fill::copy), WidthMap::identity(2),
                                        WidthMap::identity(8), DepthMap::identity(2));
  Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
  randomize(small, 9);
  grow_parameters(p, small.arena(), big.arena());
  const auto tok = tokens(c.vocab_size);
  const auto a = logits(small, tok);
  CHECK(max_diff(a, logits(big, tok)) <= tol);
  // Undo the division: logits double.
  for (const char* n : {"ln_f.weight", "ln_f.bias"}) {
    auto v = big.arena().value(n);
    for (index_t i = 0; i < v.size(); ++i) v.data()[i] *= 2;
  }
  auto b = logits(big, tok);
  for (double& x : b) x /= 2;
  CHECK(max_diff(a, b) <= tol);
  CHECK(max_diff(a, logits(big, tok)) > 1e-3);
}

TEST_CASE("grow: identity layers (zero_out, cancel) keep the function anywhere in the stack") {
  const GptConfig c = gpt2_style();
  for (LayerInit init : {LayerInit::zero_out, LayerInit::cancel}) {
    CAPTURE(to_string(init));
    // New layers in front, between and on top.
    const DepthMap depth(2, {{init, 0}, {LayerInit::copy, 0}, {init, 1}, {LayerInit::copy, 1}, {init, 1}});
    CHECK(depth.function_preserving());
    const GrowthPlan p = make_growth_plan(c, WidthMap::tiled(4, 6, Fill::avg), WidthMap::tiled(2, 3, Fill::copy),
                                          WidthMap::tiled(8, 12, Fill::copy), depth,
                                          {.split_noise = 0.01});
    Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
    randomize(small, 4);
    grow_parameters(p, small.arena(), big.arena());
    const auto tok = tokens(c.vocab_size);
    CHECK(max_diff(logits(small, tok), logits(big, tok)) <= tol);
    double proj = 0, down = 0;
    for (double x : values(big.arena(), "h.2.attn.proj.weight")) proj += x * x;
    for (double x : values(big.arena(), "h.2.mlp.down.weight")) down += x * x;
    if (init == LayerInit::zero_out) {
      CHECK(proj == 0.0);
      CHECK(down == 0.0);
    } else {  // cancel: non-zero fan-out weights that sum to 0 over every group of copies
      CHECK(proj > 0.0);
      CHECK(down > 0.0);
    }
  }
}

TEST_CASE("grow: StackBERT copies layer i to i + L, interpolation to 2i and 2i + 1") {
  const GptConfig c = gpt2_style();
  for (GrowthMethod m : {GrowthMethod::stackbert, GrowthMethod::interpolate, GrowthMethod::mslt}) {
    CAPTURE(to_string(m));
    const GrowthPlan p = make_preset(m, c, {0, 0, 0, 4});
    CHECK_FALSE(p.function_preserving());
    CHECK(p.frozen_layers == (m == GrowthMethod::mslt ? 2 : 0));
    Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
    randomize(small, 6);
    grow_parameters(p, small.arena(), big.arena());
    for (const ParamSlot& s : big.arena().slots()) {
      std::string src = s.name;
      if (s.name.starts_with("h.")) {
        const index_t l = s.name[2] - '0';
        const index_t from = m == GrowthMethod::interpolate ? l / 2 : l % 2;
        src = "h." + std::to_string(from) + s.name.substr(3);
      }
      CAPTURE(s.name);
      CHECK(values(big.arena(), s.name) == values(small.arena(), src));  // bitwise
    }
    CHECK(grown_difference(p) > 1e-3);  // stacking changes the function, by design
  }
  CHECK_THROWS_WITH_AS(make_preset(GrowthMethod::stackbert, c, {8, 0, 0, 4}),
                       doctest::Contains("grows depth only"), Error);
}

TEST_CASE("grow: bert2BERT FPI is exact up to the norms, AKI takes new units from the next layer") {
  const GptConfig c = gpt2_style();
  const GrowthTarget t{4, 3, 12, 2};  // heads and FFN only: FPI is exact here
  const GrowthPlan fpi = make_preset(GrowthMethod::fpi, c, t, {.seed = 11});
  const GrowthPlan aki = make_preset(GrowthMethod::aki, c, t, {.seed = 11});
  CHECK(fpi.function_preserving());
  CHECK(grown_difference(fpi) <= tol);
  CHECK_FALSE(aki.function_preserving());
  CHECK(grown_difference(aki) > 1e-3);

  Gpt<Dense<double>, Dense<double>> small(c), a(aki.to), f(fpi.to);
  randomize(small, 8);
  grow_parameters(aki, small.arena(), a.arena());
  grow_parameters(fpi, small.arena(), f.arena());
  // Layer 0: new FFN units (8..11) of mlp.up come from layer 1's rows at the mapped units.
  const auto up1 = values(small.arena(), "h.1.mlp.up.weight");  // (8, 4)
  const auto up0 = values(small.arena(), "h.0.mlp.up.weight");
  const auto grown = values(a.arena(), "h.0.mlp.up.weight");    // (12, 4)
  for (index_t j = 0; j < 12; ++j) {
    const index_t src = aki.ffn.source(j);
    const auto& from = j < 8 ? up0 : up1;
    for (index_t k = 0; k < 4; ++k)
      CHECK(grown[std::size_t(j * 4 + k)] == from[std::size_t(src * 4 + k)] * 1.0);
  }
  // The top layer has no next layer: AKI equals FPI there.
  for (const char* n : {"h.1.mlp.up.weight", "h.1.mlp.down.weight", "h.1.attn.qkv.weight"})
    CHECK(values(a.arena(), n) == values(f.arena(), n));
}

TEST_CASE("grow: structured FFNs grow exactly (LowRank and BlockDense in width and rank)") {
  GptConfig lr = gpt2_style();
  lr.ffn = FfnKind::lowrank;
  lr.rank = 3;
  lr.n_layer = 3;
  for (GrowthTarget t : {GrowthTarget{6, 3, 12, 3, 5}, GrowthTarget{8, 4, 16, 6, 3}}) {
    CAPTURE(t.d_model);
    const GrowthPlan p = make_preset(GrowthMethod::lemon, lr, t);
    CHECK(p.to.rank == t.rank);
    CHECK(grown_difference<LowRank<double>, LowRank<double>>(p) <= tol);
  }
  GptConfig bd = gpt2_style();
  bd.ffn = FfnKind::blockdense;
  bd.rank = 4;
  bd.blocks = 2;
  bd.n_layer = 3;
  for (const GptConfig& c : {bd, [&] { GptConfig r = bd; r.norm = NormKind::rmsnorm; return r; }()})
    for (index_t rank : {4, 6}) {  // rank grows per block: 2 -> 3 units in each
      CAPTURE(rank);
      const GrowthPlan p = make_preset(GrowthMethod::lemon, c, {6, 3, 12, 4, rank});
      CHECK(p.to.rank == rank);
      CHECK(grown_difference<BlockDense<double>, BlockDense<double>>(p) <= tol);
    }
  // The new rank units sit at the end of each block; their rows are fresh and the dense factor
  // reads them with 0.
  {
    const GrowthPlan p = make_preset(GrowthMethod::lemon, bd, {6, 0, 12, 0, 6});
    CHECK(p.rank.source(2) == -1);
    CHECK(p.rank.source(3) == 2);
    CHECK(p.rank.original(3));
    Gpt<BlockDense<double>, BlockDense<double>> small(bd), big(p.to);
    randomize(small, 9);
    grow_parameters(p, small.arena(), big.arena());
    const auto dense = values(big.arena(), "h.1.mlp.up.1.weight");  // (12 FFN units, 6)
    for (index_t r = 0; r < 12; ++r) {
      CHECK(dense[std::size_t(r * 6 + 2)] == 0.0);
      CHECK(dense[std::size_t(r * 6 + 5)] == 0.0);
    }
    CHECK(values(big.arena(), "h.1.mlp.up.0.blocks")[2 * 3 + 0] != 0.0);  // block 0, new row 2
    // A rank map that copies a unit, or crosses blocks, is rejected.
    CHECK_THROWS_WITH_AS(make_growth_plan(bd, p.residual, p.heads, p.ffn, p.depth, {},
                                          WidthMap::tiled(4, 6, Fill::copy, 2)),
                         doctest::Contains("not copies"), Error);
    CHECK_THROWS_WITH_AS(make_preset(GrowthMethod::lemon, bd, {0, 0, 0, 0, 6}),
                         doctest::Contains("rank 6 exceeds min(d_model, FFN width) = min(4, 8)"), Error);
    CHECK_THROWS_WITH_AS(make_growth_plan(bd, p.residual, p.heads, p.ffn, p.depth, {},
                                          WidthMap::appended(4, 6, Fill::fresh)),
                         doctest::Contains("block-aligned"), Error);
  }
  // A map that moves units across blocks cannot be represented.
  const GrowthPlan lemon = make_preset(GrowthMethod::lemon, bd, {8, 0, 0, 0});
  CHECK_THROWS_WITH_AS(make_growth_plan(bd, WidthMap::tiled(4, 8, Fill::avg), lemon.heads, lemon.ffn,
                                        lemon.depth),
                       doctest::Contains("block-aligned"), Error);
  // Layer 0 stays dense (dense_first_ffn): the stacking presets repeat layers 1.. only, and a
  // map that puts it onto a structured slot is rejected.
  const GrowthPlan stacked = make_preset(GrowthMethod::stackbert, lr, {0, 0, 0, 6});
  for (index_t l = lr.n_layer; l < 6; ++l) CHECK(stacked.depth[l].src >= 1);
  CHECK_THROWS_WITH_AS(make_growth_plan(lr, stacked.residual, stacked.heads, stacked.ffn,
                                        DepthMap::stack(lr.n_layer, 6), {}, stacked.rank),
                       doctest::Contains("dense_first_ffn"), Error);
}

TEST_CASE("grow: BlockShuffle FFNs grow exactly in width with their blocks kept") {
  // D 8 -> 16 (or 12), FFN 16 -> 32, inner width min(D, F) 8 -> 16 in 2 blocks: every unit stays
  // in its contiguous input block and its interleaved output block.
  const GptConfig bs = blockshuffle_style();
  GptConfig rms = bs;
  rms.norm = NormKind::rmsnorm;
  using M = Gpt<BlockShuffle<double>, BlockShuffle<double>>;
  for (const GptConfig& c : {bs, rms}) {
    CAPTURE(to_string(c.norm));
    for (GrowthMethod m : {GrowthMethod::lemon, GrowthMethod::net2net}) {
      CAPTURE(to_string(m));
      // Net2Net's random residual copies are not exact under a norm: it widens heads and FFN.
      const GrowthTarget t =
          m == GrowthMethod::lemon ? GrowthTarget{16, 4, 32, 4} : GrowthTarget{0, 4, 24, 4};
      const GrowthPlan p = make_preset(m, c, t);
      CHECK(p.inner.to() == std::min(p.to.d_model, p.to.ffn_width()));
      CHECK(grown_difference<BlockShuffle<double>, BlockShuffle<double>>(p) <= tol);
    }
    // MSG: appended fresh units in every block, exact at mask 0.
    const GrowthPlan p = make_preset(GrowthMethod::msg, c, {16, 4, 32, 4});
    M small(c), big(p.to);
    randomize(small, 5);
    grow_parameters(p, small.arena(), big.arena());
    const auto tok = tokens(c.vocab_size);
    const auto before = logits(small, tok);
    CHECK(max_diff(before, logits(big, tok)) > 1e-3);
    big.set_growth_mask(p.mask());
    CHECK(max_diff(before, logits(big, tok)) <= tol);
  }
  // RMSNorm's zero fill sits at the end of each block: 8 -> 12 is exact.
  CHECK(grown_difference<BlockShuffle<double>, BlockShuffle<double>>(
            make_preset(GrowthMethod::lemon, rms, {12, 0, 24, 0})) <= tol);
  // LayerNorm's avg fill would need an output that reads every block.
  CHECK_THROWS_WITH_AS(make_preset(GrowthMethod::lemon, bs, {12, 0, 24, 0}),
                       doctest::Contains("avg-filled units"), Error);
  // 8 -> 10 keeps the contiguous blocks but moves units between interleaved ones.
  CHECK_THROWS_WITH_AS(
      make_growth_plan(rms, WidthMap::tiled(8, 10, Fill::zero, 2), WidthMap::identity(2),
                       WidthMap::identity(16), DepthMap::identity(3)),
      doctest::Contains("interleaved"), Error);
  CHECK_THROWS_WITH_AS(
      make_growth_plan(rms, WidthMap::tiled(8, 16, Fill::copy), WidthMap::identity(2),
                       WidthMap::identity(16), DepthMap::identity(3)),
      doctest::Contains("block-aligned"), Error);
}

TEST_CASE("grow: MSG grows BlockDense FFNs per block, exact at mask 0") {
  GptConfig bd = gpt2_style();
  bd.ffn = FfnKind::blockdense;
  bd.blocks = 2;
  bd.rank = 4;
  bd.n_layer = 3;
  const GrowthPlan p = make_preset(GrowthMethod::msg, bd, {8, 4, 16, 4, 6});
  CHECK(p.residual.source(2) == -1);  // block 0's new units: 2, 3; block 1's: 6, 7
  CHECK(p.residual.source(4) == 2);
  Gpt<BlockDense<double>, BlockDense<double>> small(bd), big(p.to);
  randomize(small, 4);
  grow_parameters(p, small.arena(), big.arena());
  big.set_growth_mask(p.mask());
  const auto tok = tokens(bd.vocab_size);
  CHECK(max_diff(logits(small, tok), logits(big, tok)) <= tol);
}

TEST_CASE("grow: gradient-consistent state maps the source gradient onto the grown model's") {
  // Function-preserving plans without split noise: uniform residual copies (k = 2), random
  // (non-uniform) head and FFN copies, for LayerNorm and RMSNorm (GQA, RoPE, SwiGLU) and for
  // BlockShuffle FFNs. The grown model's gradient is a G[g] on rows whose output unit copies g
  // with share a, and the source's column on split columns (spec growth.md §12.1-15). Entries
  // with no source (the second BlockShuffle factor's columns on fresh inner units) start at 0.
  const GptConfig bs = blockshuffle_style();
  auto check = [&]<class M>(std::type_identity<M>, const GptConfig& c) {
    const std::string what = std::string(to_string(c.norm)) + " " + to_string(c.ffn);
    CAPTURE(what);
    Rng rng(17);
    const index_t blocks = c.ffn == FfnKind::blockshuffle ? c.blocks : 1;
    const GrowthPlan p = make_growth_plan(
        c, WidthMap::tiled(c.d_model, 2 * c.d_model, Fill::copy, blocks),
        WidthMap::random(c.kv_heads(), c.kv_heads() + 1, rng),
        WidthMap::random(c.ffn_width(), c.ffn_width() + 2 * blocks * blocks, rng, blocks, blocks),
        DepthMap::identity(c.n_layer));
    REQUIRE(p.function_preserving());
    REQUIRE(!p.ffn.uniform());
    M small(c), big(p.to);
    randomize(small, 23);
    grow_parameters(p, small.arena(), big.arena());
    const auto in = tokens(c.vocab_size, 31), tgt = tokens(c.vocab_size, 32);
    const TokenBatch batch{in.data(), tgt.data(), B, T};
    for (auto* arena : {&small.arena(), &big.arena()}) arena->zero_grads();
    typename M::Context cs, cb;
    CHECK(small.forward(cs, batch, 1.0) ==
          doctest::Approx(big.forward(cb, batch, 1.0)).epsilon(1e-12));
    small.backward(cs);
    big.backward(cb);
    const std::size_t n = std::size_t(big.arena().size());
    const double* g = big.arena().grads();
    std::vector<double> mapped(n), dup(n), sq(n), sq_mapped(n);
    std::vector<double> src_sq(std::size_t(small.arena().size()));
    for (std::size_t i = 0; i < src_sq.size(); ++i)
      src_sq[i] = small.arena().grads()[i] * small.arena().grads()[i];
    grow_state(p, StateGrowth::gradient, Moment::first, small.arena(), small.arena().grads(),
               big.arena(), mapped.data());
    grow_state(p, StateGrowth::gradient, Moment::second, small.arena(), src_sq.data(), big.arena(),
               sq_mapped.data());
    grow_state(p, StateGrowth::duplicate, Moment::first, small.arena(), small.arena().grads(),
               big.arena(), dup.data());
    const std::vector<double> ones(src_sq.size(), 1.0);
    std::vector<double> covered(n);
    grow_state(p, StateGrowth::duplicate, Moment::first, small.arena(), ones.data(), big.arena(),
               covered.data());
    double scale = 0, worst = 0, worst_sq = 0, worst_dup = 0;
    index_t fresh = 0;
    for (std::size_t i = 0; i < n; ++i) scale = std::max(scale, std::abs(g[i]));
    for (std::size_t i = 0; i < n; ++i) {
      if (covered[i] == 0.0) {
        ++fresh;
        CHECK(mapped[i] == 0.0);
        continue;
      }
      worst = std::max(worst, std::abs(g[i] - mapped[i]));
      worst_sq = std::max(worst_sq, std::abs(g[i] * g[i] - sq_mapped[i]));
      worst_dup = std::max(worst_dup, std::abs(g[i] - dup[i]));
    }
    CHECK(scale > 1e-3);
    CHECK(worst <= tol * scale);
    CHECK(worst_sq <= tol * scale * scale);
    CHECK(worst_dup > 1e-3 * scale);  // copying the moments unscaled is not the grown gradient
    CHECK((fresh > 0) == (c.ffn == FfnKind::blockshuffle));
  };
  check(std::type_identity<Gpt<Dense<double>, Dense<double>>>{}, gpt2_style());
  check(std::type_identity<Gpt<Dense<double>, Dense<double>>>{}, llama_style());
  check(std::type_identity<Gpt<BlockShuffle<double>, BlockShuffle<double>>>{}, bs);
}

TEST_CASE("grow: gradient-consistent moments keep Adam's direction m / sqrt(v) at every copy") {
  const GptConfig c = gpt2_style();
  const GrowthPlan p = make_preset(GrowthMethod::net2net, c, {8, 3, 13, 2});
  Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
  Rng rng(3);
  std::vector<double> m(std::size_t(small.arena().size())), v(m.size());
  for (std::size_t i = 0; i < m.size(); ++i) {
    m[i] = rng.normal();
    v[i] = 0.1 + rng.uniform();
  }
  const std::size_t n = std::size_t(big.arena().size());
  std::vector<double> mg(n), vg(n), md(n), vd(n);
  grow_state(p, StateGrowth::gradient, Moment::first, small.arena(), m.data(), big.arena(),
             mg.data());
  grow_state(p, StateGrowth::gradient, Moment::second, small.arena(), v.data(), big.arena(),
             vg.data());
  grow_state(p, StateGrowth::duplicate, Moment::first, small.arena(), m.data(), big.arena(),
             md.data());
  grow_state(p, StateGrowth::duplicate, Moment::second, small.arena(), v.data(), big.arena(),
             vd.data());
  index_t scaled = 0;
  double worst = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (vd[i] == 0.0) {
      CHECK(vg[i] == 0.0);
      continue;
    }
    if (mg[i] != md[i]) ++scaled;
    worst = std::max(worst, std::abs(mg[i] / std::sqrt(vg[i]) - md[i] / std::sqrt(vd[i])));
  }
  CHECK(scaled > 0);
  CHECK(worst <= 1e-12);
}

TEST_CASE("grow: growing twice equals growing the composition's function") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    const GrowthPlan p1 = make_preset(GrowthMethod::lemon, c, {6, 0, 12, 3});
    const GrowthPlan p2 = make_preset(GrowthMethod::lemon, p1.to, {9, 0, 18, 5});
    Gpt<Dense<double>, Dense<double>> a(c), b(p1.to), d(p2.to);
    randomize(a, 12);
    grow_parameters(p1, a.arena(), b.arena());
    grow_parameters(p2, b.arena(), d.arena());
    const auto tok = tokens(c.vocab_size);
    CHECK(max_diff(logits(a, tok), logits(d, tok)) <= tol);
    CHECK(p2.to.norm_eps == doctest::Approx(c.norm_eps * p1.norm_scale() * p2.norm_scale()));
  }
}

TEST_CASE("grow: optimizer state is reset, carried in the old slice, or duplicated with the copies") {
  const GptConfig c = gpt2_style();
  const GrowthPlan p = make_preset(GrowthMethod::lemon, c, {8, 3, 12, 3});
  Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
  randomize(small, 2);
  // A fake moment: every entry distinct.
  std::vector<double> m(std::size_t(small.arena().size()));
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = 1.0 + double(i);
  std::vector<double> out(std::size_t(big.arena().size()), -1.0);
  const auto& from = small.arena();
  const auto& to = big.arena();
  auto at = [&](const ParamArena<double>& a, const std::vector<double>& v, const char* n, index_t i) {
    return v[std::size_t(a.slot(n).offset + i)];
  };
  grow_state(p, StateGrowth::reset, Moment::first, from, m.data(), to, out.data());
  for (double x : out) CHECK(x == 0.0);

  grow_state(p, StateGrowth::carry, Moment::first, from, m.data(), to, out.data());
  // mlp.up.weight (8, 4) -> (12, 8): the old slice [0, 8) x [0, 4) is carried, the rest is 0.
  CHECK(at(to, out, "h.0.mlp.up.weight", 1 * 8 + 2) == at(from, m, "h.0.mlp.up.weight", 1 * 4 + 2));
  CHECK(at(to, out, "h.0.mlp.up.weight", 9 * 8 + 2) == 0.0);   // a new unit
  CHECK(at(to, out, "h.0.mlp.up.weight", 1 * 8 + 5) == 0.0);   // a new residual column
  CHECK(at(to, out, "wte", 3 * 8 + 1) == at(from, m, "wte", 3 * 4 + 1));
  CHECK(at(to, out, "wte", 3 * 8 + 4) == 0.0);
  // LEMON 2 -> 3 layers: layer 2 is a new identity layer, its state starts at 0.
  for (index_t i = 0; i < to.slot("h.2.mlp.up.weight").size(); ++i)
    CHECK(at(to, out, "h.2.mlp.up.weight", i) == 0.0);

  grow_state(p, StateGrowth::duplicate, Moment::first, from, m.data(), to, out.data());
  CHECK(at(to, out, "h.0.mlp.up.weight", 9 * 8 + 2) == at(from, m, "h.0.mlp.up.weight", 1 * 4 + 2));
  CHECK(at(to, out, "h.0.mlp.up.weight", 1 * 8 + 5) == at(from, m, "h.0.mlp.up.weight", 1 * 4 + 1));
  CHECK(at(to, out, "wte", 3 * 8 + 4) == at(from, m, "wte", 3 * 4 + 0));
}

TEST_CASE("grow: one AdamW step after growth decreases the loss") {
  const GptConfig c = gpt2_style();
  const GrowthPlan p = make_preset(GrowthMethod::lemon, c, {8, 4, 16, 3});
  Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
  Rng rng(1);
  small.init(rng);
  grow_parameters(p, small.arena(), big.arena());
  const auto in = tokens(c.vocab_size, 21), tgt = tokens(c.vocab_size, 22);
  const TokenBatch batch{in.data(), tgt.data(), B, T};
  AdamW<double> opt(big.arena(), {.weight_decay = 0.0});
  decltype(big)::Context ctx;
  big.arena().zero_grads();
  const double before = big.forward(ctx, batch, 1.0);
  big.backward(ctx);
  opt.step(big.arena(), 1e-3);
  CHECK(big.forward(ctx, batch) < before);
}

TEST_CASE("grow: bad plans are rejected before any work, with a sentence") {
  const GptConfig c = gpt2_style();
  CHECK_THROWS_WITH_AS(make_preset(GrowthMethod::lemon, c, {2, 0, 0, 0}),
                       doctest::Contains("never shrinks"), Error);
  CHECK_THROWS_WITH_AS(make_preset(GrowthMethod::lemon, c, {0, 0, 0, 1}),
                       doctest::Contains("never shrinks"), Error);
  CHECK_THROWS_WITH_AS(parse_growth_method("stacking"), doctest::Contains("unknown growth method"), Error);
  GptConfig gqa = llama_style();  // 2 query heads per key/value head
  CHECK_THROWS_WITH_AS(make_preset(GrowthMethod::lemon, gqa, {0, 5, 0, 0}),
                       doctest::Contains("query heads per key/value head"), Error);
  CHECK_THROWS_WITH_AS(WidthMap(3, {0, 1, 1}, std::vector<Fill>(3, Fill::copy)),
                       doctest::Contains("not copied anywhere"), Error);
  CHECK_THROWS_WITH_AS(DepthMap(2, {{LayerInit::copy, 0}, {LayerInit::zero_out, 1}}),
                       doctest::Contains("not copied anywhere"), Error);
  CHECK_THROWS_WITH_AS(make_growth_plan(c, WidthMap::tiled(4, 6, Fill::avg), WidthMap::tiled(2, 3, Fill::avg),
                                        WidthMap::identity(8), DepthMap::identity(2)),
                       doctest::Contains("residual stream only"), Error);
  CHECK_THROWS_WITH_AS(make_growth_plan(c, WidthMap::identity(5), WidthMap::identity(2),
                                        WidthMap::identity(8), DepthMap::identity(2)),
                       doctest::Contains("d_model = 4"), Error);
  // A plan applied to the wrong model.
  const GrowthPlan p = make_preset(GrowthMethod::lemon, c, {8, 0, 0, 0});
  Gpt<Dense<double>, Dense<double>> other(p.to), big(p.to);
  CHECK_THROWS_WITH_AS(grow_parameters(p, other.arena(), big.arena()),
                       doctest::Contains("source arena"), Error);
}

TEST_CASE("grow: MSLT freezes exactly the stated layers: no backward below them, no update") {
  const GptConfig c = gpt2_style();
  const GrowthPlan p = make_preset(GrowthMethod::mslt, c, {0, 0, 0, 4});
  Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
  Rng rng(3);
  small.init(rng);
  grow_parameters(p, small.arena(), big.arena());
  big.set_frozen_layers(p.frozen_layers);
  AdamW<double> opt(big.arena());
  opt.set_frozen(big.arena(), [&](const ParamSlot& s) { return big.is_frozen(s); });
  const std::vector<double> before(big.arena().values(), big.arena().values() + big.arena().size());
  const auto in = tokens(c.vocab_size, 31), tgt = tokens(c.vocab_size, 32);
  decltype(big)::Context ctx;
  for (int step = 0; step < 3; ++step) {
    big.arena().zero_grads();
    big.forward(ctx, TokenBatch{in.data(), tgt.data(), B, T}, 1.0);
    big.backward(ctx);
    opt.step(big.arena(), 1e-2);
  }
  index_t frozen = 0;
  for (const ParamSlot& s : big.arena().slots()) {
    CAPTURE(s.name);
    bool same = true, zero_grad = true;
    for (index_t i = 0; i < s.size(); ++i) {
      same = same && big.arena().values()[s.offset + i] == before[std::size_t(s.offset + i)];
      zero_grad = zero_grad && big.arena().grads()[s.offset + i] == 0.0;
    }
    CHECK(big.is_frozen(s) == (s.name == "wte" || s.name == "wpe" || s.name.starts_with("h.0.") ||
                               s.name.starts_with("h.1.")));
    if (big.is_frozen(s)) {
      ++frozen;
      CHECK(same);       // bitwise unchanged
      CHECK(zero_grad);  // backward never reached it
    } else if (s.name.ends_with("weight") && !s.name.starts_with("ln")) {
      CHECK_FALSE(same);
    }
  }
  CHECK(frozen > 0);
  CHECK(big.training_flops(B, T) < 3 * big.flops(B, T));
  big.set_frozen_layers(0);
  CHECK(big.training_flops(B, T) == 3 * big.flops(B, T));
  CHECK_THROWS_WITH_AS(big.set_frozen_layers(4), doctest::Contains("at least the top layer"), Error);
}

TEST_CASE("grow: MSG's masks at 0 give the source's logits, at 1 the plain grown model") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    const index_t h = c.n_head, group = c.n_head / c.kv_heads();
    for (GrowthTarget t : {GrowthTarget{7, 0, 0, 0}, GrowthTarget{0, h + group, 0, 0}, GrowthTarget{0, 0, 13, 0},
                           GrowthTarget{0, 0, 0, 4}, GrowthTarget{7, h + group, 13, 3}}) {
      CAPTURE(to_string(c.norm));
      CAPTURE(t.d_model);
      CAPTURE(t.n_head);
      CAPTURE(t.ffn_dim);
      CAPTURE(t.n_layer);
      const GrowthPlan p = make_preset(GrowthMethod::msg, c, t);
      CHECK(p.options.masked);
      CHECK(p.norm_scale() == 1.0);
      CHECK(p.to.norm_eps == c.norm_eps);
      Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
      randomize(small, 4);
      grow_parameters(p, small.arena(), big.arena());
      const auto tok = tokens(c.vocab_size);
      const auto plain = logits(big, tok);
      CHECK(max_diff(logits(small, tok), plain) > 1e-6);  // the new parts are random: not exact
      GrowthMask mask = p.mask();
      CHECK(mask.masks_anything());
      big.set_growth_mask(mask);
      CHECK(max_diff(logits(small, tok), logits(big, tok)) <= tol);
      mask.value = 1.0;
      big.set_growth_mask(mask);
      CHECK(max_diff(plain, logits(big, tok)) <= tol);
    }
  }
}

TEST_CASE("grow: MSG's masks mark the appended units and the layers stacked on top") {
  const GptConfig c = llama_style();  // 2 key/value groups of 2 query heads
  const GrowthPlan p = make_preset(GrowthMethod::msg, c, {6, 6, 10, 3});
  const GrowthMask m = p.mask();
  CHECK(m.value == 0.0);
  CHECK(m.residual == std::vector<bool>{false, false, false, false, true, true});
  CHECK(m.heads == std::vector<bool>{false, false, true});
  CHECK(m.ffn == std::vector<bool>{false, false, false, false, false, false, false, false, true, true});
  CHECK(m.layers == std::vector<bool>{false, false, true});
  CHECK(p.depth[2].src == 0);
  // Only the layers grow: nothing else is masked.
  const GrowthMask deeper = make_preset(GrowthMethod::msg, c, {0, 0, 0, 4}).mask();
  CHECK(deeper.residual.empty());
  CHECK(deeper.heads.empty());
  CHECK(deeper.ffn.empty());
  CHECK(deeper.layers == std::vector<bool>{false, false, true, true});
  CHECK(!make_preset(GrowthMethod::lemon, c, {6, 6, 10, 3}).mask().masks_anything());
}

TEST_CASE("grow: at MSG mask 0 new parameters get no gradient and the old ones the source's") {
  for (const GptConfig& c : {gpt2_style(), llama_style()}) {
    CAPTURE(to_string(c.norm));
    const GrowthPlan p = make_preset(GrowthMethod::msg, c, {7, c.n_head + c.n_head / c.kv_heads(), 13, 3});
    Gpt<Dense<double>, Dense<double>> small(c), big(p.to);
    randomize(small, 6);
    grow_parameters(p, small.arena(), big.arena());
    big.set_growth_mask(p.mask());
    const auto in = tokens(c.vocab_size, 11), tgt = tokens(c.vocab_size, 12);
    const TokenBatch batch{in.data(), tgt.data(), B, T};
    for (auto* arena : {&small.arena(), &big.arena()}) arena->zero_grads();
    decltype(small)::Context cs;
    decltype(big)::Context cb;
    CHECK(small.forward(cs, batch, 1.0) == doctest::Approx(big.forward(cb, batch, 1.0)).epsilon(1e-12));
    small.backward(cs);
    big.backward(cb);
    // The old slice of every tensor (carry maps ones there, zeros elsewhere) and the source's
    // gradients mapped the same way.
    const std::vector<double> ones(std::size_t(small.arena().size()), 1.0);
    std::vector<double> old(std::size_t(big.arena().size())), expected(old.size());
    grow_state(p, StateGrowth::carry, Moment::first, small.arena(), ones.data(), big.arena(),
               old.data());
    grow_state(p, StateGrowth::carry, Moment::first, small.arena(), small.arena().grads(),
               big.arena(), expected.data());
    index_t new_entries = 0;
    double worst_new = 0, worst_old = 0;
    for (std::size_t i = 0; i < old.size(); ++i) {
      const double g = big.arena().grads()[i];
      if (old[i] == 0.0) {
        ++new_entries;
        worst_new = std::max(worst_new, std::abs(g));
      } else {
        worst_old = std::max(worst_old, std::abs(g - expected[i]));
      }
    }
    CHECK(new_entries > 0);
    CHECK(worst_new == 0.0);
    CHECK(worst_old <= tol);
  }
}

TEST_CASE("grow: MSG plans need appended fresh units and copied layers") {
  const GptConfig c = gpt2_style();
  GrowthOptions masked;
  masked.masked = true;
  CHECK_THROWS_WITH_AS(make_growth_plan(c, WidthMap::tiled(4, 6, Fill::avg), WidthMap::identity(2),
                                        WidthMap::identity(8), DepthMap::identity(2), masked),
                       doctest::Contains("add fresh"), Error);
  CHECK_THROWS_WITH_AS(make_growth_plan(c, WidthMap::identity(4), WidthMap::identity(2), WidthMap::identity(8),
                                        DepthMap::insert_identity(2, 3, LayerInit::zero_out), masked),
                       doctest::Contains("masked copies"), Error);
  // Without masks, fresh residual units cannot be exact.
  CHECK_THROWS_WITH_AS(make_growth_plan(c, WidthMap::appended(4, 6, Fill::fresh), WidthMap::identity(2),
                                        WidthMap::identity(8), DepthMap::identity(2)),
                       doctest::Contains("mask them (MSG)"), Error);
}

TEST_CASE("grow: MSG grows LowRank FFNs and dense-first structured stacks exactly at mask 0") {
  GptConfig c = gpt2_style();
  c.ffn = FfnKind::lowrank;
  c.rank = 3;
  c.n_layer = 3;
  c.dense_first_ffn = true;  // layer 0 dense: stacked layers repeat layers 1..2 only
  const GrowthPlan p = make_preset(GrowthMethod::msg, c, {6, 3, 12, 5, 4});
  CHECK(p.depth[3].src == 1);
  CHECK(p.depth[4].src == 2);
  using M = Gpt<LowRank<double>, LowRank<double>>;
  M small(c), big(p.to);
  randomize(small, 8);
  grow_parameters(p, small.arena(), big.arena());
  big.set_growth_mask(p.mask());
  const auto tok = tokens(c.vocab_size);
  CHECK(max_diff(logits(small, tok), logits(big, tok)) <= tol);
}
