// premerge(): the pre-merged decoder of a trained model gives the trained model's logits at every
// token count, through the structured path (bit for bit) and the merged path (to fp32 rounding),
// for LowRank, BlockDense and BlockShuffle FFNs, with given and calibrated thresholds.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/from_dense.hpp>
#include <bonsai/nn/premerge.hpp>
#include <cmath>

using namespace bonsai;

namespace {

GptConfig small_config(FfnKind ffn) {
  GptConfig c;
  c.vocab_size = 17;
  c.max_seq_len = 16;
  c.n_layer = 3;
  c.d_model = 16;
  c.n_head = 2;
  c.ffn = ffn;
  c.rank = ffn == FfnKind::lowrank ? 4 : 8;
  c.blocks = 2;
  c.act = ActKind::swiglu;  // up, gate and down all pre-merged
  c.init_std = 0.2;
  return c;
}

/// Logits of every position of `tokens` (one sequence) through decode with n tokens at a time.
template <class Model>
std::vector<float> decode_logits(Model& model, const std::vector<std::int32_t>& tokens, index_t n) {
  auto st = model.make_decode_state(1);
  std::vector<float> out;
  for (std::size_t i = 0; i < tokens.size(); i += std::size_t(n)) {
    const auto l = model.decode(st, tokens.data() + i, 1, n);
    out.insert(out.end(), l.data(), l.data() + l.size());
  }
  return out;
}

template <class F>
void for_each_structure(F&& f) {
  f(std::type_identity<LowRank<float>>{}, FfnKind::lowrank);
  f(std::type_identity<BlockDense<float>>{}, FfnKind::blockdense);
  f(std::type_identity<BlockShuffle<float>>{}, FfnKind::blockshuffle);
}

}  // namespace

TEST_CASE("premerge keeps the trained model's logits on both paths") {
  for_each_structure([](auto s, FfnKind kind) {
    using S = typename decltype(s)::type;
    const GptConfig c = small_config(kind);
    Gpt<S, S> trained(c);
    Rng rng(31);
    trained.init(rng);
    std::vector<std::int32_t> tokens(16);
    for (auto& t : tokens) t = std::int32_t(rng.uniform() * double(c.vocab_size));

    for (index_t n : {1, 4}) {
      CAPTURE(n);
      const auto reference = decode_logits(trained, tokens, n);
      auto structured = premerge(trained, PremergeThresholds{0, 0});
      CHECK(decode_logits(structured, tokens, n) == reference);  // the same computation
      auto merged = premerge(trained, PremergeThresholds{1000, 1000});
      const auto m = decode_logits(merged, tokens, n);
      REQUIRE(m.size() == reference.size());
      float worst = 0, scale = 0;
      for (std::size_t i = 0; i < m.size(); ++i) {
        worst = std::max(worst, std::abs(m[i] - reference[i]));
        scale = std::max(scale, std::abs(reference[i]));
      }
      CHECK(worst <= 2e-5f * std::max(1.0f, scale));
      // Really the other path (its outputs may still round to the same logits).
      CHECK(merged.flops(1, n) > structured.flops(1, n));
    }
    // The arena holds W_merged beside the factors.
    auto merged = premerge(trained, PremergeThresholds{1, 1});
    CHECK(merged.arena().find("h.1.mlp.up.merged") != nullptr);
    CHECK(merged.arena().find("h.1.mlp.gate.merged") != nullptr);
    CHECK(merged.arena().find("h.2.mlp.down.merged") != nullptr);
    CHECK(merged.arena().find("h.0.mlp.up.merged") == nullptr);  // layer 0 is dense
    const auto t = premerge_thresholds(merged);
    CHECK(t.up == 1);
    CHECK(t.down == 1);
  });
}

TEST_CASE("premerge calibrates thresholds within the timed token counts") {
  using S = LowRank<float>;
  const GptConfig c = small_config(FfnKind::lowrank);
  Gpt<S, S> trained(c);
  Rng rng(32);
  trained.init(rng);
  auto merged = premerge(trained, std::nullopt, 8);
  const auto t = premerge_thresholds(merged);
  for (index_t v : {t.up, t.down}) CHECK((v == 0 || v == 1 || v == 2 || v == 4 || v == 8));
  std::vector<std::int32_t> tokens(8, 3);
  const auto a = decode_logits(trained, tokens, 2), b = decode_logits(merged, tokens, 2);
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) <= 1e-4f);
}

