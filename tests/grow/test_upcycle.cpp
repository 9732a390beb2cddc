// Sparse upcycling of an FFN into a Mixture-of-Experts layer (grow/upcycle.hpp, spec growth.md
// §9 and §12.1-14): the upcycled layer equals the FFN under every option set that
// function_preserving() calls exact — top-k then softmax with any router, softmax then top-k with
// a zero router and the E/k factor, fine-grained shards with virtual-group routers — and differs
// under every other, measured over a grid of options; softmax then top-k without the factor is
// off by exactly k/E; experts are the documented copies and shards; bad options are rejected
// with a sentence. Dense, LowRank and BlockDense FFNs, GELU and SwiGLU, in double.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/grow/upcycle.hpp>
#include <bonsai/nn/gpt.hpp>
#include <string>
#include <vector>

#include "support/finite_diff.hpp"

using namespace bonsai;

namespace {

constexpr index_t d = 6, f = 12, n = 40;

/// An FFN with weights N(0, 0.5^2) (biases included), its MoE upcycling and random tokens.
template <class Up, class Down>
struct Upcycled {
  Mlp<Up, Down> ffn;
  ParamArena<double> dense, sparse;
  Moe<Up, Down> moe;
  std::vector<double> x, y_dense, y_moe;

  Upcycled(const Up& up, const Down& down, ActKind act, const UpcycleOptions& o,
           std::uint64_t seed = 7)
      : ffn(up, down, act),
        moe(upcycled(ffn, o)),
        x(std::size_t(n * d)),
        y_dense(x.size()),
        y_moe(x.size()) {
    ffn.declare(dense, "mlp.");
    dense.allocate();
    moe.declare(sparse, "moe.");
    sparse.allocate();
    Rng rng(seed);
    for (index_t i = 0; i < dense.size(); ++i) dense.values()[i] = 0.5 * rng.normal();
    for (double& v : x) v = rng.normal();
    upcycle(ffn, dense, "mlp.", moe, sparse, "moe.", o);
    typename Mlp<Up, Down>::Context c;
    typename Moe<Up, Down>::Context mc;
    const auto xv = matrix_view(static_cast<const double*>(x.data()), n, d);
    ffn.forward(dense, c, xv, matrix_view(y_dense.data(), n, d));
    moe.forward(sparse, mc, xv, matrix_view(y_moe.data(), n, d));
  }
  double diff() const { return test::max_diff(y_dense, y_moe); }
};

using D = Dense<double>;

UpcycleOptions options(index_t experts, index_t k, Gating g, index_t granularity = 1,
                       RouterInit router = RouterInit::random) {
  UpcycleOptions o;
  o.experts = experts;
  o.top_k = k;
  o.gating = g;
  o.granularity = granularity;
  o.router = router;
  o.router_std = 1.0;  // logits well apart, so a wrong choice shows
  return o;
}

template <class Up, class Down>
void check_exact(const Up& up, const Down& down) {
  for (ActKind act : {ActKind::gelu, ActKind::swiglu}) {
    for (index_t k : {1, 2, 4}) {
      CAPTURE(std::string(to_string(act)));
      CAPTURE(k);
      const UpcycleOptions o = options(4, k, Gating::topk_softmax);
      REQUIRE(o.function_preserving(act));
      CHECK(Upcycled<Up, Down>(up, down, act, o).diff() <= 1e-13);
    }
  }
}

}  // namespace

TEST_CASE("upcycle: top-k then softmax equals the Dense FFN for a random router") {
  check_exact(D(d, f), D(f, d));
}

TEST_CASE("upcycle: top-k then softmax equals the LowRank FFN for a random router") {
  check_exact(LowRank<double>(d, f, 3), LowRank<double>(f, d, 3));
}

TEST_CASE("upcycle: top-k then softmax equals the BlockDense FFN for a random router") {
  check_exact(block_dense<double>(d, f, 4, 2), block_dense<double>(f, d, 4, 2));
}

TEST_CASE("upcycle: softmax then top-k needs the zero router and the E over k factor") {
  for (ActKind act : {ActKind::gelu, ActKind::swiglu}) {
    CAPTURE(std::string(to_string(act)));
    UpcycleOptions o = options(4, 2, Gating::softmax_topk, 1, RouterInit::zero);
    CHECK(o.down_factor() == 2.0);
    CHECK(o.bias_factor() == 2.0);
    CHECK(Upcycled<D, D>(D(d, f), D(f, d), act, o).diff() <= 1e-13);

    // Plain copies give exactly k/E of the FFN (weights 1/E on k copies).
    o.scale = UpcycleScale::none;
    CHECK_FALSE(o.function_preserving(act));
    const Upcycled<D, D> plain(D(d, f), D(f, d), act, o);
    std::vector<double> scaled = plain.y_dense;
    for (double& v : scaled) v *= 2.0 / 4.0;
    CHECK(test::max_diff(scaled, plain.y_moe) <= 1e-13);
    CHECK(plain.diff() > 0.1);

    // A random router weighs copies by unequal probabilities that do not sum to one.
    o = options(4, 2, Gating::softmax_topk);
    CHECK_FALSE(o.function_preserving(act));
    CHECK(Upcycled<D, D>(D(d, f), D(f, d), act, o).diff() > 1e-3);
  }
}

