// Sparsity-accelerated training of a whole Gpt (spec sat.md §5, §8, §9): kept sets through the
// model (central differences, exact zeros on omitted slices, FLOPs), and Sat's scores,
// selection, update flags, checkpoint state and errors. GPT-2 and Llama style, in double.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/train/adamw.hpp>
#include <bonsai/train/sat.hpp>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "support/finite_diff.hpp"

using namespace bonsai;

namespace {

GptConfig config_for(FfnKind ffn, bool llama) {
  GptConfig c;
  c.vocab_size = 13;
  c.max_seq_len = 8;
  c.n_layer = 2;
  c.d_model = 8;
  c.n_head = 4;
  c.ffn_dim = 24;
  c.ffn = ffn;
  c.rank = 3;
  c.blocks = 2;
  c.init_std = 0.3;
  c.dense_first_ffn = false;
  if (llama) {
    c.norm = NormKind::rmsnorm;
    c.pos = PosKind::rope;
    c.act = ActKind::swiglu;
    c.n_kv_head = 2;
  }
  return c;
}

struct Batch {
  static constexpr index_t B = 2, T = 6;
  std::vector<std::int32_t> in, tgt;
  Batch(std::uint64_t seed, index_t vocab) : in(B * T), tgt(B * T) {
    Rng rng(seed);
    for (auto& t : in) t = std::int32_t(rng.uniform() * double(vocab));
    for (auto& t : tgt) t = std::int32_t(rng.uniform() * double(vocab));
  }
  TokenBatch view() const { return {in.data(), tgt.data(), B, T}; }
};

template <class Model>
void perturb(Model& model, std::uint64_t seed) {
  Rng rng(seed);
  model.init(rng);
  for (index_t i = 0; i < model.arena().size(); ++i) model.arena().values()[i] += 0.05 * rng.normal();
}

/// The gradient slice of `name` as a (rows, cols) matrix.
MatrixView<const double> grad_of(ParamArena<double>& arena, const std::string& name, index_t cols) {
  const ParamSlot& s = arena.slot(name);
  return matrix_view(static_cast<const double*>(arena.grads() + s.offset), s.size() / cols, cols);
}

template <class Map>
void check_kept_model(const GptConfig& c) {
  using Model = Gpt<Map, Map>;
  Model model(c);
  perturb(model, 7);
  const Batch batch(3, c.vocab_size);
  // Layer 0 keeps heads {1, 2} (under GQA: one from each key/value group), layer 1 head {3};
  // channels: every third, and a block.
  const std::vector<LayerKept> kept = {{{1, 2}, {0, 3, 6, 9, 12, 15, 18, 21}},
                                       {{3}, {4, 5, 6, 7, 8, 9, 10, 11, 20}}};
  typename Model::Context ctx;
  auto& arena = model.arena();
  arena.zero_grads();
  const double loss = model.forward(ctx, batch.view(), 1.0, kept);
  model.backward(ctx);
  CHECK(std::isfinite(loss));
  const std::vector<double> grad(arena.grads(), arena.grads() + arena.size());
  const double worst = test::worst_central_difference(
      arena.values(), arena.size(), 3, grad.data(),
      [&] { return model.forward(ctx, batch.view(), 0.0, kept); });
  CHECK(worst < 1e-6);

  // The omitted slices get exactly zero gradient.
  const index_t d = c.d_model, hd = c.head_dim(), A = c.attention_width();
  for (index_t l = 0; l < 2; ++l) {
    const std::string p = layer_param_name(l, "");
    const LayerKept& k = kept[std::size_t(l)];
    const auto qkv = grad_of(arena, p + "attn.qkv.weight", d);  // (A + 2KV, d)
    const auto proj = grad_of(arena, p + "attn.proj.weight", A);  // (d, A)
    double omitted = 0, computed = 0;
    for (index_t h = 0; h < c.n_head; ++h) {
      const bool is_kept = std::ranges::find(k.heads, h) != k.heads.end();
      for (index_t e = 0; e < hd; ++e) {
        double s = 0;
        for (index_t j = 0; j < d; ++j) s += std::abs(qkv(h * hd + e, j)) + std::abs(proj(j, h * hd + e));
        (is_kept ? computed : omitted) += s;
      }
    }
    CHECK(omitted == 0.0);
    CHECK(computed > 0.0);
    if constexpr (std::is_same_v<Map, Dense<double>>) {
      const auto up = grad_of(arena, p + "mlp.up.weight", d);  // (F, d)
      const auto down = grad_of(arena, p + "mlp.down.weight", c.ffn_width());  // (d, F)
      double off = 0, on = 0;
      for (index_t i = 0; i < c.ffn_width(); ++i) {
        const bool is_kept = std::ranges::find(k.channels, i) != k.channels.end();
        for (index_t j = 0; j < d; ++j) (is_kept ? on : off) += std::abs(up(i, j)) + std::abs(down(j, i));
      }
      CHECK(off == 0.0);
      CHECK(on > 0.0);
    }
  }

  // FLOPs count the kept work only: the kept MLP of layer 0 is 8/24 of its dense GEMMs.
  const index_t dense = model.flops(2, 6);
  const index_t sparse = model.flops(2, 6, kept);
  CHECK(sparse < dense);
  std::vector<LayerKept> only_mlp(2);
  only_mlp[0].channels = kept[0].channels;
  const auto& mlp = model.blocks()[0].mlp();
  CHECK(dense - model.flops(2, 6, only_mlp) == mlp.flops(12) - mlp.flops(12, 8));
  if constexpr (std::is_same_v<Map, Dense<double>>)
    CHECK(mlp.flops(12, 8) * 3 == mlp.flops(12));
  CHECK(model.training_flops(2, 6, kept) == 3 * sparse);
}

using DenseGpt = Gpt<Dense<double>, Dense<double>>;

/// The magnitude of every channel of layer l of a dense GPT-2 style model: the norm of its up
/// row and down column.
std::vector<double> channel_magnitudes(DenseGpt& model, index_t l) {
  const GptConfig& c = model.config();
  const index_t d = c.d_model, f = c.ffn_width();
  auto& arena = model.arena();
  const std::string p = layer_param_name(l, "");
  const double* up = arena.values() + arena.slot(p + "mlp.up.weight").offset;      // (F, d)
  const double* down = arena.values() + arena.slot(p + "mlp.down.weight").offset;  // (d, F)
  std::vector<double> s(static_cast<std::size_t>(f));
  for (index_t i = 0; i < f; ++i) {
    double e = 0;
    for (index_t j = 0; j < d; ++j) e += up[i * d + j] * up[i * d + j] + down[j * f + i] * down[j * f + i];
    s[std::size_t(i)] = std::sqrt(e);
  }
  return s;
}

std::vector<index_t> largest(const std::vector<double>& s, index_t k) {
  std::vector<index_t> idx(s.size());
  std::iota(idx.begin(), idx.end(), index_t(0));
  std::stable_sort(idx.begin(), idx.end(), [&](index_t a, index_t b) { return s[std::size_t(a)] > s[std::size_t(b)]; });
  idx.resize(std::size_t(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

SatConfig sat_config(ScoreKind score, Selection select, double rho = 0.5) {
  SatConfig s;
  s.ladder = {rho, 100, 100, 1};
  s.score = score;
  s.select = select;
  s.channel_align = 4;
  s.seed = 11;
  return s;
}

}  // namespace

TEST_CASE("A Gpt with kept heads and channels matches central differences and leaves omitted slices at zero gradient") {
  for (bool llama : {false, true}) {
    CAPTURE(llama);
    check_kept_model<Dense<double>>(config_for(FfnKind::dense, llama));
    check_kept_model<LowRank<double>>(config_for(FfnKind::lowrank, llama));
  }
}

TEST_CASE("Gpt rejects kept sets for the wrong number of layers") {
  DenseGpt model(config_for(FfnKind::dense, false));
  const std::vector<LayerKept> one(1);
  DenseGpt::Context ctx;
  const Batch batch(1, 13);
  CHECK_THROWS_WITH(model.forward(ctx, batch.view(), 1.0, one),
                    doctest::Contains("kept sets for 1 layers but the model has 2"));
}

TEST_CASE("Sat magnitude top-k keeps the neurons with the largest weight norms, whatever the data") {
  DenseGpt model(config_for(FfnKind::dense, false));
  perturb(model, 5);
  Sat<DenseGpt> sat(sat_config(ScoreKind::magnitude, Selection::topk), model);
  CHECK(sat.kept_heads(0.5) == 2);
  CHECK(sat.kept_channels(0.5) == 12);
  const auto kept = sat.select(model, 0, 0);
  REQUIRE(kept.size() == 2);
  for (index_t l = 0; l < 2; ++l) {
    CHECK(kept[std::size_t(l)].channels == largest(channel_magnitudes(model, l), 12));
    CHECK(kept[std::size_t(l)].heads.size() == 2);
  }
  // No data went in: a second micro-batch, or another step with the same weights, keeps the same.
  const std::vector<LayerKept> first(kept.begin(), kept.end());
  const auto again = sat.select(model, 1, 1);
  CHECK(first[0].channels == again[0].channels);
  CHECK(first[1].heads == again[1].heads);
  // Scaling up one omitted channel's down column brings it in.
  index_t out = 0;
  while (std::ranges::find(first[0].channels, out) != first[0].channels.end()) ++out;
  auto& arena = model.arena();
  const ParamSlot& down = arena.slot("h.0.mlp.down.weight");
  for (index_t j = 0; j < 8; ++j) arena.values()[down.offset + j * 24 + out] = 10.0;
  const auto changed = sat.select(model, 2, 0);
  CHECK(std::ranges::find(changed[0].channels, out) != changed[0].channels.end());
}

TEST_CASE("Sat activation scores: one dense step measures every neuron, sparse steps refresh only what they computed") {
  for (bool llama : {false, true}) {
    CAPTURE(llama);
    DenseGpt model(config_for(FfnKind::dense, llama));
    perturb(model, 9);
    Sat<DenseGpt> sat(sat_config(ScoreKind::activation, Selection::sample), model);
    DenseGpt::Context ctx;
    const Batch batch(4, 13);
    CHECK(sat.select(model, 0, 0).empty());  // nothing measured yet: dense
    model.forward(ctx, batch.view(), 1.0);
    sat.observe(model, ctx);
    sat.finish_step();
    CHECK(sat.update_flags().empty());
    const nlohmann::json dense = sat.state();
    REQUIRE(dense.at("measured").get<bool>());
    // The dense measurement of layer 0's heads, by hand.
    const auto o = model.blocks()[0].attention().head_outputs(ctx.blocks[0].attn, 12);
    std::vector<double> by_hand(4);
    head_activation_scores(o, 2, Aggregate::l2, {}, by_hand);
    const auto measured = dense.at("heads")[0].get<std::vector<double>>();
    for (int h = 0; h < 4; ++h) CHECK(measured[std::size_t(h)] == doctest::Approx(by_hand[std::size_t(h)]).epsilon(1e-14));

    const auto kept = sat.select(model, 1, 0);
    REQUIRE(kept.size() == 2);
    CHECK(kept[0].heads.size() == 2);
    CHECK(kept[1].channels.size() == 12);
    const std::vector<LayerKept> k(kept.begin(), kept.end());
    model.forward(ctx, batch.view(), 1.0, k);
    sat.observe(model, ctx);
    CHECK(sat.state() == dense);  // measurements join the scores when the step ends
    sat.finish_step();
    const nlohmann::json after = sat.state();
    // Layer 0's kept heads see the same input as in the dense step, so they measure the same;
    // omitted heads and channels keep their dense scores exactly.
    const auto heads0 = after.at("heads")[0].get<std::vector<double>>();
    for (index_t h = 0; h < 4; ++h)
      CHECK(heads0[std::size_t(h)] == doctest::Approx(measured[std::size_t(h)]).epsilon(1e-12));
    for (index_t l = 0; l < 2; ++l) {
      const auto before = dense.at("channels")[std::size_t(l)].get<std::vector<double>>();
      const auto now = after.at("channels")[std::size_t(l)].get<std::vector<double>>();
      int changed = 0;
      for (index_t i = 0; i < 24; ++i) {
        const bool is_kept = std::ranges::find(k[std::size_t(l)].channels, i) != k[std::size_t(l)].channels.end();
        if (!is_kept) CHECK(now[std::size_t(i)] == before[std::size_t(i)]);
        changed += now[std::size_t(i)] != before[std::size_t(i)];
      }
      if (l == 1) CHECK(changed > 0);  // layer 1's input changed with layer 0's omissions
    }
  }
}

TEST_CASE("Sat merges a step's measurements when it ends, the last micro-batch in global order winning") {
  DenseGpt model(config_for(FfnKind::dense, false));
  perturb(model, 31);
  Sat<DenseGpt> sat(sat_config(ScoreKind::activation, Selection::sample), model);
  Sat<DenseGpt> only_last(sat_config(ScoreKind::activation, Selection::sample), model);
  DenseGpt::Context ctx;
  const nlohmann::json before = sat.state();
  // Global micro-batch 1 runs first (as on rank 1 of 2), then micro-batch 0 (rank 0).
  CHECK(sat.select(model, 0, 1).empty());
  model.forward(ctx, Batch(41, 13).view(), 0.5);
  sat.observe(model, ctx);
  CHECK(sat.select(model, 0, 0).empty());
  model.forward(ctx, Batch(40, 13).view(), 0.5);
  sat.observe(model, ctx);
  CHECK(sat.state() == before);  // nothing joins the scores before the step ends
  sat.finish_step();
  CHECK(only_last.select(model, 0, 1).empty());
  model.forward(ctx, Batch(41, 13).view(), 0.5);
  only_last.observe(model, ctx);
  only_last.finish_step();
  CHECK(sat.state() == only_last.state());
  CHECK(sat.state() != before);
  CHECK(sat.state().at("measured").get<bool>());
}

TEST_CASE("Sat wanda scores weigh the measured activation norms by the reader's L1 norms") {
  DenseGpt model(config_for(FfnKind::dense, false));
  perturb(model, 13);
  Sat<DenseGpt> sat(sat_config(ScoreKind::wanda, Selection::topk), model);
  DenseGpt::Context ctx;
  const Batch batch(6, 13);
  CHECK(sat.select(model, 0, 0).empty());
  model.forward(ctx, batch.view(), 1.0);
  sat.observe(model, ctx);
  sat.finish_step();
  // By hand for layer 1's channels: wanda_scores on the dense activations and down weights.
  const auto a = model.blocks()[1].mlp().activations(ctx.blocks[1].mlp, 12);  // (N, F)
  auto& arena = model.arena();
  const double* down = arena.values() + arena.slot("h.1.mlp.down.weight").offset;
  std::vector<double> s(24);
  wanda_scores(a, matrix_view(down, 8, 24), 1, {}, s);
  const auto kept = sat.select(model, 1, 0);
  CHECK(kept[1].channels == largest(s, 12));
}

TEST_CASE("Sat's update flags leave omitted parameters and their moments bitwise unchanged under AdamW") {
  DenseGpt model(config_for(FfnKind::dense, false));
  perturb(model, 17);
  Sat<DenseGpt> sat(sat_config(ScoreKind::magnitude, Selection::sample, 0.7), model);
  auto& arena = model.arena();
  AdamW<double> opt(arena, {.weight_decay = 0.1});
  for (index_t i = 0; i < opt.size(); ++i) opt.m().data()[i] = opt.v().data()[i] = 0.01;
  DenseGpt::Context ctx;
  arena.zero_grads();
  std::vector<std::vector<LayerKept>> used;
  for (index_t micro = 0; micro < 2; ++micro) {
    const auto kept = sat.select(model, 3, micro);
    used.emplace_back(kept.begin(), kept.end());
    model.forward(ctx, Batch(20 + std::uint64_t(micro), 13).view(), 0.5, used.back());
    sat.observe(model, ctx);
    model.backward(ctx);
  }
  sat.finish_step();
  CHECK(used[0][0].channels != used[1][0].channels);  // each micro-batch draws its own
  const auto flags = sat.update_flags();
  REQUIRE(index_t(flags.size()) == arena.size());
  const std::vector<double> p0(arena.values(), arena.values() + arena.size());
  const std::vector<double> m0(opt.m().data(), opt.m().data() + opt.size());
  opt.step(arena, 1e-2, 1.0, flags);
  // Up row i of layer 0 is updated iff a micro-batch kept channel i.
  const ParamSlot& up = arena.slot("h.0.mlp.up.weight");
  int skipped = 0;
  for (index_t i = 0; i < 24; ++i) {
    const bool kept = std::ranges::find(used[0][0].channels, i) != used[0][0].channels.end() ||
                      std::ranges::find(used[1][0].channels, i) != used[1][0].channels.end();
    for (index_t j = 0; j < 8; ++j) {
      const index_t e = up.offset + i * 8 + j;
      CHECK(bool(flags[std::size_t(e)]) == kept);
      if (!kept) {
        CHECK(arena.values()[e] == p0[std::size_t(e)]);
        CHECK(opt.m().data()[e] == m0[std::size_t(e)]);
        CHECK(arena.grads()[e] == 0.0);
        ++skipped;
      } else {
        CHECK(arena.values()[e] != p0[std::size_t(e)]);
      }
    }
  }
  CHECK(skipped > 0);
  // Outside attention and MLP everything updates.
  const ParamSlot& wte = arena.slot("wte");
  CHECK(std::all_of(flags.begin() + wte.offset, flags.begin() + wte.offset + wte.size(),
                    [](std::uint8_t f) { return f == 1; }));
  // All-ones flags are the plain step (to rounding: the two loops may fuse multiply-adds
  // differently).
  DenseGpt a(model.config()), b(model.config());
  perturb(a, 1);
  perturb(b, 1);
  for (index_t i = 0; i < a.arena().size(); ++i) a.arena().grads()[i] = b.arena().grads()[i] = std::sin(double(i));
  AdamW<double> oa(a.arena()), ob(b.arena());
  const std::vector<std::uint8_t> ones(std::size_t(a.arena().size()), 1);
  oa.step(a.arena(), 1e-2);
  ob.step(b.arena(), 1e-2, 1.0, ones);
  double worst = 0;
  for (index_t i = 0; i < a.arena().size(); ++i)
    worst = std::max(worst, std::abs(a.arena().values()[i] - b.arena().values()[i]));
  CHECK(worst <= 1e-15);
}

TEST_CASE("Sat is dense at rate 0 and after the ladder, and its state resumes the same selection") {
  DenseGpt model(config_for(FfnKind::dense, true));
  perturb(model, 23);
  SatConfig cfg = sat_config(ScoreKind::activation, Selection::sample);
  cfg.ladder = {0.5, 2, 4, 2};  // 0.5 on steps 0-1, 0.25 on 2-3, dense from 4
  Sat<DenseGpt> sat(cfg, model);
  DenseGpt::Context ctx;
  const Batch batch(8, 13);
  sat.select(model, 0, 0);
  model.forward(ctx, batch.view(), 1.0);
  sat.observe(model, ctx);
  sat.finish_step();
  CHECK(sat.select(model, 1, 0)[0].channels.size() == 12);
  CHECK(sat.select(model, 2, 0)[0].channels.size() == 20);  // 24 - 6 = 18, aligned to 4
  CHECK(sat.select(model, 4, 0).empty());
  CHECK(sat.update_flags().empty());

  Sat<DenseGpt> resumed(cfg, model);
  resumed.restore(nlohmann::json::parse(sat.state().dump()));  // through text, as a checkpoint
  for (index_t micro = 0; micro < 3; ++micro) {
    const auto x = sat.select(model, 3, micro);
    const std::vector<LayerKept> want(x.begin(), x.end());
    const auto y = resumed.select(model, 3, micro);
    for (std::size_t l = 0; l < 2; ++l) {
      CHECK(y[l].heads == want[l].heads);
      CHECK(y[l].channels == want[l].channels);
    }
  }
  Sat<DenseGpt> other(sat_config(ScoreKind::activation, Selection::sample), model);
  nlohmann::json bad = sat.state();
  bad["channels"][1].push_back(1.0);
  CHECK_THROWS_WITH(other.restore(bad), doctest::Contains("do not fit this model"));
}

TEST_CASE("Sat rejects FFNs that cannot compute the kept channels, with the reason") {
  using LowRankGpt = Gpt<LowRank<double>, LowRank<double>>;
  GptConfig c = config_for(FfnKind::lowrank, false);
  c.rank = 8;
  LowRankGpt lowrank(c);
  SatConfig cfg = sat_config(ScoreKind::magnitude, Selection::topk, 0.8);  // keeps 5 of 24
  cfg.channel_align = 1;
  CHECK_THROWS_WITH(Sat<LowRankGpt>(cfg, lowrank), doctest::Contains("rank 8 keeps at least 8"));
  cfg.ladder.rho0 = 0.6;  // keeps 10
  CHECK_NOTHROW(Sat<LowRankGpt>(cfg, lowrank));
  using BlockGpt = Gpt<BlockDense<double>, BlockDense<double>>;
  GptConfig b = config_for(FfnKind::blockdense, false);
  b.rank = 4;
  BlockGpt block(b);
  CHECK_THROWS_WITH(Sat<BlockGpt>(sat_config(ScoreKind::magnitude, Selection::topk), block),
                    doctest::Contains("only Dense and LowRank"));
}
