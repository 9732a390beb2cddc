// Whole-model checks of Gpt<Up, Down>: finite-difference gradients in double for every FFN
// structure in GPT-2 and Llama style, parameter naming, and bad input.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/nn/sampling.hpp>
#include <bonsai/train/adamw.hpp>
#include <cmath>
#include <set>

using namespace bonsai;

namespace {

GptConfig tiny_config(FfnKind ffn, bool llama) {
  GptConfig c;
  c.vocab_size = 11;
  c.max_seq_len = 8;
  c.n_layer = 2;
  c.d_model = 8;
  c.n_head = 2;
  c.ffn_dim = 16;
  c.ffn = ffn;
  c.rank = ffn == FfnKind::lowrank ? 3 : 4;
  c.blocks = 2;
  c.init_std = 0.3;  // large enough that every path carries gradient
  if (llama) {
    c.norm = NormKind::rmsnorm;
    c.pos = PosKind::rope;
    c.act = ActKind::swiglu;
    c.n_head = 4;
    c.n_kv_head = 2;
    c.attn_dim = 8;
    c.dense_first_ffn = false;
  }
  return c;
}

/// Compares d(loss)/d(theta) with central differences for every parameter of the model, with
/// `mask` (nn/growth_mask.hpp) set when it masks anything.
template <class Up, class Down>
void check_model_gradients(const GptConfig& config, const GrowthMask& mask = {}) {
  Gpt<Up, Down> model(config);
  Rng rng(42);
  model.init(rng);
  if (mask.masks_anything()) model.set_growth_mask(mask);
  auto& arena = model.arena();
  // Perturb norms and biases too, so their gradients are not trivially symmetric.
  for (index_t i = 0; i < arena.size(); ++i) arena.values()[i] += 0.05 * rng.normal();

  const index_t B = 2, T = 5;
  std::vector<std::int32_t> in(B * T), tgt(B * T);
  for (auto& t : in) t = std::int32_t(rng.uniform() * double(config.vocab_size));
  for (auto& t : tgt) t = std::int32_t(rng.uniform() * double(config.vocab_size));
  tgt[3] = -1;  // an ignored position
  const TokenBatch batch{in.data(), tgt.data(), B, T};

  typename Gpt<Up, Down>::Context ctx;
  arena.zero_grads();
  const double loss = model.forward(ctx, batch, 1.0);
  model.backward(ctx);
  CHECK(std::isfinite(loss));

  const double h = 1e-6;
  double worst = 0;
  std::string worst_name;
  for (const ParamSlot& s : arena.slots()) {
    for (index_t k = 0; k < s.size(); ++k) {
      double& p = arena.values()[s.offset + k];
      const double saved = p;
      p = saved + h;
      const double lp = model.forward(ctx, batch);
      p = saved - h;
      const double lm = model.forward(ctx, batch);
      p = saved;
      const double fd = (lp - lm) / (2 * h);
      const double an = arena.grads()[s.offset + k];
      const double err = std::abs(fd - an) / std::max(1e-3, std::abs(fd) + std::abs(an));
      if (err > worst) {
        worst = err;
        worst_name = s.name + "[" + std::to_string(k) + "]";
      }
    }
  }
  INFO("worst relative error at ", worst_name);
  CHECK(worst < 1e-5);
}

template <class F>
void for_each_structure(bool llama, F&& f) {
  for (FfnKind k : {FfnKind::dense, FfnKind::lowrank, FfnKind::blockdense, FfnKind::blockshuffle}) {
    const GptConfig c = tiny_config(k, llama);
    with_ffn_structure<double>(c, [&](auto tag) {
      using Map = typename decltype(tag)::type;
      f(c, std::type_identity<Map>{});
    });
  }
}

}  // namespace

TEST_CASE("gpt: finite-difference gradients, GPT-2 style, every FFN structure") {
  for_each_structure(false, [](const GptConfig& c, auto tag) {
    using Map = typename decltype(tag)::type;
    CAPTURE(to_string(c.ffn));
    check_model_gradients<Map, Map>(c);
  });
}

