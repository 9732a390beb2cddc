// bonsai/grow/plan.hpp — GrowthPlan: one growth event of a GPT model, (D, H, F, R, L) ->
// (D', H', F', R', L'), as a WidthMap per activation space (residual stream, key/value head
// groups, FFN units, low rank), a DepthMap over layers and the symmetry-breaking options. The
// grown config follows from the maps: head_dim is kept, the norms' epsilon becomes s eps with
// s = k D / D' when every residual unit is copied k times (LEMON), so that
// LN(P h) = [LN(h) copied; 0] exactly. grow/apply.hpp turns a plan and a source arena into the
// grown arena.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "../nn/config.hpp"
#include "../nn/growth_mask.hpp"
#include "depth_map.hpp"
#include "upcycle_options.hpp"
#include "width_map.hpp"

namespace bonsai {

/// How the free parts of a grown model are drawn.
struct GrowthOptions {
  /// Std of the noise added to split input weights, centred over each group of copies so the
  /// copies' weights still sum to the source weight (LEMON's non-uniform split); 0 gives
  /// Net2Net's equal split, under which copies stay identical while training.
  double split_noise = 0.0;
  /// Std of the weights that the function does not see: inputs from zero-filled units, new
  /// producers of fresh units, cancelling fan-outs (0 makes them 0).
  double fill_std = 0.02;
  /// bert2BERT's AKI: copied (non-original) heads and FFN units of layer l take their
  /// parameters from layer l + 1 (the top layer from itself). Not function-preserving.
  bool aki = false;
  /// MSG: new units are appended fresh (random on both sides) and new layers are copies; the
  /// function is kept by masks (GrowthPlan::mask(), nn/growth_mask.hpp) that the trainer ramps
  /// from 0 to 1, not by the weights.
  bool masked = false;
  std::uint64_t seed = 1;
};

struct GrowthPlan {
  GptConfig from, to;
  WidthMap residual;  // d_model units
  WidthMap heads;     // key/value head groups (n_kv_head units of n_head / n_kv_head heads)
  WidthMap ffn;       // FFN hidden units
  WidthMap rank;      // LowRank and BlockDense rank (empty for other structures)
  WidthMap inner;     // BlockShuffle's inner width min(D, F): fresh units appended per block
  DepthMap depth;
  GrowthOptions options;
  /// Sparse upcycling (grow/upcycle.hpp): widths and depth stay, every options.every-th FFN
  /// becomes a Mixture-of-Experts layer; the width and depth maps are then empty.
  std::optional<UpcycleOptions> upcycle;
  /// MSLT: how many bottom layers (with the embeddings) stay frozen after this growth, until
  /// the trainer's stage ends (0: all layers train).
  index_t frozen_layers = 0;

  /// The norms' epsilon factor s = k D / D' when every residual unit is copied k times, else 1
  /// (and 1 under MSG's masks, whose norm statistics skip the new units).
  double norm_scale() const {
    if (options.masked || !residual.uniform()) return 1.0;
    return double(residual.count(0)) * double(residual.from()) / double(residual.to());
  }

  /// Whether the grown model computes exactly the source model's function (up to rounding): a
  /// residual map with equal copy counts whose fill matches the norm (avg for LayerNorm, zero
  /// for RMSNorm), identity-only new layers and no AKI; or MSG's masks at 0.
  bool function_preserving() const {
    if (upcycle) return upcycle->function_preserving(from.act);
    if (options.masked) return true;
    const Fill bad = from.norm == NormKind::layernorm ? Fill::zero : Fill::avg;
    return residual.uniform() && !residual.has(bad) && depth.function_preserving() &&
           !options.aki;
  }