TEST_CASE("upcycle: fine-grained shards with virtual-group routers equal the FFN") {
  // E = 6 experts from 3 copies of 2 shards; k = 2 picks one whole copy, k = 4 two.
  for (ActKind act : {ActKind::gelu, ActKind::swiglu})
    for (Gating g : {Gating::topk_softmax, Gating::softmax_topk})
      for (index_t k : {2, 4}) {
        CAPTURE(std::string(to_string(act)));
        CAPTURE(std::string(to_string(g)));
        CAPTURE(k);
        const RouterInit r = g == Gating::softmax_topk ? RouterInit::zero : RouterInit::random;
        const UpcycleOptions o = options(6, k, g, 2, r);
        REQUIRE(o.function_preserving(act));
        CHECK(Upcycled<D, D>(D(d, f), D(f, d), act, o).diff() <= 1e-13);
        CHECK(Upcycled<LowRank<double>, LowRank<double>>(LowRank<double>(d, f, 3),
                                                         LowRank<double>(f, d, 3), act, o)
                  .diff() <= 1e-13);
      }
}

TEST_CASE("upcycle: function_preserving agrees with the measured layer over a grid of options") {
  // Every combination of gating, router, granularity, virtual groups, k and scale: the layer
  // equals the FFN exactly when the query says so, and is visibly off otherwise.
  index_t exact = 0, inexact = 0;
  for (ActKind act : {ActKind::gelu, ActKind::swiglu})
    for (Gating g : {Gating::topk_softmax, Gating::softmax_topk})
      for (RouterInit r : {RouterInit::random, RouterInit::zero})
        for (index_t G : {1, 2})
          for (bool groups : {true, false})
            for (index_t k : {1, 2, 3, 4})
              for (UpcycleScale s : {UpcycleScale::down, UpcycleScale::split, UpcycleScale::none}) {
                UpcycleOptions o = options(4, k, g, G, r);
                o.virtual_groups = groups;
                o.scale = s;
                const double diff = Upcycled<D, D>(D(d, f), D(f, d), act, o).diff();
                CAPTURE(std::string(to_string(act)));
                CAPTURE(std::string(to_string(g)));
                CAPTURE(std::string(to_string(r)));
                CAPTURE(std::string(to_string(s)));
                CAPTURE(G);
                CAPTURE(groups);
                CAPTURE(k);
                CAPTURE(diff);
                if (o.function_preserving(act)) {
                  CHECK(diff <= 1e-12);
                  ++exact;
                } else {
                  CHECK(diff > 1e-4);
                  ++inexact;
                }
              }
  CHECK(exact > 20);
  CHECK(inexact > 20);
}

TEST_CASE("upcycle: experts are scaled copies of the FFN's shards and share router rows") {
  UpcycleOptions o = options(4, 2, Gating::softmax_topk, 2);  // c = E G / k = 4, c_b = 2
  const Upcycled<D, D> u(D(d, f), D(f, d), ActKind::swiglu, o);
  const ParamArena<double>& a = u.dense;
  ParamArena<double>& m = const_cast<ParamArena<double>&>(u.sparse);
  CHECK(m.slot("moe.router.weight").shape == std::vector<index_t>{4, d});
  CHECK(m.slot("moe.experts.3.up.weight").shape == std::vector<index_t>{f / 2, d});
  CHECK(m.slot("moe.experts.3.down.weight").shape == std::vector<index_t>{d, f / 2});
  const double* up = a.values() + a.slot("mlp.up.weight").offset;      // (F, d)
  const double* gate = a.values() + a.slot("mlp.gate.weight").offset;  // (F, d)
  const double* down = a.values() + a.slot("mlp.down.weight").offset;  // (d, F)
  const double* bd = a.values() + a.slot("mlp.down.bias").offset;      // (d)
  for (index_t e = 0; e < 4; ++e) {
    CAPTURE(e);
    const index_t s = e % 2, h = f / 2;  // shard s of copy e / 2
    const std::string p = "moe.experts." + std::to_string(e) + ".";
    const double* eu = m.value(p + "up.weight").data();
    const double* eg = m.value(p + "gate.weight").data();
    const double* ed = m.value(p + "down.weight").data();
    const double* ebd = m.value(p + "down.bias").data();
    for (index_t i = 0; i < h * d; ++i) {
      CHECK(eu[i] == up[s * h * d + i]);
      CHECK(eg[i] == gate[s * h * d + i]);
    }
    for (index_t r = 0; r < d; ++r) {
      for (index_t j = 0; j < h; ++j) CHECK(ed[r * h + j] == 4.0 * down[r * f + s * h + j]);
      CHECK(ebd[r] == 2.0 * bd[r]);
    }
  }
  const double* wr = m.value("moe.router.weight").data();  // (E, d)
  for (index_t i = 0; i < d; ++i) {
    CHECK(wr[0 * d + i] == wr[1 * d + i]);
    CHECK(wr[2 * d + i] == wr[3 * d + i]);
    CHECK(wr[0 * d + i] != wr[2 * d + i]);
  }
}

