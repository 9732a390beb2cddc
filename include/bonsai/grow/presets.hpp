// bonsai/grow/presets.hpp — the published growth methods as GrowthPlans. Each is a choice of
// width maps, a depth map and symmetry-breaking options:
//   net2net      Net2WiderNet (random copy maps, equal split) + Net2DeeperNet (zero-output blocks)
//   stackbert    StackBERT / Gstack: layer l of the grown stack copies layer l mod L
//   interpolate  each layer repeated in place (layer i at 2i, 2i + 1 when doubling)
//   mslt         StackBERT's map, then only the new top layers train for a stage
//   fpi          bert2BERT's function-preserving initialisation (Net2Net maps, stacked depth)
//   aki          bert2BERT's advanced knowledge initialisation (new units from layer l + 1)
//   lemon        LEMON: tiled maps with avg (LayerNorm) or zero (RMSNorm) residual fill, sqrt(s)
//                norm gains, eps * s, noisy split, identity layers (zero_out or cancel)
//   msg          MSG: fresh units appended and new layers stacked on top, all masked; the
//                trainer ramps the masks from 0 to 1 (nn/growth_mask.hpp)
//   ligo         the function-preserving plan a LiGO operator starts from (grow/ligo.hpp):
//                residual units copied equally often (d_model by a whole multiple), heads and
//                FFN units by random copies, new layers with zero output (Net2DeeperNet)
//   mango        the function-preserving plan a Mango operator starts from (grow/mango.hpp):
//                residual units, heads and every d_model-unit FFN block copied k times, new
//                layers with zero output
#pragma once

#include <algorithm>

#include <string>
#include <string_view>
#include <utility>

#include "plan.hpp"

