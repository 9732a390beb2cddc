// bonsai/grow/upcycle.hpp — sparse upcycling: a trained FFN y = down(act(up(x))) becomes a
// Mixture-of-Experts layer (nn/moe.hpp) of E experts, each a copy of it or, fine-grained, a
// shard of it. With granularity G the F hidden units are cut into G contiguous shards of F / G;
// expert e = r G + s is shard s of copy r (E / G copies), so the G experts of one copy are
// neighbours. The router Wr (E, d) starts random (rows N(0, std^2), shared by the G experts of a
// copy under virtual groups) or zero. The layer equals the FFN when every token's k choices are
// whole copies and their weights make one copy count once:
//   y = sum_{e in S} w_e (c down_s(act(up_s(x))) + c_b b_down),
// exact when S holds k / G whole copies and sum_S w_e c down_s(...) = down(act(up(x))):
//   topk_softmax: w_e = 1 / k on the chosen (equal logits within a copy), so c = G, c_b = 1;
//   softmax_topk: with a zero router w_e = p_e = 1 / E, so c = E G / k, c_b = E / k
//   (Switch/GShard; a random router is not exact).
// The factor c goes on the down map (exact for any activation) or, split, sqrt(c) on up (with
// its bias) and sqrt(c) on down: exact for SwiGLU, whose up branch is linear, not for GELU.
// Every structured map is linear in each of its parameter tensors (a product of factors), so a
// map is scaled by scaling its first tensor. Shards of a structured map are its restriction to
// the shard's units (sparse/restrict.hpp: Dense and LowRank); block-diagonal maps shard only
// with G = 1. A whole Gpt upcycles every `every`-th layer (layers every - 1, 2 every - 1, ...,
// as the recipe upcycles every other layer) and keeps everything else. (Komatsuzaki et al.,
// ICLR 2023; fine-grained: the virtual-group router of Megatron-LM's upcycling.)
#pragma once

#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../nn/arena.hpp"
#include "../nn/gpt.hpp"
#include "../nn/mlp.hpp"
#include "../nn/moe.hpp"
#include "../sparse/restrict.hpp"
#include "upcycle_options.hpp"