TEST_CASE("gpt: finite-difference gradients, Llama style (RMSNorm, RoPE, SwiGLU, GQA)") {
  for_each_structure(true, [](const GptConfig& c, auto tag) {
    using Map = typename decltype(tag)::type;
    CAPTURE(to_string(c.ffn));
    check_model_gradients<Map, Map>(c);
  });
}

/// MSG's masks at 0.4 on the last residual units, the last key/value head group, the last FFN
/// units and the top layer.
GrowthMask partial_mask(const GptConfig& c) {
  GrowthMask m;
  m.value = 0.4;
  m.residual.assign(std::size_t(c.d_model), false);
  m.residual[std::size_t(c.d_model - 1)] = m.residual[std::size_t(c.d_model - 3)] = true;
  m.heads.assign(std::size_t(c.kv_heads()), false);
  m.heads.back() = true;
  m.ffn.assign(std::size_t(c.ffn_width()), false);
  for (index_t j = c.ffn_width() / 2; j < c.ffn_width(); j += 2) m.ffn[std::size_t(j)] = true;
  m.layers.assign(std::size_t(c.n_layer), false);
  m.layers.back() = true;
  return m;
}

TEST_CASE("gpt: finite-difference gradients under growth masks (mask-weighted norms, q/k/v, FFN, layers)") {
  for (bool llama : {false, true})
    for_each_structure(llama, [](const GptConfig& c, auto tag) {
      using Map = typename decltype(tag)::type;
      CAPTURE(to_string(c.ffn));
      CAPTURE(to_string(c.act));
      check_model_gradients<Map, Map>(c, partial_mask(c));
    });
}

TEST_CASE("gpt: growth masks that do not match the model are rejected") {
  const GptConfig c = tiny_config(FfnKind::dense, false);
  Gpt<Dense<double>, Dense<double>> model(c);
  GrowthMask m = partial_mask(c);
  m.ffn.push_back(true);
  CHECK_THROWS_WITH_AS(model.set_growth_mask(m), doctest::Contains("FFN mask has 17 entries but the model has 16"), Error);
  m = partial_mask(c);
  m.value = 1.5;
  CHECK_THROWS_WITH_AS(model.set_growth_mask(m), doctest::Contains("outside [0, 1]"), Error);
  CHECK(!model.growth_mask());
}

TEST_CASE("gpt: parameter names follow the arena convention") {
  GptConfig c = tiny_config(FfnKind::lowrank, false);
  Gpt<LowRank<float>, LowRank<float>> model(c);
  std::set<std::string> names;
  for (const auto& s : model.arena().slots()) names.insert(s.name);
  for (const char* n : {"wte", "wpe", "h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.qkv.weight",
                        "h.0.attn.proj.bias", "h.0.mlp.up.weight", "h.0.mlp.down.weight",
                        "h.1.mlp.up.V", "h.1.mlp.up.U", "h.1.mlp.up.bias", "h.1.mlp.down.U",
                        "ln_f.weight", "ln_f.bias"})
    CHECK_MESSAGE(names.count(n) == 1, n);
  CHECK(model.arena().slot("h.1.mlp.up.V").shape == std::vector<index_t>{3, 8});
  CHECK(model.arena().slot("h.0.attn.qkv.weight").shape == std::vector<index_t>{24, 8});
}

TEST_CASE("gpt: bad tokens and lengths are rejected with a message") {
  GptConfig c = tiny_config(FfnKind::dense, false);
  Gpt<Dense<float>, Dense<float>> model(c);
  Rng rng(1);
  model.init(rng);
  Gpt<Dense<float>, Dense<float>>::Context ctx;
  std::vector<std::int32_t> in(9, 1), tgt(9, 2);
  CHECK_THROWS_AS(model.forward(ctx, TokenBatch{in.data(), tgt.data(), 1, 9}), Error);  // > max_seq_len
  in[2] = 11;
  CHECK_THROWS_WITH_AS(model.forward(ctx, TokenBatch{in.data(), tgt.data(), 1, 4}),
                       doctest::Contains("outside the vocabulary"), Error);
  in[2] = 1;
  tgt[1] = 12;
  CHECK_THROWS_AS(model.forward(ctx, TokenBatch{in.data(), tgt.data(), 1, 4}, 1.0f), Error);
  CHECK_THROWS_AS(model.backward(ctx), Error);
}