  /// MSG's masks of the grown model at value 0 (nothing masked without options.masked): the
  /// residual units, key/value head groups and FFN units that are not originals, and the new
  /// layers.
  GrowthMask mask() const {
    GrowthMask out;
    if (!options.masked) return out;
    auto fresh = [](const WidthMap& m) {
      std::vector<bool> v(std::size_t(m.to()));
      for (index_t j = 0; j < m.to(); ++j) v[std::size_t(j)] = !m.original(j);
      return GrowthMask::any(v) ? v : std::vector<bool>{};
    };
    out.residual = fresh(residual);
    out.heads = fresh(heads);
    out.ffn = fresh(ffn);
    for (index_t l = 0; l < depth.to(); ++l) out.layers.push_back(depth.is_new(l));
    if (!GrowthMask::any(out.layers)) out.layers.clear();
    return out;
  }
};

/// The plan of an upcycling of `from` with `o` (no width or depth change).
inline GrowthPlan upcycle_plan(const GptConfig& from, const UpcycleOptions& o) {
  GrowthPlan p;
  p.from = from;
  p.to = upcycled_config(from, o);
  p.upcycle = o;
  return p;
}

namespace detail {

/// How a space's units sit in the B blocks of a block-diagonal factor: contiguous (block b
/// holds units [b n, (b + 1) n) of n = units / B) or interleaved (block b holds units b, b + B,
/// b + 2B, ...: a BlockShuffle's outputs, and the inputs of its second factor).
enum class BlockLayout : std::uint8_t { contiguous, interleaved };

/// Block of `unit` in a space of `units` in `blocks` blocks, and its position in the block.
inline std::pair<index_t, index_t> block_of(BlockLayout layout, index_t unit, index_t units,
                                            index_t blocks) {
  if (layout == BlockLayout::contiguous) return {unit / (units / blocks), unit % (units / blocks)};
  return {unit % blocks, unit / blocks};
}
/// The unit at position `local` of block `block`.
inline index_t unit_of(BlockLayout layout, index_t block, index_t local, index_t units,
                       index_t blocks) {
  return layout == BlockLayout::contiguous ? block * (units / blocks) + local
                                           : local * blocks + block;
}

/// Every copy of `m` stays in its source unit's block under `layout`.
inline void check_structured_map(const char* what, const WidthMap& m, index_t blocks,
                                 BlockLayout layout = BlockLayout::contiguous) {
  BONSAI_CHECK(m.from() % blocks == 0 && m.to() % blocks == 0, "grow: the ", what, " map ",
               m.from(), " -> ", m.to(), " cannot be cut into ", blocks,
               " blocks of the block-diagonal FFN");
  const bool contiguous = layout == BlockLayout::contiguous;
  for (index_t j = 0; j < m.to(); ++j) {
    if (m.source(j) < 0) continue;
    const index_t from_block = block_of(layout, m.source(j), m.from(), blocks).first;
    const index_t to_block = block_of(layout, j, m.to(), blocks).first;
    BONSAI_CHECK(from_block == to_block, "grow: the ", what, " map sends unit ", m.source(j),
                 " (block ", from_block, ") to unit ", j, " (block ", to_block, ") of the ",
                 contiguous ? "" : "interleaved ", blocks, " blocks; ",
                 contiguous ? "block-diagonal FFNs need block-aligned maps (WidthMap::tiled, "
                              "::appended or ::random with blocks = "
                            : "BlockShuffle FFNs need maps aligned with both their contiguous and "
                              "interleaved blocks (WidthMap::tiled, ::appended or ::random with "
                              "blocks = stride = ",
                 blocks, contiguous ? ")" : ", and units per block a multiple of the blocks)");
  }
}

}  // namespace detail

/// A plan from `from` with the given maps; derives the grown config and rejects, with a
/// sentence, every combination that cannot be built.
inline GrowthPlan make_growth_plan(const GptConfig& from, WidthMap residual, WidthMap heads,
                                   WidthMap ffn, DepthMap depth, GrowthOptions options = {},
                                   WidthMap rank = {}) {
  from.validate();
  GrowthPlan p;
  p.from = from;
  if (rank.from() == 0 && from.rank > 0) rank = WidthMap::identity(from.rank);
  BONSAI_CHECK(residual.from() == from.d_model, "grow: the residual map starts at ",
               residual.from(), " units but the model has d_model = ", from.d_model);
  BONSAI_CHECK(heads.from() == from.kv_heads(), "grow: the head map starts at ", heads.from(),
               " key/value head groups but the model has ", from.kv_heads());
  BONSAI_CHECK(ffn.from() == from.ffn_width(), "grow: the FFN map starts at ", ffn.from(),
               " units but the model's FFN has ", from.ffn_width());
  BONSAI_CHECK(depth.from() == from.n_layer, "grow: the depth map starts at ", depth.from(),
               " layers but the model has ", from.n_layer);
  BONSAI_CHECK(options.masked || !residual.has(Fill::fresh),
               "grow: the residual stream cannot hold fresh units (every norm reads them); fill "
               "with avg (LayerNorm) or zero (RMSNorm), or mask them (MSG)");
  if (options.masked) {
    auto appended = [](const WidthMap& m, const char* what) {
      for (index_t j = 0; j < m.to(); ++j)
        BONSAI_CHECK(m.original(j) || m.fill(j) == Fill::fresh, "grow: MSG's masks need the ",
                     what, " map to keep its units and add fresh ones (WidthMap::appended), but "
                     "unit ", j, " is ", to_string(m.fill(j)),
                     m.fill(j) == Fill::copy ? " of unit " + std::to_string(m.source(j)) : "");
    };
    appended(residual, "residual");
    appended(heads, "head");
    appended(ffn, "FFN");
    for (index_t l = 0; l < depth.to(); ++l)
      BONSAI_CHECK(depth[l].init == LayerInit::copy, "grow: MSG's new layers are masked copies, "
                   "but layer ", l, " is ", to_string(depth[l].init));
  }
  BONSAI_CHECK(!heads.has(Fill::avg) && !ffn.has(Fill::avg) && !rank.has(Fill::avg),
               "grow: avg fill is for the residual stream only (it does not pass attention or "
               "the FFN's nonlinearity)");
  BONSAI_CHECK(rank.from() == 0 || rank.from() == from.rank, "grow: the rank map starts at ",
               rank.from(), " but the model's rank is ", from.rank);

  GptConfig to = from;
  to.d_model = residual.to();
  const index_t group = from.n_head / from.kv_heads();
  to.n_kv_head = from.n_kv_head ? heads.to() : 0;
  to.n_head = heads.to() * group;
  const index_t width = to.n_head * from.head_dim();  // head_dim is kept: A' = H' hd
  to.attn_dim = width == to.d_model ? 0 : width;
  to.ffn_dim = ffn.to() == 4 * to.d_model ? 0 : ffn.to();
  to.n_layer = depth.to();
  if (from.rank > 0) to.rank = rank.to();
  p.residual = std::move(residual);
  p.heads = std::move(heads);
  p.ffn = std::move(ffn);
  p.rank = std::move(rank);
  p.depth = std::move(depth);
  p.options = options;
  to.norm_eps = from.norm_eps * p.norm_scale();
  to.validate();
  BONSAI_CHECK(to.head_dim() == from.head_dim(), "grow: head_dim must stay ", from.head_dim(),
               " (grow the number of heads instead)");
  p.to = to;

  // Structured FFNs: layer kinds must match, and the structure must be able to hold the maps.
  for (index_t l = 0; l < to.n_layer; ++l) {
    const index_t s = p.depth[l].src;
    BONSAI_CHECK(to.structured_ffn(l) == from.structured_ffn(s), "grow: layer ", l, " (",
                 to.structured_ffn(l) ? "structured" : "dense", " FFN) cannot come from layer ",
                 s, " (", from.structured_ffn(s) ? "structured" : "dense",
                 " FFN, dense_first_ffn keeps layer 0 dense)");
  }
  if (from.ffn == FfnKind::blockdense) {
    detail::check_structured_map("residual", p.residual, from.blocks);
    detail::check_structured_map("FFN", p.ffn, from.blocks);
    detail::check_structured_map("rank", p.rank, from.blocks);
  }
  if (from.ffn == FfnKind::blockshuffle) {
    // in -> min(in, out) -> out: inputs in contiguous blocks, outputs interleaved, so the
    // residual and FFN maps must keep every unit in its block under both layouts. New inner
    // units are fresh rows of the first factor that the second reads with 0.
    using detail::BlockLayout;
    const index_t nb = from.blocks;
    for (const auto& [what, m] :
         {std::pair<const char*, const WidthMap*>{"residual", &p.residual}, {"FFN", &p.ffn}}) {
      detail::check_structured_map(what, *m, nb, BlockLayout::contiguous);
      detail::check_structured_map(what, *m, nb, BlockLayout::interleaved);
    }
    BONSAI_CHECK(
        !p.residual.has(Fill::avg),
        "grow: a BlockShuffle FFN cannot write the residual "
        "stream's avg-filled units (each output reads one block); grow a LayerNorm model's "
        "d_model by a whole multiple, or use RMSNorm (zero fill)");
    p.inner = WidthMap::appended(std::min(from.d_model, from.ffn_width()),
                                 std::min(to.d_model, to.ffn_width()), Fill::fresh, nb);
    detail::check_structured_map("inner", p.inner, nb, BlockLayout::interleaved);
  }
  BONSAI_CHECK(from.ffn == FfnKind::lowrank || from.ffn == FfnKind::blockdense ||
                   p.rank.from() == 0 || p.rank.is_identity(),
               "grow: only LowRank and BlockDense FFNs grow in rank");
  for (index_t j = 0; j < p.rank.to(); ++j)
    BONSAI_CHECK(p.rank.original(j) || p.rank.fill(j) != Fill::copy,
                 "grow: rank grows by adding fresh or zero units (WidthMap::appended), not copies");
  return p;
}

}  // namespace bonsai