namespace bonsai {

/// The width/depth presets below (ligo and mango: the plans their learned operators start
/// from), and upcycle: dense FFNs into Mixture-of-Experts layers (grow/upcycle.hpp), which
/// plan_growth (train/growth.hpp) plans from UpcycleOptions.
enum class GrowthMethod {
  net2net, stackbert, interpolate, mslt, fpi, aki, lemon, msg, ligo, mango, upcycle
};

inline const char* to_string(GrowthMethod m) {
  switch (m) {
    case GrowthMethod::net2net: return "net2net";
    case GrowthMethod::stackbert: return "stackbert";
    case GrowthMethod::interpolate: return "interpolate";
    case GrowthMethod::mslt: return "mslt";
    case GrowthMethod::fpi: return "fpi";
    case GrowthMethod::aki: return "aki";
    case GrowthMethod::lemon: return "lemon";
    case GrowthMethod::msg: return "msg";
    case GrowthMethod::ligo: return "ligo";
    case GrowthMethod::mango: return "mango";
    case GrowthMethod::upcycle: return "upcycle";
  }
  return "?";
}

inline GrowthMethod parse_growth_method(std::string_view s) {
  return detail::parse_kind(s, "growth method",
                            {GrowthMethod::net2net, GrowthMethod::stackbert, GrowthMethod::interpolate,
                             GrowthMethod::mslt, GrowthMethod::fpi, GrowthMethod::aki,
                             GrowthMethod::lemon, GrowthMethod::msg, GrowthMethod::ligo,
                             GrowthMethod::mango, GrowthMethod::upcycle});
}

/// The size a model grows to; 0 keeps a dimension. n_head counts query heads; head_dim is
/// kept, so n_head / n_kv_head stays the same.
struct GrowthTarget {
  index_t d_model = 0, n_head = 0, ffn_dim = 0, n_layer = 0, rank = 0;
};

/// A growth method's preset options: LEMON breaks symmetry with a noisy split (std 0.02 by
/// default, as its random-projection init) and new identity layers by cancellation.
struct PresetOptions {
  std::uint64_t seed = 1;
  double split_noise = -1;  // < 0: the method's default (LEMON 0.02, the others 0)
  double fill_std = 0.02;
  LayerInit new_layers = LayerInit::cancel;  // LEMON: cancel or zero_out (Net2Net: zero_out)
};

namespace detail {

struct ResolvedTarget {
  index_t d, groups, f, l, r;
};

inline ResolvedTarget resolve(const GptConfig& c, const GrowthTarget& t) {
  const index_t d = t.d_model ? t.d_model : c.d_model;
  const index_t group = c.n_head / c.kv_heads();
  const index_t h = t.n_head ? t.n_head : c.n_head;
  BONSAI_CHECK(h % group == 0, "grow: ", h, " heads cannot keep ", group,
               " query heads per key/value head (n_head / n_kv_head of the source)");
  const index_t f = t.ffn_dim ? t.ffn_dim : (c.ffn_dim ? c.ffn_dim : 4 * d);
  const index_t l = t.n_layer ? t.n_layer : c.n_layer;
  const index_t r = t.rank ? t.rank : c.rank;
  BONSAI_CHECK(std::max({d, h, f, l, r}) <= GptConfig::max_extent, "grow: a target of d_model ",
               d, ", n_head ", h, ", ffn ", f, ", n_layer ", l, ", rank ", r, " exceeds the limit of ",
               GptConfig::max_extent, " on any extent");
  BONSAI_CHECK(d >= c.d_model && h >= c.n_head && f >= c.ffn_width() && l >= c.n_layer &&
                   r >= c.rank,
               "grow: a target smaller than the source (d_model ", c.d_model, " -> ", d,
               ", n_head ", c.n_head, " -> ", h, ", ffn ", c.ffn_width(), " -> ", f,
               ", n_layer ", c.n_layer, " -> ", l, ", rank ", c.rank, " -> ", r,
               "): growth never shrinks a model");
  BONSAI_CHECK(t.rank == 0 || c.ffn == FfnKind::lowrank || c.ffn == FfnKind::blockdense ||
                   t.rank == c.rank,
               "grow: only LowRank and BlockDense FFNs grow in rank (the model's FFN is ",
               to_string(c.ffn), ")");
  return {d, h / group, f, l, r};
}

/// New rank units are fresh (their readers start at 0), appended per block for BlockDense.
inline WidthMap rank_map(const GptConfig& c, index_t r) {
  if (c.rank == 0) return {};
  return WidthMap::appended(c.rank, r, Fill::fresh, c.ffn == FfnKind::blockdense ? c.blocks : 1);
}

}  // namespace detail

/// The plan Mango starts from for `from` grown to d_model (a whole multiple k of from.d_model)
/// with `depth`: residual units and heads copied circularly k times, every D-unit block of the
/// FFN likewise (WidthMap::tiled(F, k F, copy, F / D)), no split noise. With DepthMap::stack it
/// is StackBERT with a layer-shared Net2Net width map; with DepthMap::insert_identity(..,
/// LayerInit::zero_out) Net2Net's wider and deeper nets, which keep the function.
inline GrowthPlan make_mango_plan(const GptConfig& from, index_t d_model, DepthMap depth) {
  const index_t d = from.d_model, f = from.ffn_width();
  BONSAI_CHECK(d_model >= d && d_model % d == 0, "Mango: d_model ", d, " -> ", d_model,
               " is not a whole multiple (the residual stream is copied k times)");
  BONSAI_CHECK(f % d == 0, "Mango: the FFN width ", f, " is not a multiple of d_model = ", d,
               " (the FFN matrices are cut into d_model x d_model blocks)");
  const index_t k = d_model / d;
  return make_growth_plan(from, WidthMap::tiled(d, d_model, Fill::copy),
                          WidthMap::tiled(from.kv_heads(), k * from.kv_heads(), Fill::copy),
                          WidthMap::tiled(f, k * f, Fill::copy, f / d), std::move(depth),
                          GrowthOptions{.split_noise = 0.0, .fill_std = 0.0});
}

/// The plan of `method` from model `from` to `target`.
inline GrowthPlan make_preset(GrowthMethod method, const GptConfig& from, const GrowthTarget& target,
                              const PresetOptions& o = {}) {
  BONSAI_CHECK(method != GrowthMethod::upcycle, "grow: upcycle keeps the widths and depth; "
               "plan it with upcycle_plan(from, UpcycleOptions)");
  BONSAI_CHECK(from.moe_experts == 0, "grow: ", to_string(method), " cannot grow a model with ",
               "Mixture-of-Experts layers (", from.moe_experts, " experts); upcycle last");
  const detail::ResolvedTarget t = detail::resolve(from, target);
  // Block-diagonal FFNs keep every copy in its block (BlockShuffle: its contiguous input and
  // interleaved output blocks both).
  const bool shuffle = from.ffn == FfnKind::blockshuffle;
  const index_t blocks = from.ffn == FfnKind::blockdense || shuffle ? from.blocks : 1;
  const index_t stride = shuffle ? blocks : 1;
  // A dense layer 0 in a structured model only ever copies itself.
  const index_t first = from.structured_ffn(0) != from.structured_ffn(from.n_layer - 1) ? 1 : 0;
  GrowthOptions opt;
  opt.seed = o.seed;
  opt.fill_std = o.fill_std;
  opt.split_noise = o.split_noise < 0 ? 0.0 : o.split_noise;
  Rng rng(o.seed);
  auto random_maps = [&](GrowthOptions g, DepthMap depth) {
    WidthMap res = WidthMap::random(from.d_model, t.d, rng, blocks, stride);
    WidthMap heads = WidthMap::random(from.kv_heads(), t.groups, rng);
    WidthMap ffn = WidthMap::random(from.ffn_width(), t.f, rng, blocks, stride);
    return make_growth_plan(from, std::move(res), std::move(heads), std::move(ffn), std::move(depth),
                            g, detail::rank_map(from, t.r));
  };
  auto width_only = [&](const char* name) {
    BONSAI_CHECK(t.d == from.d_model && t.groups == from.kv_heads() && t.f == from.ffn_width() &&
                     t.r == from.rank,
                 "grow: ", name, " grows depth only; grow the width with another method first");
  };
  switch (method) {
    case GrowthMethod::net2net:
      return random_maps(opt, DepthMap::insert_identity(from.n_layer, t.l, LayerInit::zero_out, first));
    case GrowthMethod::fpi:
      return random_maps(opt, DepthMap::stack(from.n_layer, t.l, first));
    case GrowthMethod::aki:
      opt.aki = true;
      return random_maps(opt, DepthMap::stack(from.n_layer, t.l, first));
    case GrowthMethod::stackbert:
    case GrowthMethod::interpolate:
    case GrowthMethod::mslt: {
      width_only(to_string(method));
      DepthMap depth = method == GrowthMethod::interpolate ? DepthMap::interpolate(from.n_layer, t.l)
                                                           : DepthMap::stack(from.n_layer, t.l, first);
      GrowthPlan p = make_growth_plan(from, WidthMap::identity(from.d_model),
                                      WidthMap::identity(from.kv_heads()),
                                      WidthMap::identity(from.ffn_width()), std::move(depth), opt,
                                      detail::rank_map(from, t.r));
      if (method == GrowthMethod::mslt) p.frozen_layers = from.n_layer;
      return p;
    }
    case GrowthMethod::lemon: {
      opt.split_noise = o.split_noise < 0 ? 0.02 : o.split_noise;
      const Fill fill = from.norm == NormKind::layernorm ? Fill::avg : Fill::zero;
      return make_growth_plan(from, WidthMap::tiled(from.d_model, t.d, fill, blocks),
                              WidthMap::tiled(from.kv_heads(), t.groups, Fill::copy),
                              WidthMap::tiled(from.ffn_width(), t.f, Fill::copy, blocks),
                              DepthMap::insert_identity(from.n_layer, t.l, o.new_layers, first), opt,
                              detail::rank_map(from, t.r));
    }
    case GrowthMethod::ligo: {
      BONSAI_CHECK(t.d % from.d_model == 0, "grow: LiGO copies every residual unit equally often, "
                   "so d_model ", from.d_model, " -> ", t.d, " must grow by a whole multiple");
      return make_growth_plan(from, WidthMap::tiled(from.d_model, t.d, Fill::copy),
                              WidthMap::random(from.kv_heads(), t.groups, rng),
                              WidthMap::random(from.ffn_width(), t.f, rng),
                              DepthMap::insert_identity(from.n_layer, t.l, LayerInit::zero_out),
                              GrowthOptions{.split_noise = 0.0, .fill_std = 0.0});
    }
    case GrowthMethod::mango: {
      const index_t k = t.d / from.d_model;
      BONSAI_CHECK(t.d % from.d_model == 0 && t.groups == k * from.kv_heads() &&
                       t.f == k * from.ffn_width(),
                   "grow: Mango copies the residual stream, the heads and the FFN k times "
                   "together, so d_model ", from.d_model, " -> ", t.d, ", key/value heads ",
                   from.kv_heads(), " -> ", t.groups, " and FFN ", from.ffn_width(), " -> ", t.f,
                   " must all grow by one whole factor");
      return make_mango_plan(from, t.d,
                             DepthMap::insert_identity(from.n_layer, t.l, LayerInit::zero_out));
    }
    case GrowthMethod::msg:
      opt.masked = true;
      return make_growth_plan(from, WidthMap::appended(from.d_model, t.d, Fill::fresh, blocks),
                              WidthMap::appended(from.kv_heads(), t.groups, Fill::fresh),
                              WidthMap::appended(from.ffn_width(), t.f, Fill::fresh, blocks),
                              DepthMap::stack(from.n_layer, t.l, first), opt,
                              detail::rank_map(from, t.r));
    case GrowthMethod::upcycle:
      break;  // not a width/depth plan: grow/upcycle.hpp turns FFNs into experts
  }
  detail::fail("grow: ", to_string(method), " has no width/depth preset");
}

}  // namespace bonsai
