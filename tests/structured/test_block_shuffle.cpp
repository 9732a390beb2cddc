// BlockShuffle: the explicit index map of the paper, shapes, counts, B = 1 full rank, gradients.
#include "support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

namespace {

/// The index-map reference of spec §2.3, written with loops for one token.
template <class T>
std::vector<T> reference(const BlockShuffle<T>& f, const std::vector<T>& x) {
  const auto& v = f.template factor<3>();  // stage 1, (B, q, p)
  const auto& u = f.template factor<1>();  // stage 2, (B, s, q)
  const index_t B = v.blocks(), p = v.block_in(), q = v.block_out(), s = u.block_out();
  std::vector<T> h(B * q), z(B * q), out(B * s), y(B * s);
  for (index_t i = 0; i < B; ++i)
    for (index_t e = 0; e < q; ++e) {
      T acc = 0;
      for (index_t k = 0; k < p; ++k) acc += v.block(i)(e, k) * x[i * p + k];
      h[i * q + e] = acc;
    }
  for (index_t c = 0; c < B; ++c)
    for (index_t e = 0; e < q; ++e) z[c * q + e] = h[e * B + c];  // z[c q + e] = h[e B + c]
  for (index_t c = 0; c < B; ++c)
    for (index_t t = 0; t < s; ++t) {
      T acc = 0;
      for (index_t e = 0; e < q; ++e) acc += u.block(c)(t, e) * z[c * q + e];
      out[c * s + t] = acc;
    }
  for (index_t c = 0; c < B; ++c)
    for (index_t t = 0; t < s; ++t) y[t * B + c] = out[c * s + t];  // y[t B + c] = u[c s + t]
  return y;
}

}  // namespace

TEST_CASE_TEMPLATE("BlockShuffle matches the paper's explicit index map and its dense matrix", T, float, double) {
  Rng rng(71);
  for (auto [n, m] : {std::pair<index_t, index_t>{16, 16}, {8, 24}, {24, 8}, {12, 36}}) {
    for (index_t b : {1, 2, 4}) {
      CAPTURE(n);
      CAPTURE(m);
      CAPTURE(b);
      Owned f(block_shuffle<T>(n, m, b));
      init_normal(f.map, rng, 0.5);
      for (index_t tokens : {1, 7, 33}) test::check_against_dense(f.map, tokens, rng);
      auto x = test::random_matrix<T>(3, n, rng);
      Matrix<T> y(3, m);
      Context<BlockShuffle<T>> ctx;
      forward(f.map, x.view(), y.view(), ctx);
      for (index_t t = 0; t < 3; ++t) {
        std::vector<T> xt(x.data() + t * n, x.data() + (t + 1) * n);
        const auto ref = reference(f.map, xt);
        for (index_t j = 0; j < m; ++j) CHECK(y(t, j) == doctest::Approx(ref[j]).epsilon(test::tolerance<T>()));
      }
    }
  }
}

TEST_CASE("BlockShuffle shapes: the intermediate width is min(in, out)") {
  const auto up = block_shuffle<float>(768, 3072, 2).parameters();  // fc1
  REQUIRE(up.size() == 2);
  CHECK(up[0] == ParamInfo{"0.blocks", {2, 384, 384}});
  CHECK(up[1] == ParamInfo{"2.blocks", {2, 1536, 384}});
  const auto down = block_shuffle<float>(3072, 768, 2).parameters();  // fc2
  CHECK(down[0] == ParamInfo{"0.blocks", {2, 384, 1536}});
  CHECK(down[1] == ParamInfo{"2.blocks", {2, 384, 384}});
  CHECK(block_shuffle<float>(768, 3072, 2).param_count() == 1474560);
  CHECK(block_shuffle<float>(3072, 768, 2).param_count() == 1474560);
  CHECK(block_shuffle<float>(768, 3072, 4).param_count() == 1474560 / 2);
  CHECK(2 * block_shuffle<float>(2048, 8192, 4).param_count() == 10485760);
  CHECK(block_shuffle<float>(768, 3072, 2).flops(7) == 2 * 7 * 1474560);
}

TEST_CASE("BlockShuffle with one block can be full rank") {
  Rng rng(72);
  for (auto [n, m] : {std::pair<index_t, index_t>{12, 20}, {20, 12}}) {
    Owned f(block_shuffle<double>(n, m, 1));
    initialize(f.map, rng);
    Eigen::FullPivLU<EigenRowMajor<double>> lu(as_eigen(f.map.to_dense()));
    CHECK(lu.rank() == std::min(n, m));
  }
}

TEST_CASE("BlockShuffle gradients match finite differences") {
  Rng rng(73);
  for (auto [n, m] : {std::pair<index_t, index_t>{4, 8}, {8, 4}}) {
    Owned f(block_shuffle<double>(n, m, 2));
    init_normal(f.map, rng, 0.5);
    test::check_gradients(f, 3, rng, test::no_epilogue);
    test::check_gradients(f, 3, rng, test::bias_gelu_epilogue);
  }
}

TEST_CASE("BlockShuffle rejects widths not divisible by the block count") {
  CHECK_THROWS_WITH_AS(block_shuffle<float>(768, 3070, 4), doctest::Contains("out_features = 3070 is not divisible by blocks = 4"),
                       Error);
}
