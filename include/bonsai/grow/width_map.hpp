// bonsai/grow/width_map.hpp — WidthMap: how one activation space of a model (residual stream,
// attention heads, FFN hidden units, rank) grows from n to n' >= n units. Target unit j either
// copies source unit src(j) or is filled; as matrices, activations grow as a' = P a (P's row j
// is e_src(j)^T for a copy, (1/n) 1^T for an average fill, 0 for a zero fill), and layers that
// read the space split their input weights over the copies with shares that sum to 1 per
// source unit, so that W' a' = W a (a left inverse Q with Q P = I).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"

namespace bonsai {

/// What target unit j of a grown space holds.
///  copy:  the activation of source unit src(j); readers split the source's input weights.
///  avg:   the mean of the source activations (LayerNorm residual streams only, LEMON).
///  zero:  exactly 0; readers' weights on it are free (random, to break symmetry).
///  fresh: anything (new random producers); readers' weights on it are 0.
enum class Fill : std::uint8_t { copy, avg, zero, fresh };

inline const char* to_string(Fill f) {
  switch (f) {
    case Fill::copy: return "copy";
    case Fill::avg: return "avg";
    case Fill::zero: return "zero";
    case Fill::fresh: return "fresh";
  }
  return "?";
}

class WidthMap {
 public:
  WidthMap() = default;

  /// From `from` source units to source.size() target units: source[j] is the unit target j
  /// copies, or -1 when fill[j] says how it is filled. Every source unit must be copied at
  /// least once (nothing is dropped).
  WidthMap(index_t from, std::vector<index_t> source, std::vector<Fill> fill)
      : m_from(from), m_source(std::move(source)), m_fill(std::move(fill)) {
    BONSAI_CHECK(from > 0, "WidthMap: the source space is empty");
    BONSAI_CHECK(m_source.size() == m_fill.size(), "WidthMap: ", m_source.size(),
                 " sources but ", m_fill.size(), " fills");
    BONSAI_CHECK(to() >= from, "WidthMap: cannot shrink ", from, " units to ", to());
    m_count.assign(std::size_t(from), 0);
    for (index_t j = 0; j < to(); ++j) {
      const index_t s = m_source[std::size_t(j)];
      if (m_fill[std::size_t(j)] == Fill::copy) {
        BONSAI_CHECK(s >= 0 && s < from, "WidthMap: target unit ", j, " copies unit ", s,
                     " of a space of ", from);
        ++m_count[std::size_t(s)];
      } else {
        BONSAI_CHECK(s == -1, "WidthMap: target unit ", j, " is ", to_string(m_fill[std::size_t(j)]),
                     "-filled but names source unit ", s);
      }
    }
    for (index_t i = 0; i < from; ++i)
      BONSAI_CHECK(m_count[std::size_t(i)] > 0, "WidthMap: source unit ", i,
                   " is not copied anywhere (growth must not drop units)");
    m_first.assign(m_source.size(), false);
    std::vector<bool> seen(std::size_t(from), false);
    for (index_t j = 0; j < to(); ++j)
      if (m_fill[std::size_t(j)] == Fill::copy && !seen[std::size_t(m_source[std::size_t(j)])])
        m_first[std::size_t(j)] = seen[std::size_t(m_source[std::size_t(j)])] = true;
  }

  /// n -> n, every unit copied once.
  static WidthMap identity(index_t n) { return tiled(n, n, Fill::copy); }

  /// `from` -> `to` in `blocks` equal blocks (1 by default): target unit o of block b copies
  /// unit o mod (from / blocks) of source block b for the first k = floor(to / from) rounds;
  /// the remaining to - k from units of each block copy the next units again (tail = copy:
  /// LEMON's circular map for heads and FFN units, some copied k + 1 times) or are filled
  /// (tail = avg or zero: LEMON's residual stream, every unit copied exactly k times). Blocks
  /// keep block-diagonal structured maps (BlockDense) representable.
  static WidthMap tiled(index_t from, index_t to, Fill tail, index_t blocks = 1) {
    BONSAI_CHECK(blocks > 0 && from % blocks == 0 && to % blocks == 0, "WidthMap::tiled: ",
                 from, " -> ", to, " units cannot be cut into ", blocks, " equal blocks");
    BONSAI_CHECK(to >= from, "WidthMap::tiled: cannot shrink ", from, " units to ", to);
    BONSAI_CHECK(tail != Fill::fresh, "WidthMap::tiled: the tail is copied, avg- or zero-filled");
    const index_t n = from / blocks, m = to / blocks, full = (m / n) * n;
    std::vector<index_t> src(std::size_t(to), -1);
    std::vector<Fill> fill(std::size_t(to), Fill::copy);
    for (index_t b = 0; b < blocks; ++b)
      for (index_t o = 0; o < m; ++o) {
        const std::size_t j = std::size_t(b * m + o);
        if (o < full || tail == Fill::copy) src[j] = b * n + o % n;
        else fill[j] = tail;
      }
    return WidthMap(from, std::move(src), std::move(fill));
  }

