// PreMerged<S>: merged and structured paths agree on both sides of the threshold (spec §12.13),
// the dispatcher returns exactly what the chosen path computes, parameters, FLOPs of the chosen
// path, and calibrate()'s table and threshold (never which path is faster: no test depends on
// timing), for LowRank, BlockDense and BlockShuffle.
#include "support/errors.hpp"
#include "support/maps.hpp"

using namespace bonsai;
using bonsai::test::Owned;

namespace {

template <class T>
auto structures() {
  return std::tuple{LowRank<T>(12, 20, 4), block_dense<T>(12, 20, 6, 2), block_shuffle<T>(12, 20, 2),
                    block_shuffle<T>(20, 12, 4)};
}

/// y = epi(x W^T) through map's own lowering.
template <class M, class T, class Epi>
Matrix<T> forward_of(const M& map, const Matrix<T>& x, const Epi& epi) {
  Matrix<T> y(x.rows(), map.out_features());
  Context<M> ctx;
  forward(map, x.view(), y.view(), ctx, epi);
  return y;
}

}  // namespace

TEST_CASE_TEMPLATE("PreMerged paths agree and the dispatcher returns the chosen path exactly", T, float, double) {
  Rng rng(501);
  const index_t threshold = 4;
  std::apply([&](const auto&... s) {
    ([&](const auto& structure) {
      Owned f(PreMerged(structure, threshold));
      initialize(f.map.structured(), rng);
      merge(f.map);
      CHECK(as_eigen(f.map.to_dense()) == as_eigen(f.map.structured().to_dense()));
      const index_t out = structure.out_features();
      Vector<T> bias(out), db(out);
      fill_normal(bias.view(), rng);
      for (index_t tokens : {1, 3, 4, 5, 9}) {
        CAPTURE(tokens);
        CHECK(f.map.uses_merged(tokens) == (tokens <= threshold));
        const auto x = bonsai::test::random_matrix<T>(tokens, structure.in_features(), rng);
        auto check = [&](const auto& epi) {
          const Matrix<T> ys = forward_of(f.map.structured(), x, epi);
          const Matrix<T> ym = forward_of(f.map.merged(), x, epi);
          CHECK(bonsai::test::rel_error(as_eigen(ym), as_eigen(ys)) < bonsai::test::tolerance<T>());
          const Matrix<T> y = forward_of(f.map, x, epi);
          CHECK(as_eigen(y) == as_eigen(f.map.uses_merged(tokens) ? ym : ys));  // bit for bit
        };
        check(epilogue::None{});
        check(epilogue::BiasGelu<T>{bias.view(), db.view()});
      }
    }(s), ...);
  }, structures<T>());
}

TEST_CASE("PreMerged threshold moves the dispatch and one context serves both paths") {
  Rng rng(502);
  Owned f(PreMerged(block_shuffle<float>(16, 24, 4)));
  initialize(f.map.structured(), rng);
  merge(f.map);
  const auto x = bonsai::test::random_matrix<float>(6, 16, rng);
  const Matrix<float> ys = forward_of(f.map.structured(), x, epilogue::None{});
  const Matrix<float> ym = forward_of(f.map.merged(), x, epilogue::None{});
  Matrix<float> y(6, 24);
  Context<decltype(f.map)> ctx;
  for (index_t max : {0, 5, 6, 100, 0}) {
    CAPTURE(max);
    f.map.set_max_merged_tokens(max);
    CHECK(f.map.max_merged_tokens() == max);
    forward(f.map, x.view(), y.view(), ctx);
    CHECK(ctx.tokens() == 6);
    CHECK(as_eigen(y) == as_eigen(max >= 6 ? ym : ys));
  }
}

TEST_CASE("PreMerged parameters, counts and FLOPs of the chosen path") {
  const PreMerged<LowRank<float>> f(LowRank<float>(8, 6, 2), 4);
  const auto p = f.parameters();
  REQUIRE(p.size() == 3);
  CHECK(p[0] == ParamInfo{"V", {2, 8}});
  CHECK(p[1] == ParamInfo{"U", {6, 2}});
  CHECK(p[2] == ParamInfo{"merged", {6, 8}});
  CHECK(f.param_count() == 2 * 14 + 48);
  CHECK(f.max_merged_tokens() == 4);
  CHECK(f.flops(4) == 2 * 4 * 48);
  CHECK(f.flops(5) == 2 * 5 * 28);
  CHECK(PreMerged(LowRank<float>(8, 6, 2)).max_merged_tokens() == 0);
  CHECK_FALSE(PreMerged(LowRank<float>(8, 6, 2)).uses_merged(1));

  const auto bs = block_shuffle<double>(12, 20, 2);
  const PreMerged<BlockShuffle<double>> g(bs, 1);
  const auto q = g.parameters();
  REQUIRE(q.size() == bs.parameters().size() + 1);
  for (std::size_t i = 0; i + 1 < q.size(); ++i) CHECK(q[i] == bs.parameters()[i]);
  CHECK(q.back() == ParamInfo{"merged", {20, 12}});
  CHECK(g.param_count() == bs.param_count() + 240);
  CHECK(g.flops(1) == 2 * 240);
  CHECK(g.flops(3) == bs.flops(3));

  PreMerged<LowRank<float>> h = f;
  CHECK(::test::error_of([&] { h.set_max_merged_tokens(-1); }).find("max_merged_tokens = -1 is negative") !=
        std::string::npos);
  CHECK(::test::error_of([&] { merge(h); }).find("not bound") != std::string::npos);
}

TEST_CASE("PreMerged calibrate returns a consistent table and sets its threshold") {
  Rng rng(503);
  Owned f(PreMerged(LowRank<float>(64, 256, 16), 7));
  initialize(f.map.structured(), rng);
  merge(f.map);
  for (index_t max_tokens : {16, 10, 1}) {
    CAPTURE(max_tokens);
    const PremergeCalibration cal = calibrate(f.map, max_tokens);
    std::vector<index_t> expect;
    for (index_t t = 1; t <= max_tokens; t *= 2) expect.push_back(t);
    CHECK(cal.tokens == expect);
    REQUIRE(cal.structured_s.size() == expect.size());
    REQUIRE(cal.merged_s.size() == expect.size());
    for (std::size_t i = 0; i < expect.size(); ++i) {
      CHECK(cal.structured_s[i] > 0);
      CHECK(cal.merged_s[i] > 0);
    }
    CHECK(f.map.max_merged_tokens() == cal.max_merged_tokens);
    // The threshold is the end of the leading run of counts where merged was faster.
    std::size_t wins = 0;
    while (wins < expect.size() && cal.merged_s[wins] < cal.structured_s[wins]) ++wins;
    CHECK(cal.max_merged_tokens == (wins == 0 ? 0 : expect[wins - 1]));
  }
  CHECK(::test::error_of([&] { calibrate(f.map, 0); }).find("max_tokens = 0 must be positive") !=
        std::string::npos);
}