TEST_CASE("upcycle: the split scale halves the factor's exponent on up and down") {
  UpcycleOptions o = options(4, 2, Gating::topk_softmax, 2);  // c = G = 2
  o.scale = UpcycleScale::split;
  const Upcycled<D, D> u(D(d, f), D(f, d), ActKind::swiglu, o);
  ParamArena<double>& m = const_cast<ParamArena<double>&>(u.sparse);
  const double* up = u.dense.values() + u.dense.slot("mlp.up.weight").offset;
  const double* bu = u.dense.values() + u.dense.slot("mlp.up.bias").offset;
  const double* gate = u.dense.values() + u.dense.slot("mlp.gate.weight").offset;
  const double* eu = m.value("moe.experts.1.up.weight").data();
  const double* ebu = m.value("moe.experts.1.up.bias").data();
  const double* eg = m.value("moe.experts.1.gate.weight").data();
  const double c = std::sqrt(2.0);
  for (index_t i = 0; i < f / 2 * d; ++i) {
    CHECK(eu[i] == up[f / 2 * d + i] * c);
    CHECK(eg[i] == gate[f / 2 * d + i]);  // the gate passes silu: unscaled
  }
  for (index_t i = 0; i < f / 2; ++i) CHECK(ebu[i] == bu[f / 2 + i] * c);
  CHECK(u.diff() <= 1e-13);
}

TEST_CASE("upcycle: bad options are rejected with a sentence") {
  Mlp<D, D> ffn(D(d, f), D(f, d), ActKind::gelu);
  UpcycleOptions o = options(5, 2, Gating::topk_softmax, 2);
  CHECK_THROWS_WITH_AS(upcycled(ffn, o),
                       doctest::Contains("5 experts cannot be made of whole copies cut into 2"),
                       Error);
  o = options(4, 5, Gating::topk_softmax);
  CHECK_THROWS_WITH_AS(upcycled(ffn, o),
                       doctest::Contains("top_k = 5 must lie between 1 and the number of experts"),
                       Error);
  o = options(10, 2, Gating::topk_softmax, 5);
  CHECK_THROWS_WITH_AS(upcycled(ffn, o),
                       doctest::Contains("12 hidden units cannot be cut into 5 equal shards"),
                       Error);
  using B = decltype(block_dense<double>(d, f, 4, 2));
  const Mlp<B, B> blocky(block_dense<double>(d, f, 4, 2), block_dense<double>(f, d, 4, 2),
                         ActKind::gelu);
  CHECK_THROWS_WITH_AS(upcycled(blocky, options(4, 2, Gating::topk_softmax, 2)),
                       doctest::Contains("block-diagonal FFN cannot be cut into shards"), Error);

  // A layer that does not match the options.
  ParamArena<double> a, m;
  ffn.declare(a, "");
  a.allocate();
  Moe<D, D> other(D(d, f), D(f, d), ActKind::gelu, 3, 1);
  other.declare(m, "");
  m.allocate();
  CHECK_THROWS_WITH_AS(upcycle(ffn, a, "", other, m, "", options(4, 2, Gating::topk_softmax)),
                       doctest::Contains("is not the one upcycled() builds"), Error);
  CHECK_THROWS_WITH_AS(parse_router_init("ones"), doctest::Contains("ones"), Error);
  CHECK(parse_upcycle_scale("split") == UpcycleScale::split);
  CHECK(parse_router_init("zero") == RouterInit::zero);
}