namespace bonsai {

namespace detail {

/// The hidden units of shard s of G, in order.
inline std::vector<index_t> shard_units(index_t hidden, index_t granularity, index_t s) {
  std::vector<index_t> units(static_cast<std::size_t>(hidden / granularity));
  std::iota(units.begin(), units.end(), s * (hidden / granularity));
  return units;
}

/// The parameters of `map` stored in `arena` under `prefix` (consecutive, first to last).
template <class M, class T>
const T* map_params(const M& map, const ParamArena<T>& arena, const std::string& prefix) {
  return arena.values() + arena.slot(prefix + map.parameters().front().name).offset;
}
template <class M, class T>
T* map_params(const M& map, ParamArena<T>& arena, const std::string& prefix) {
  return arena.values() + arena.slot(prefix + map.parameters().front().name).offset;
}

/// Writes `full`'s parameters (laid out as `map`) restricted to `units` of `side` into `out`
/// (laid out as the restriction), or copies them whole when the shard is everything.
template <class M, class T>
void shard_params(const M& map, Side side, const std::vector<index_t>& units, index_t all,
                  const T* full, T* out) {
  if (index_t(units.size()) == all) {
    std::copy_n(full, map.param_count(), out);
    return;
  }
  if constexpr (restrictable_v<M>) {
    gather_params(map, side, units, full, out);
  } else {
    detail::fail("upcycle: a block-diagonal FFN cannot be cut into shards; use granularity 1");
  }
}

/// Multiplies the map's output by c: its first parameter tensor times c.
template <class M, class T>
void scale_map(const M& map, T* params, double c) {
  const index_t n = map.parameters().front().size();
  for (index_t i = 0; i < n; ++i) params[i] = T(double(params[i]) * c);
}

template <class T>
void scale_values(ParamArena<T>& arena, const std::string& name, double c) {
  auto v = arena.value(name);
  for (index_t i = 0; i < v.size(); ++i) v.data()[i] = T(double(v.data()[i]) * c);
}

}  // namespace detail

/// The MoE layer an FFN upcycles into: E experts of F / G hidden units, k chosen per token.
template <class Up, class Down>
Moe<Up, Down> upcycled(const Mlp<Up, Down>& ffn, const UpcycleOptions& o) {
  o.check(ffn.hidden());
  const index_t units = ffn.hidden() / o.granularity;
  if (o.granularity == 1) return Moe<Up, Down>(ffn.up_map(), ffn.down_map(), ffn.act(), o.experts,
                                               o.top_k, o.gating);
  if constexpr (restrictable_v<Up> && restrictable_v<Down>) {
    return Moe<Up, Down>(restricted(ffn.up_map(), Side::outputs, units),
                         restricted(ffn.down_map(), Side::inputs, units), ffn.act(), o.experts,
                         o.top_k, o.gating);
  } else {
    detail::fail("upcycle: a block-diagonal FFN cannot be cut into shards; use granularity 1");
  }
}

/// Writes the upcycled layer's parameters: `moe` (built by upcycled(ffn, o)) under `to_prefix`
/// in `to` from the FFN under `from_prefix` in `from`. Expert r G + s is shard s of the FFN
/// (copy r), scaled as the options say; the router is drawn from Rng(o.seed) or zeroed.
template <class Up, class Down, class T>
void upcycle(const Mlp<Up, Down>& ffn, const ParamArena<T>& from, const std::string& from_prefix,
             const Moe<Up, Down>& moe, ParamArena<T>& to, const std::string& to_prefix,
             const UpcycleOptions& o) {
  o.check(ffn.hidden());
  const index_t G = o.granularity, F = ffn.hidden(), E = o.experts;
  BONSAI_CHECK(moe.experts() == E && moe.top_k() == o.top_k && moe.gating() == o.gating &&
                   moe.hidden() * G == F && moe.width() == ffn.width() && moe.act() == ffn.act(),
               "upcycle: the MoE layer (", moe.experts(), " experts of ", moe.hidden(),
               " units, top ", moe.top_k(), ", ", to_string(moe.gating()),
               ") is not the one upcycled() builds from an FFN of ", F, " units with ", E,
               " experts, granularity ", G, ", top ", o.top_k, ", ", to_string(o.gating));
  const bool gated = ffn.act() == ActKind::swiglu;
  const double c = o.scale == UpcycleScale::none ? 1.0 : o.down_factor();
  const double cb = o.scale == UpcycleScale::none ? 1.0 : o.bias_factor();
  const double c_up = o.scale == UpcycleScale::split ? std::sqrt(c) : 1.0;
  const double c_down = o.scale == UpcycleScale::split ? std::sqrt(c) : c;

  for (index_t s = 0; s < G; ++s) {
    const std::vector<index_t> units = detail::shard_units(F, G, s);
    for (index_t r = 0; r < E / G; ++r) {
      const index_t e = r * G + s;
      const auto& expert = moe.expert(e);
      const std::string src = from_prefix, dst = to_prefix + "experts." + std::to_string(e) + ".";
      auto copy_part = [&](const char* part, const auto& full_map, const auto& shard_map, Side side) {
        detail::shard_params(full_map, side, units, F,
                             detail::map_params(full_map, from, src + part),
                             detail::map_params(shard_map, to, dst + part));
      };
      auto copy_bias = [&](const std::string& name) {
        const T* b = from.values() + from.slot(src + name).offset;
        auto out = to.value(dst + name);
        for (index_t i = 0; i < out.size(); ++i) out.data()[i] = b[units[std::size_t(i)]];
      };
      copy_part("up.", ffn.up_map(), expert.up_map(), Side::outputs);
      copy_bias("up.bias");
      if (gated) {
        copy_part("gate.", ffn.up_map(), expert.up_map(), Side::outputs);
        copy_bias("gate.bias");
      }
      copy_part("down.", ffn.down_map(), expert.down_map(), Side::inputs);
      const auto db = from.slot(src + "down.bias");
      std::copy_n(from.values() + db.offset, db.size(), to.value(dst + "down.bias").data());

      if (c_up != 1.0) {
        detail::scale_map(expert.up_map(), detail::map_params(expert.up_map(), to, dst + "up."),
                          c_up);
        detail::scale_values(to, dst + "up.bias", c_up);
      }
      if (c_down != 1.0)
        detail::scale_map(expert.down_map(),
                          detail::map_params(expert.down_map(), to, dst + "down."), c_down);
      if (cb != 1.0) detail::scale_values(to, dst + "down.bias", cb);
    }
  }

  // Router (E, d): random rows, one per expert or one per copy; or zero.
  auto router = to.value(to_prefix + "router.weight");
  const index_t d = ffn.width();
  T* wr = router.data();
  if (o.router == RouterInit::zero) {
    std::fill_n(wr, E * d, T(0));
    return;
  }
  Rng rng(o.seed);
  const bool shared = G > 1 && o.virtual_groups;
  for (index_t e = 0; e < E; ++e) {
    if (shared && e % G != 0) {
      std::copy_n(wr + (e - e % G) * d, d, wr + e * d);
      continue;
    }
    for (index_t i = 0; i < d; ++i) wr[e * d + i] = T(o.router_std * rng.normal());
  }
}

namespace detail {

template <class Block, class T>
void upcycle_block(const Block& dense, const ParamArena<T>& from, const Block& moe,
                   ParamArena<T>& to, index_t layer, UpcycleOptions o) {
  o.seed += std::uint64_t(layer);  // every layer draws its own router
  const std::string prefix = layer_param_name(layer, "");
  upcycle(dense.mlp(), from, prefix + "mlp.", *moe.moe(), to, prefix + "moe.", o);
}

}  // namespace detail

/// Writes `moe`'s parameters (a Gpt of upcycled_config(dense.config(), o)) from `dense`:
/// every parameter the two share is copied, and each MoE layer's experts and router are
/// upcycled from the dense layer's FFN (the router seeded with o.seed + layer).
template <class Up, class Down>
void upcycle(const Gpt<Up, Down>& dense, Gpt<Up, Down>& moe, const UpcycleOptions& o) {
  const GptConfig want = upcycled_config(dense.config(), o), &got = moe.config();
  BONSAI_CHECK(got.moe_experts == want.moe_experts && got.moe_top_k == want.moe_top_k &&
                   got.moe_every == want.moe_every && got.moe_hidden() == want.moe_hidden() &&
                   got.moe_gating == want.moe_gating && got.n_layer == want.n_layer &&
                   got.d_model == want.d_model,
               "upcycle: the target model (", got.moe_experts, " experts of ", got.moe_hidden(),
               " units every ", got.moe_every, " layers) is not the upcycled config (",
               want.moe_experts, " experts of ", want.moe_hidden(), " units every ",
               want.moe_every, " layers)");
  using T = typename Gpt<Up, Down>::T;
  const ParamArena<T>& from = dense.arena();
  ParamArena<T>& to = moe.arena();
  for (const std::string& name : copy_by_name(from, from.values(), to, to.values())) {
    const auto layer = split_layer_param_name(name);
    BONSAI_CHECK(layer && want.moe_layer(layer->layer) && layer->rest.starts_with("moe."),
                 "upcycle: the dense model has no parameter '", name, "'");
  }
  index_t l = 0;
  if (dense.first_block()) {
    if (want.moe_layer(0))
      detail::upcycle_block(*dense.first_block(), from, *moe.first_block(), to, 0, o);
    l = 1;
  }
  for (std::size_t i = 0; i < dense.blocks().size(); ++i, ++l)
    if (want.moe_layer(l))
      detail::upcycle_block(dense.blocks()[i], from, moe.blocks()[i], to, l, o);
}

}  // namespace bonsai