TEST_CASE("gpt: decoding with a KV cache equals the full forward's logits, with and without growth masks") {
  for (int variant = 0; variant < 4; ++variant) {
    const bool llama = variant % 2, masked = variant / 2;
    CAPTURE(llama);
    CAPTURE(masked);
    GptConfig c = tiny_config(FfnKind::lowrank, llama);
    Gpt<LowRank<double>, LowRank<double>> model(c);
    Rng rng(7);
    model.init(rng);
    if (masked) model.set_growth_mask(partial_mask(c));
    const index_t T = 7;
    std::vector<std::int32_t> tok(T);
    for (auto& t : tok) t = std::int32_t(rng.uniform() * double(c.vocab_size));
    Gpt<LowRank<double>, LowRank<double>>::Context ctx;
    model.forward(ctx, TokenBatch{tok.data(), nullptr, 1, T});
    const auto full = model.logits(ctx);  // (T, V)
    auto st = model.make_decode_state(1);
    auto logits = model.decode(st, tok.data(), 1, 3);  // prefill positions 0..2
    for (index_t t = 2; t < T; ++t) {
      if (t > 2) logits = model.decode(st, &tok[t], 1, 1);
      double err = 0;
      for (index_t j = 0; j < c.vocab_size; ++j) err = std::max(err, std::abs(logits(0, j) - full(t, j)));
      CAPTURE(t);
      CHECK(err < 1e-10);
    }
  }
}

TEST_CASE("gpt: sampling honours temperature 0 and top-k") {
  std::vector<float> logits{0.1f, 2.0f, -1.0f, 1.9f};
  Rng rng(3);
  CHECK(sample_token<float>(logits, 0.0, 0, rng) == 1);
  for (int i = 0; i < 200; ++i) {
    const auto id = sample_token<float>(logits, 1.0, 2, rng);
    CHECK((id == 1 || id == 3));
  }
}

TEST_CASE("gpt: a tiny structured model overfits one batch with AdamW") {
  for (FfnKind k : {FfnKind::dense, FfnKind::lowrank, FfnKind::blockshuffle}) {
    GptConfig c = tiny_config(k, false);
    c.vocab_size = 16;
    c.d_model = 16;
    c.ffn_dim = 64;
    c.init_std = 0.02;
    c.rank = 8;
    with_ffn_structure<float>(c, [&](auto tag) {
      using Map = typename decltype(tag)::type;
      Gpt<Map, Map> model(c);
      Rng rng(11);
      model.init(rng);
      AdamW<float> opt(model.arena(), {.weight_decay = 0.0});
      const index_t B = 2, T = 8;
      std::vector<std::int32_t> in(B * T), tgt(B * T);
      for (index_t i = 0; i < B * T; ++i) {
        in[i] = std::int32_t(rng.uniform() * 16);
        tgt[i] = std::int32_t(rng.uniform() * 16);
      }
      typename Gpt<Map, Map>::Context ctx;
      double first = 0, last = 0;
      for (int step = 0; step < 150; ++step) {
        model.arena().zero_grads();
        last = model.forward(ctx, TokenBatch{in.data(), tgt.data(), B, T}, 1.0f);
        if (step == 0) first = last;
        model.backward(ctx);
        opt.step(model.arena(), 1e-2);
      }
      CAPTURE(to_string(k));
      CHECK(first > 2.5);  // about ln 16 = 2.77 at initialisation
      CHECK(last < 0.1);   // memorised: random targets are only learnable by heart
    });
  }
}

TEST_CASE("Gpt: layer parameter names split into the layer and the rest") {
  CHECK(layer_param_name(3, "mlp.up.U") == "h.3.mlp.up.U");
  const auto p = split_layer_param_name("h.12.attn.qkv.weight");
  REQUIRE(p.has_value());
  CHECK(p->layer == 12);
  CHECK(p->rest == "attn.qkv.weight");
  CHECK_FALSE(split_layer_param_name("wte").has_value());
  CHECK_FALSE(split_layer_param_name("ln_f.weight").has_value());
  CHECK_FALSE(split_layer_param_name("h.x.ln_1.weight").has_value());
  CHECK_FALSE(split_layer_param_name("h.3").has_value());
}