namespace {

GptConfig dense_gpt(bool llama) {
  GptConfig c;
  c.vocab_size = 17;
  c.max_seq_len = 8;
  c.n_layer = 3;
  c.d_model = 8;
  c.n_head = 2;
  c.ffn_dim = 16;
  c.init_std = 0.4;
  if (llama) {
    c.norm = NormKind::rmsnorm;
    c.pos = PosKind::rope;
    c.act = ActKind::swiglu;
    c.n_kv_head = 1;
  }
  return c;
}

/// The largest logit difference between a dense Gpt and its upcycling under `o`.
template <class Map>
double upcycled_logit_diff(const GptConfig& c, const UpcycleOptions& o) {
  Gpt<Map, Map> dense(c);
  Rng rng(11);
  dense.init(rng);
  auto& values = dense.arena();
  for (index_t i = 0; i < values.size(); ++i) values.values()[i] += 0.2 * rng.normal();
  Gpt<Map, Map> moe(upcycled_config(c, o));
  upcycle(dense, moe, o);
  std::vector<std::int32_t> tokens(16);
  for (auto& t : tokens) t = std::int32_t(rng.uniform() * double(c.vocab_size));
  const TokenBatch batch{tokens.data(), nullptr, 2, 8};
  typename Gpt<Map, Map>::Context a, b;
  dense.forward(a, batch);
  moe.forward(b, batch);
  const auto la = dense.logits(a), lb = moe.logits(b);
  double worst = 0;
  for (index_t i = 0; i < la.size(); ++i)
    worst = std::max(worst, std::abs(la.data()[i] - lb.data()[i]));
  return worst;
}

}  // namespace

TEST_CASE("upcycle: a whole Gpt keeps its logits under the exact options and not otherwise") {
  for (bool llama : {false, true}) {
    CAPTURE(llama);
    const GptConfig c = dense_gpt(llama);
    const ActKind act = c.act;
    UpcycleOptions o = options(4, 2, Gating::topk_softmax);
    for (index_t every : {1, 2}) {
      o.every = every;
      CHECK(upcycled_logit_diff<D>(c, o) <= 1e-12);
    }
    o = options(6, 2, Gating::topk_softmax, 2);  // fine-grained, virtual groups
    o.every = 1;
    CHECK(upcycled_logit_diff<D>(c, o) <= 1e-12);
    o = options(4, 2, Gating::softmax_topk, 1, RouterInit::zero);
    CHECK(upcycled_logit_diff<D>(c, o) <= 1e-12);
    // Inexact: a random router under softmax then top-k, and plain copies of shards.
    o = options(4, 2, Gating::softmax_topk);
    REQUIRE_FALSE(o.function_preserving(act));
    CHECK(upcycled_logit_diff<D>(c, o) > 1e-3);
    o = options(4, 2, Gating::topk_softmax, 2);
    o.scale = UpcycleScale::none;
    REQUIRE_FALSE(o.function_preserving(act));
    CHECK(upcycled_logit_diff<D>(c, o) > 1e-3);
  }
  GptConfig low = dense_gpt(false);
  low.ffn = FfnKind::lowrank;
  low.rank = 4;
  UpcycleOptions o = options(4, 2, Gating::topk_softmax, 2);
  o.every = 1;
  CHECK(upcycled_logit_diff<LowRank<double>>(low, o) <= 1e-12);
}

TEST_CASE("upcycle: a whole Gpt copies every other parameter and builds every other layer") {
  const GptConfig c = dense_gpt(false);
  UpcycleOptions o = options(4, 2, Gating::topk_softmax);
  const GptConfig u = upcycled_config(c, o);
  CHECK(u.moe_experts == 4);
  CHECK(u.moe_every == 2);
  CHECK(u.moe_hidden() == 16);
  CHECK_FALSE(u.moe_layer(0));
  CHECK(u.moe_layer(1));
  CHECK_FALSE(u.moe_layer(2));
  Gpt<D, D> dense(c), moe(u);
  Rng rng(2);
  dense.init(rng);
  upcycle(dense, moe, o);
  for (const ParamSlot& s : dense.arena().slots()) {
    if (s.name.starts_with("h.1.mlp.")) continue;
    CAPTURE(s.name);
    const auto v = moe.arena().value(s.name);
    const double* src = dense.arena().values() + s.offset;
    for (index_t i = 0; i < s.size(); ++i) CHECK(v.data()[i] == src[i]);
  }
  CHECK_THROWS_WITH_AS(upcycled_config(u, o), doctest::Contains("already has Mixture-of-Experts"),
                       Error);
  o.experts = 8;
  CHECK_THROWS_WITH_AS(upcycle(dense, moe, o), doctest::Contains("is not the upcycled config"),
                       Error);
}
