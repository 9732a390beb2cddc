// SelfGuided<S>: the blend against its dense matrix, the end points a = 0 and a = 1, the guide's
// initialisation from S (BlockShuffle with both shuffles), gradient scaling and finite
// differences, for LowRank, BlockDense and BlockShuffle.
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

/// y = S x through S's own lowering, for comparison.
template <class S, class T = scalar_of<S>>
Matrix<T> structured_forward(const S& s, const Matrix<T>& x) {
  Matrix<T> y(x.rows(), s.out_features());
  Context<S> ctx;
  forward(s, x.view(), y.view(), ctx);
  return y;
}

/// S initialised by its default and a random guide (so W != S_merged).
template <class S>
void randomize(const SelfGuided<S>& f, Rng& rng) {
  initialize(f.structured(), rng);
  init_normal(f.guide(), rng, 0.3);
}

/// A flat parameter or gradient buffer as an Eigen vector.
template <class T>
Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>> flat(const Vector<T>& v) {
  return {v.data(), v.size()};
}

}  // namespace

TEST_CASE_TEMPLATE("SelfGuided blends the guide and the structured map", T, float, double) {
  Rng rng(401);
  std::apply([&](const auto&... s) {
    ([&](const auto& structure) {
      for (double alpha : {0.0, 0.25, 0.5, 0.854, 1.0}) {
        CAPTURE(alpha);
        Owned f(SelfGuided(structure, alpha));
      randomize(f.map, rng);
        const Matrix<T> w = f.map.to_dense();
        const EigenRowMajor<T> expect = T(alpha) * as_eigen(f.map.guide().weight()) +
                                        T(1 - alpha) * as_eigen(f.map.structured().to_dense());
        CHECK(bonsai::test::rel_error(as_eigen(w), expect) < bonsai::test::tolerance<T>());
        for (index_t tokens : {1, 7}) bonsai::test::check_against_dense(f.map, tokens, rng);
      }
    }(s), ...);
  }, structures<T>());
}

TEST_CASE("SelfGuided at a = 0 is S exactly and at a = 1 the guide exactly") {
  Rng rng(402);
  std::apply([&](const auto&... s) {
    ([&](const auto& structure) {
      Owned f(SelfGuided(structure, 0.0));
      randomize(f.map, rng);
      const auto x = bonsai::test::random_matrix<float>(5, structure.in_features(), rng);
      Matrix<float> y(5, structure.out_features());
      Context<decltype(f.map)> ctx;
      forward(f.map, x.view(), y.view(), ctx);
      CHECK(as_eigen(y) == as_eigen(structured_forward(f.map.structured(), x)));  // bit for bit
      f.map.set_alpha(1.0);
      forward(f.map, x.view(), y.view(), ctx);
      CHECK(as_eigen(y) == as_eigen(structured_forward(f.map.guide(), x)));
    }(s), ...);
  }, structures<float>());
}

TEST_CASE("SelfGuided guide starts as the structured map's dense matrix, both shuffles included") {
  Rng rng(403);
  std::apply([&](const auto&... s) {
    ([&](const auto& structure) {
      Owned<SelfGuided<std::remove_cvref_t<decltype(structure)>>> f(SelfGuided(structure, 0.5));
      initialize(f.map, rng);
      CHECK(as_eigen(f.map.guide().weight()) == as_eigen(f.map.structured().to_dense()));
      // So the output at initialisation does not depend on a (spec §12.7).
      const auto x = bonsai::test::random_matrix<double>(6, structure.in_features(), rng);
      const Matrix<double> pure = structured_forward(f.map.structured(), x);
      for (double alpha : {0.0, 0.3, 1.0}) {
        f.map.set_alpha(alpha);
        Matrix<double> y(6, structure.out_features());
        Context<decltype(f.map)> ctx;
        forward(f.map, x.view(), y.view(), ctx);
        CHECK(bonsai::test::rel_error(as_eigen(y), as_eigen(pure)) < 1e-12);
      }
    }(s), ...);
  }, structures<double>());
}

TEST_CASE("SelfGuided BlockShuffle guide differs from the block-diagonal product without shuffles") {
  Rng rng(404);
  Owned f(SelfGuided(block_shuffle<double>(16, 16, 4)));
  initialize(f.map, rng);
  const auto& s = f.map.structured();
  // blockdiag(U) blockdiag(V): what a guide without the two shuffles would start from.
  const Matrix<double> unshuffled = to_matrix(EigenRowMajor<double>(
      as_eigen(s.template factor<1>().to_dense()) * as_eigen(s.template factor<3>().to_dense())));
  CHECK(bonsai::test::rel_error(as_eigen(f.map.guide().weight()), as_eigen(unshuffled)) > 1e-3);
}