TEST_CASE("merged_dense is a dense model with the structured model's logits") {
  for_each_structure([](auto s, FfnKind kind) {
    using S = typename decltype(s)::type;
    GptConfig c = small_config(kind);
    c.act = ActKind::gelu;
    Gpt<S, S> trained(c);
    Rng rng(33);
    trained.init(rng);
    auto dense = merged_dense(trained);
    CHECK(dense.config().ffn == FfnKind::dense);
    CHECK(dense.arena().find("h.1.mlp.up.weight") != nullptr);
    std::vector<std::int32_t> tokens(12);
    for (auto& t : tokens) t = std::int32_t(rng.uniform() * double(c.vocab_size));
    const auto a = decode_logits(trained, tokens, 3), b = decode_logits(dense, tokens, 3);
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) <= 2e-5f);
  });
}

TEST_CASE("copy_by_name copies shared names, reports missing ones and rejects other shapes") {
  ParamArena<float> a, b, c;
  a.add("x", {2, 3});
  a.add("y", {4});
  b.add("y", {4});
  b.add("z", {1});
  c.add("x", {3, 2});
  for (auto* p : {&a, &b, &c}) p->allocate();
  for (index_t i = 0; i < a.size(); ++i) a.values()[i] = float(i);
  const auto missing = copy_by_name(a, a.values(), b, b.values());
  CHECK(missing == std::vector<std::string>{"z"});
  CHECK(b.value("y").data()[3] == 9.0f);
  CHECK(b.value("z").data()[0] == 0.0f);
  try {
    copy_by_name(a, a.values(), c, c.values());
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "copy_by_name: 'x' has shape (2, 3) in the source but (3, 2) in the target");
  }
}

TEST_CASE("fit_from_dense inverts merged_dense: the fitted structured model has the trained one's logits") {
  for_each_structure([](auto s, FfnKind kind) {
    using S = typename decltype(s)::type;
    for (bool dense_first : {true, false}) {
      CAPTURE(dense_first);
      GptConfig c = small_config(kind);
      c.dense_first_ffn = dense_first;
      Gpt<S, S> trained(c);
      Rng rng(34);
      trained.init(rng);
      auto dense = merged_dense(trained);
      Gpt<S, S> fitted(c);
      fit_from_dense(dense, fitted);
      std::vector<std::int32_t> tokens(12);
      for (auto& t : tokens) t = std::int32_t(rng.uniform() * double(c.vocab_size));
      const auto a = decode_logits(trained, tokens, 12), b = decode_logits(fitted, tokens, 12);
      REQUIRE(a.size() == b.size());
      for (std::size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) <= 1e-4f);
    }
  });
}

TEST_CASE("fit_from_dense: a full-rank LowRank model computes the dense model's logits") {
  GptConfig c = small_config(FfnKind::dense);
  Gpt<Dense<float>, Dense<float>> dense(c);
  Rng rng(35);
  dense.init(rng);
  c.ffn = FfnKind::lowrank;
  c.rank = c.d_model;  // min(d_model, ffn width): every FFN matrix has rank at most d_model
  c.dense_first_ffn = false;
  Gpt<LowRank<float>, LowRank<float>> fitted(c);
  fit_from_dense(dense, fitted);
  std::vector<std::int32_t> tokens(10);
  for (auto& t : tokens) t = std::int32_t(rng.uniform() * double(c.vocab_size));
  const auto a = decode_logits(dense, tokens, 10), b = decode_logits(fitted, tokens, 10);
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) <= 1e-4f);
  // Other shapes are refused with both described.
  GptConfig wider = c;
  wider.d_model = 32;
  Gpt<LowRank<float>, LowRank<float>> other(wider);
  CHECK_THROWS_WITH(fit_from_dense(dense, other), doctest::Contains("differ in more than the FFN structure"));
}
