// bonsai/nn/ffn_structure.hpp — the closed set of FFN structures a model can be built with, and
// the one place that turns a run-time choice (GptConfig::ffn) into a type: with_ffn_structure
// calls f(std::type_identity<Map>{}) for Map = Dense, LowRank, BlockDense or BlockShuffle, so
// everything below that call is statically typed.
#pragma once

#include <type_traits>

#include "../structured/block_dense.hpp"
#include "../structured/block_shuffle.hpp"
#include "../structured/dense.hpp"
#include "../structured/init.hpp"
#include "../structured/low_rank.hpp"
#include "../structured/pre_merged.hpp"
#include "../structured/self_guided.hpp"
#include "config.hpp"

namespace bonsai {

/// The map of one FFN linear (in -> out) for structure Map, with the config's rank / blocks.
template <class Map>
struct FfnMap;

template <class T>
struct FfnMap<Dense<T>> {
  static Dense<T> make(index_t in, index_t out, const GptConfig&) { return Dense<T>(in, out); }
};
template <class T>
struct FfnMap<LowRank<T>> {
  static LowRank<T> make(index_t in, index_t out, const GptConfig& c) {
    return LowRank<T>(in, out, c.rank);
  }
};
template <class T>
struct FfnMap<BlockDense<T>> {
  static BlockDense<T> make(index_t in, index_t out, const GptConfig& c) {
    return block_dense<T>(in, out, c.rank, c.blocks);
  }
};
template <class T>
struct FfnMap<BlockShuffle<T>> {
  static BlockShuffle<T> make(index_t in, index_t out, const GptConfig& c) {
    return block_shuffle<T>(in, out, c.blocks);
  }
};

/// A self-guided FFN map: the structure's map with a dense guide (a = 1 until set).
template <class S>
struct FfnMap<SelfGuided<S>> {
  static SelfGuided<S> make(index_t in, index_t out, const GptConfig& c) {
    return SelfGuided<S>(FfnMap<S>::make(in, out, c));
  }
};

/// A pre-merged FFN map for decoding: the structure's map beside its merged matrix.
template <class S>
struct FfnMap<PreMerged<S>> {
  static PreMerged<S> make(index_t in, index_t out, const GptConfig& c) {
    return PreMerged<S>(FfnMap<S>::make(in, out, c));
  }
};

/// The same map structure over scalar U: Dense<float> -> Dense<bf16>, and factor by factor for
/// products (a Shuffle has no scalar and stays). How a backend runs a host model's layout in
/// another precision.
template <class Map, class U>
struct rebind_scalar {
  using type = Map;  // maps without parameters
};
template <class T, index_t I, index_t O, class U>
struct rebind_scalar<Dense<T, I, O>, U> {
  using type = Dense<U, I, O>;
};
template <class T, index_t I, index_t O, class U>
struct rebind_scalar<LowRank<T, I, O>, U> {
  using type = LowRank<U, I, O>;
};
template <class T, index_t I, index_t O, class U>
struct rebind_scalar<BlockDiag<T, I, O>, U> {
  using type = BlockDiag<U, I, O>;
};
template <class... Fs, class U>
struct rebind_scalar<Product<Fs...>, U> {
  using type = Product<typename rebind_scalar<Fs, U>::type...>;
};
template <class Map, class U>
using rebind_scalar_t = typename rebind_scalar<Map, U>::type;

/// Calls f(std::type_identity<Map>{}) with the FFN map type the config names.
template <class T, class F>
decltype(auto) with_ffn_structure(const GptConfig& config, F&& f) {
  switch (config.ffn) {
    case FfnKind::dense: return f(std::type_identity<Dense<T>>{});
    case FfnKind::lowrank: return f(std::type_identity<LowRank<T>>{});
    case FfnKind::blockdense: return f(std::type_identity<BlockDense<T>>{});
    case FfnKind::blockshuffle: return f(std::type_identity<BlockShuffle<T>>{});
  }
  detail::fail("with_ffn_structure: unknown FFN structure");
}

/// Initialises an FFN map: dense weights N(0, std^2) (std scaled down for residual projections),
/// structured maps with the paper's default (SVD for LowRank, orthogonal factors otherwise).
template <class T>
void init_ffn_map(const Dense<T>& map, Rng& rng, double stddev) { init_normal(map, rng, stddev); }
template <LinearMap M>
void init_ffn_map(const M& map, Rng& rng, double) { initialize(map, rng); }

/// Sizes of structured FFNs at a fraction of the dense FFN's parameters, as the paper chooses
/// them (spec §2.4; width d, FFN 4d): 63% -> LowRank R = d/2, BlockShuffle B = 2, BlockDense
/// B = 2, R = 2d/3; 32% -> R = d/4, B = 4, BlockDense B = 2, R = d/3.
inline void set_ffn_params_fraction(GptConfig& c, double fraction) {
  const bool big = fraction > 0.5;
  BONSAI_CHECK(std::abs(fraction - 0.63) < 0.02 || std::abs(fraction - 0.32) < 0.02,
               "--ffn-params: the paper's fractions are 0.63 and 0.32, got ", fraction);
  switch (c.ffn) {
    case FfnKind::dense: break;
    case FfnKind::lowrank: c.rank = big ? c.d_model / 2 : c.d_model / 4; break;
    case FfnKind::blockdense:
      c.blocks = 2;
      c.rank = big ? 2 * c.d_model / 3 : c.d_model / 3;
      break;
    case FfnKind::blockshuffle: c.blocks = big ? 2 : 4; break;
  }
}

}  // namespace bonsai
