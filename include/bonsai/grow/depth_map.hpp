// bonsai/grow/depth_map.hpp — DepthMap: where each layer of a grown model comes from. Target
// layer l is source layer src(l) grown in width, used as it is (copy: StackBERT, MSLT) or with
// its residual outputs cancelled so the pre-norm block h -> h + Attn(N1 h) + Mlp(N2 .) is the
// identity (zero_out: attn.proj and mlp.down's output factor and biases set to 0, Net2Net's
// deeper net and LEMON's "allzero"; cancel: the fan-out weights of every group of copied heads
// and FFN units drawn at random and centred to sum to 0, LEMON's "copymix_cancel").
#pragma once

#include <cstdint>
#include <vector>

#include "../core/error.hpp"

namespace bonsai {

enum class LayerInit : std::uint8_t { copy, zero_out, cancel };

inline const char* to_string(LayerInit k) {
  switch (k) {
    case LayerInit::copy: return "copy";
    case LayerInit::zero_out: return "zero_out";
    case LayerInit::cancel: return "cancel";
  }
  return "?";
}

struct LayerSource {
  LayerInit init = LayerInit::copy;
  index_t src = 0;  // the source layer whose (width-grown) parameters it starts from
  friend bool operator==(const LayerSource&, const LayerSource&) = default;
};

class DepthMap {
 public:
  DepthMap() = default;
  DepthMap(index_t from, std::vector<LayerSource> layers) : m_from(from), m_layers(std::move(layers)) {
    BONSAI_CHECK(from > 0, "DepthMap: the source model has no layers");
    BONSAI_CHECK(to() >= from, "DepthMap: cannot shrink ", from, " layers to ", to());
    std::vector<bool> used(std::size_t(from), false);
    for (index_t l = 0; l < to(); ++l) {
      const LayerSource& s = m_layers[std::size_t(l)];
      BONSAI_CHECK(s.src >= 0 && s.src < from, "DepthMap: layer ", l, " comes from layer ", s.src,
                   " of a ", from, "-layer model");
      if (s.init == LayerInit::copy) used[std::size_t(s.src)] = true;
    }
    for (index_t i = 0; i < from; ++i)
      BONSAI_CHECK(used[std::size_t(i)], "DepthMap: source layer ", i,
                   " is not copied anywhere (growth must not drop layers)");
  }

  /// L -> L, each layer in place.
  static DepthMap identity(index_t layers) { return stack(layers, layers); }

  /// StackBERT / Gstack: target layer l copies source layer l mod L (the stack repeated on
  /// top). With `first` = 1 the repeats skip layer 0 (a dense layer 0 of a structured model,
  /// dense_first_ffn): layer L + i copies layer first + i mod (L - first).
  static DepthMap stack(index_t from, index_t to, index_t first = 0) {
    check_grows(from, to);
    BONSAI_CHECK(first >= 0 && (first < from || to == from), "DepthMap::stack: no layer from ",
                 first, " on in a ", from, "-layer model to repeat");
    std::vector<LayerSource> out;
    for (index_t l = 0; l < to; ++l)
      out.push_back({LayerInit::copy, l < from ? l : first + (l - from) % (from - first)});
    return DepthMap(from, std::move(out));
  }

  /// Interpolation: every source layer repeated in place, layer i at targets
  /// [i to / L, (i + 1) to / L) (each layer k = to / L times when L divides to).
  static DepthMap interpolate(index_t from, index_t to) {
    check_grows(from, to);
    std::vector<LayerSource> out;
    for (index_t l = 0; l < to; ++l) out.push_back({LayerInit::copy, l * from / to});
    return DepthMap(from, std::move(out));
  }

  /// Identity layers inserted after source layers (LEMON, Net2Net's deeper net): of the source
  /// layers from `first` on (n of them), the first 2 n - (L' - first) stay alone and each later
  /// one is followed by a copy of itself made the identity with `init` (zero_out or cancel);
  /// beyond doubling, the insertion repeats. `first` = 1 keeps a dense layer 0 of a structured
  /// model (dense_first_ffn) out of the structured slots.
  static DepthMap insert_identity(index_t from, index_t to, LayerInit init, index_t first = 0) {
    check_grows(from, to);
    BONSAI_CHECK(init != LayerInit::copy, "DepthMap::insert_identity: new layers are zero_out or cancel");
    BONSAI_CHECK(first >= 0 && (first < from || to == from), "DepthMap::insert_identity: no layer from ",
                 first, " on in a ", from, "-layer model to insert after");
    std::vector<LayerSource> out;
    const index_t n = from - first, extra = to - from;
    const index_t per = n ? extra / n : 0, rest = n ? extra % n : 0;
    for (index_t i = 0; i < from; ++i) {
      out.push_back({LayerInit::copy, i});
      if (i < first) continue;
      const index_t k = per + (i >= from - rest ? 1 : 0);
      for (index_t c = 0; c < k; ++c) out.push_back({init, i});
    }
    return DepthMap(from, std::move(out));
  }

  index_t from() const noexcept { return m_from; }
  index_t to() const noexcept { return index_t(m_layers.size()); }
  const LayerSource& operator[](index_t l) const { return m_layers[std::size_t(l)]; }
  const std::vector<LayerSource>& layers() const noexcept { return m_layers; }
  /// Whether target layer l is new: not the first copy of its source layer (the one kept in
  /// place) or an identity layer.
  bool is_new(index_t l) const {
    const LayerSource& s = m_layers[std::size_t(l)];
    if (s.init != LayerInit::copy) return true;
    for (index_t k = 0; k < l; ++k)
      if (m_layers[std::size_t(k)].init == LayerInit::copy && m_layers[std::size_t(k)].src == s.src)
        return true;
    return false;
  }
  /// Whether every new layer is an identity block (the map keeps the function).
  bool function_preserving() const {
    if (m_from == 0) return true;
    std::vector<bool> seen(std::size_t(m_from), false);
    index_t prev = -1;
    for (const LayerSource& s : m_layers) {
      if (s.init != LayerInit::copy) continue;
      if (seen[std::size_t(s.src)] || s.src <= prev) return false;  // a repeated or reordered layer
      seen[std::size_t(s.src)] = true;
      prev = s.src;
    }
    return true;
  }

 private:
  static void check_grows(index_t from, index_t to) {
    BONSAI_CHECK(from > 0 && to >= from, "DepthMap: cannot grow ", from, " layers to ", to);
  }
  index_t m_from = 0;
  std::vector<LayerSource> m_layers;
};

}  // namespace bonsai