TEST_CASE("SelfGuided gradients are the pure gradients scaled by 1 - a and a") {
  Rng rng(405);
  std::apply([&](const auto&... s) {
    ([&](const auto& structure) {
      using S = std::remove_cvref_t<decltype(structure)>;
      const double alpha = 0.3;
      Owned f(SelfGuided(structure, alpha));
      randomize(f.map, rng);
      const index_t tokens = 5, in = structure.in_features(), out = structure.out_features();
      const auto x = bonsai::test::random_matrix<double>(tokens, in, rng);
      const auto dy = bonsai::test::random_matrix<double>(tokens, out, rng);
      Vector<double> bias(out), db(out), db_s(out), db_w(out);
      fill_normal(bias.view(), rng);
      const epilogue::BiasGelu<double> epi{bias.view(), db.view()};

      Owned<SelfGuided<S>> g(f.map);
      Matrix<double> y(tokens, out), dx(tokens, in);
      Context<SelfGuided<S>> ctx;
      forward(f.map, x.view(), y.view(), ctx, epi);
      backward(f.map, ctx, dy.view(), dx.view(), g.map, epi);

      // The same d(acc) through S alone and through the guide alone.
      Matrix<double> pre(tokens, out);  // acc + b of the blend
      as_eigen(pre) = as_eigen(x) * as_eigen(f.map.to_dense()).transpose();
      as_eigen(pre).rowwise() += flat(bias).transpose();
      Matrix<double> dacc(tokens, out);
      for (index_t i = 0; i < tokens * out; ++i)
        dacc.data()[i] = dy.data()[i] * epilogue::gelu_grad(pre.data()[i]);
      Owned<S> gs(structure);
      Owned<Dense<double>> gw(Dense<double>(in, out));
      Matrix<double> ys(tokens, out), yw(tokens, out), dxs(tokens, in), dxw(tokens, in);
      Context<S> cs;
      Context<Dense<double>> cw;
      forward(f.map.structured(), x.view(), ys.view(), cs);
      backward(f.map.structured(), cs, dacc.view(), dxs.view(), gs.map);
      forward(f.map.guide(), x.view(), yw.view(), cw);
      backward(f.map.guide(), cw, dacc.view(), dxw.view(), gw.map);

      const index_t ns = structure.param_count();
      const auto grad = flat(g.storage);
      CHECK(bonsai::test::rel_error(grad.head(ns), (1 - alpha) * flat(gs.storage)) < 1e-12);
      CHECK(bonsai::test::rel_error(grad.tail(in * out), alpha * flat(gw.storage)) < 1e-12);
      CHECK(bonsai::test::rel_error(as_eigen(dx), (1 - alpha) * as_eigen(dxs) + alpha * as_eigen(dxw)) < 1e-12);
    }(s), ...);
  }, structures<double>());
}

TEST_CASE("SelfGuided at a = 1 leaves the structured gradients exactly zero") {
  Rng rng(406);
  std::apply([&](const auto&... s) {
    ([&](const auto& structure) {
      using S = std::remove_cvref_t<decltype(structure)>;
      Owned f(SelfGuided(structure, 1.0));
      randomize(f.map, rng);
      Owned<SelfGuided<S>> g(f.map);
      const auto x = bonsai::test::random_matrix<float>(4, structure.in_features(), rng);
      const auto dy = bonsai::test::random_matrix<float>(4, structure.out_features(), rng);
      Matrix<float> y(4, structure.out_features()), dx(4, structure.in_features());
      Context<SelfGuided<S>> ctx;
      forward(f.map, x.view(), y.view(), ctx);
      backward(f.map, ctx, dy.view(), dx.view(), g.map);
      const auto grad = flat(g.storage);
      CHECK(grad.head(structure.param_count()).cwiseAbs().maxCoeff() == 0.0f);
      CHECK(grad.tail(structure.in_features() * structure.out_features()).cwiseAbs().maxCoeff() > 0.0f);
    }(s), ...);
  }, structures<float>());
}

TEST_CASE("SelfGuided gradients match finite differences") {
  Rng rng(407);
  std::apply([&](const auto&... s) {
    ([&](const auto& structure) {
      for (double alpha : {0.0, 0.4, 1.0}) {
        CAPTURE(alpha);
        Owned f(SelfGuided(structure, alpha));
      randomize(f.map, rng);
        bonsai::test::check_gradients(f, 3, rng, bonsai::test::no_epilogue);
        bonsai::test::check_gradients(f, 3, rng, bonsai::test::bias_gelu_epilogue);
      }
    }(s), ...);
  }, std::tuple{LowRank<double>(6, 8, 2), block_dense<double>(6, 8, 4, 2), block_shuffle<double>(8, 6, 2)});
}

TEST_CASE("SelfGuided parameters, counts and a check on a") {
  const SelfGuided<LowRank<float>> f(LowRank<float>(8, 6, 2), 0.5);
  const auto p = f.parameters();
  REQUIRE(p.size() == 3);
  CHECK(p[0] == ParamInfo{"V", {2, 8}});
  CHECK(p[1] == ParamInfo{"U", {6, 2}});
  CHECK(p[2] == ParamInfo{"guide", {6, 8}});
  CHECK(f.param_count() == 2 * 14 + 48);
  CHECK(f.flops(10) == 2 * 10 * 28 + 2 * 10 * 48);
  SelfGuided<LowRank<float>> g = f;
  g.set_alpha(0.0);
  CHECK(g.flops(10) == 2 * 10 * 28);
  g.set_alpha(1.0);
  CHECK(g.flops(10) == 2 * 10 * 48);
  CHECK(::test::error_of([&] { g.set_alpha(1.5); }).find("alpha = 1.5 is outside [0, 1]") !=
        std::string::npos);
}