  /// Net2Net's random map: target j < from keeps unit j, every other target copies a source unit
  /// drawn uniformly (so copy counts differ). In `blocks` equal blocks, each block's units then
  /// its new ones, which copy units of their own block; with `stride` > 1 new unit o of a block
  /// copies a unit whose position is o mod stride (BlockShuffle: blocks = stride = B keeps both
  /// its contiguous and interleaved blocks).
  static WidthMap random(index_t from, index_t to, Rng& rng, index_t blocks = 1,
                         index_t stride = 1) {
    BONSAI_CHECK(to >= from, "WidthMap::random: cannot shrink ", from, " units to ", to);
    BONSAI_CHECK(blocks > 0 && from % blocks == 0 && to % blocks == 0, "WidthMap::random: ", from,
                 " -> ", to, " units cannot be cut into ", blocks, " equal blocks");
    const index_t n = from / blocks, m = to / blocks;
    BONSAI_CHECK(stride > 0 && n % stride == 0, "WidthMap::random: ", n,
                 " units per block are not a multiple of the stride ", stride);
    std::vector<index_t> src(static_cast<std::size_t>(to));
    for (index_t b = 0; b < blocks; ++b)
      for (index_t o = 0; o < m; ++o) {
        index_t local = o;
        if (o >= n) {
          const index_t count = n / stride;
          local = o % stride + stride * std::min(count - 1, index_t(rng.uniform() * double(count)));
        }
        src[std::size_t(b * m + o)] = b * n + local;
      }
    return WidthMap(from, std::move(src), std::vector<Fill>(std::size_t(to), Fill::copy));
  }

  /// The source units in place, then to - from new units filled with `fill` (zero or fresh);
  /// in `blocks` equal blocks, each block's units then its new ones (block-diagonal maps).
  static WidthMap appended(index_t from, index_t to, Fill fill, index_t blocks = 1) {
    BONSAI_CHECK(to >= from, "WidthMap::appended: cannot shrink ", from, " units to ", to);
    BONSAI_CHECK(blocks > 0 && from % blocks == 0 && to % blocks == 0, "WidthMap::appended: ",
                 from, " -> ", to, " units cannot be cut into ", blocks, " equal blocks");
    BONSAI_CHECK(fill == Fill::zero || fill == Fill::fresh,
                 "WidthMap::appended: new units are zero- or fresh-filled");
    const index_t n = from / blocks, m = to / blocks;
    std::vector<index_t> src(std::size_t(to), -1);
    std::vector<Fill> f(std::size_t(to), fill);
    for (index_t b = 0; b < blocks; ++b)
      for (index_t o = 0; o < n; ++o) {
        src[std::size_t(b * m + o)] = b * n + o;
        f[std::size_t(b * m + o)] = Fill::copy;
      }
    return WidthMap(from, std::move(src), std::move(f));
  }

  index_t from() const noexcept { return m_from; }
  index_t to() const noexcept { return index_t(m_source.size()); }
  Fill fill(index_t j) const { return m_fill[std::size_t(j)]; }
  /// The source unit target j copies (-1 when it is filled).
  index_t source(index_t j) const { return m_source[std::size_t(j)]; }
  /// How many target units copy source unit i.
  index_t count(index_t i) const { return m_count[std::size_t(i)]; }
  /// The uniform share 1 / count(src(j)) of a copy (Net2Net's split; 0 for fills).
  double share(index_t j) const {
    return fill(j) == Fill::copy ? 1.0 / double(count(source(j))) : 0.0;
  }
  /// Whether target j is the original of its unit: the first target that copies it (the "old
  /// slice"; later copies and fills are new).
  bool original(index_t j) const { return m_first[std::size_t(j)]; }
  /// Whether every source unit is copied the same number of times (norms stay exact).
  bool uniform() const {
    for (index_t c : m_count)
      if (c != m_count.front()) return false;
    return true;
  }
  /// Whether any target unit is filled with `f`.
  bool has(Fill f) const {
    for (Fill x : m_fill)
      if (x == f) return true;
    return false;
  }
  bool is_identity() const {
    if (to() != m_from) return false;
    for (index_t j = 0; j < to(); ++j)
      if (fill(j) != Fill::copy || source(j) != j) return false;
    return true;
  }

  /// The same map over units of `unit` elements each (head-granular maps: unit = head_dim).
  WidthMap expand(index_t unit) const {
    BONSAI_CHECK(unit > 0, "WidthMap::expand: unit ", unit, " must be positive");
    std::vector<index_t> src(std::size_t(to() * unit));
    std::vector<Fill> f(src.size());
    for (index_t j = 0; j < to(); ++j)
      for (index_t e = 0; e < unit; ++e) {
        src[std::size_t(j * unit + e)] = source(j) < 0 ? -1 : source(j) * unit + e;
        f[std::size_t(j * unit + e)] = fill(j);
      }
    return WidthMap(m_from * unit, std::move(src), std::move(f));
  }

 private:
  index_t m_from = 0;
  std::vector<index_t> m_source;
  std::vector<Fill> m_fill;
  std::vector<index_t> m_count;
  std::vector<bool> m_first;  // target j is the first copy of its source unit
};

}  // namespace bonsai
