// bonsai/nn/arena.hpp — ParamArena<T, Space>: every parameter of a model in one contiguous
// buffer of memory space Space, each a named slice ("h.3.mlp.up.U"), with a gradient buffer of
// the same layout. Layers register their parameters while the model is laid out (add), the arena
// allocates once (allocate), and layers then point into it. Names, shapes and offsets live on the
// host whatever the space, so one model description lays out the same arena on every backend.
// On the device with a T narrower than float (bf16), the arena also holds the fp32 master copy
// that the optimizer updates and checkpoints read; values() is then its working copy in T. The
// optimizer state mirrors the arena slot for slot; checkpoints write it tensor by tensor;
// data-parallel training all-reduces grads() in one call.
#pragma once

#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../backend/cpu/ops.hpp"
#include "../core/tensor.hpp"
#include "../structured/map.hpp"

namespace bonsai {

/// One named parameter: its shape and where it lives in the arena.
struct ParamSlot {
  std::string name;
  std::vector<index_t> shape;
  index_t offset = 0;  // in elements from the start of the arena
  index_t size() const {
    index_t n = 1;
    for (index_t e : shape) n *= e;
    return n;
  }
  /// AdamW decays matrices (rank >= 2: weights and embeddings), never biases or norm gains.
  bool decays() const { return shape.size() >= 2; }
};

/// Layer parameters are named "h.<l>.<rest>" ("h.3.mlp.up.U"); model-level ones are not ("wte").
inline std::string layer_param_name(index_t layer, std::string_view rest) {
  return "h." + std::to_string(layer) + "." + std::string(rest);
}
struct LayerParamName {
  index_t layer = 0;
  std::string_view rest;  // "mlp.up.U"
};
/// The layer and the rest of a layer parameter's name; nullopt for a model-level name.
inline std::optional<LayerParamName> split_layer_param_name(std::string_view name) {
  if (!name.starts_with("h.")) return std::nullopt;
  LayerParamName out;
  const char* end = name.data() + name.size();
  const auto [p, ec] = std::from_chars(name.data() + 2, end, out.layer);
  if (ec != std::errc() || p == end || *p != '.') return std::nullopt;
  out.rest = name.substr(std::size_t(p + 1 - name.data()));
  return out;
}

template <class T, class Space = Host>
class ParamArena {
 public:
  using value_type = T;
  using space = Space;
  /// Whether a separate fp32 master copy backs the values (a device arena in bf16).
  static constexpr bool has_master = !std::is_same_v<Space, Host> && !std::is_same_v<T, float>;

  /// Registers a parameter and returns its offset. Names must be unique; only before allocate().
  index_t add(std::string name, std::vector<index_t> shape) {
    BONSAI_CHECK(!allocated(), "ParamArena: cannot add '", name, "' after allocate()");
    BONSAI_CHECK(!m_index.contains(name), "ParamArena: duplicate parameter name '", name, "'");
    for (index_t e : shape) BONSAI_CHECK(e > 0, "ParamArena: '", name, "' has an extent ", e);
    ParamSlot s{std::move(name), std::move(shape), m_size};
    m_size += s.size();
    m_index.emplace(s.name, m_slots.size());
    m_slots.push_back(std::move(s));
    return m_slots.back().offset;
  }

  /// Registers every parameter of a structured map under `prefix` ("h.3.mlp.up." + "U"); they
  /// are consecutive, so the map binds at the returned offset.
  template <LinearMap M>
  index_t add_map(const std::string& prefix, const M& map) {
    index_t first = m_size;
    for (const ParamInfo& p : map.parameters()) add(prefix + p.name, p.shape);
    return first;
  }

  /// Allocates values and gradients (and the master copy), all zeroed.
  void allocate() {
    BONSAI_CHECK(!allocated(), "ParamArena: allocate() called twice");
    m_values = Vector<T, Space>(m_size);
    m_grads = Vector<T, Space>(m_size);
    if constexpr (has_master) m_master = Vector<float, Space>(m_size);
    m_allocated = true;
  }
  bool allocated() const noexcept { return m_allocated; }

  /// Total number of scalars.
  index_t size() const noexcept { return m_size; }
  const std::vector<ParamSlot>& slots() const noexcept { return m_slots; }
  const ParamSlot* find(std::string_view name) const {
    auto it = m_index.find(std::string(name));
    return it == m_index.end() ? nullptr : &m_slots[it->second];
  }
  const ParamSlot& slot(std::string_view name) const {
    const ParamSlot* s = find(name);
    BONSAI_CHECK(s != nullptr, "ParamArena: no parameter named '", name, "'");
    return *s;
  }

  T* values() noexcept { return m_values.data(); }
  const T* values() const noexcept { return m_values.data(); }
  T* grads() noexcept { return m_grads.data(); }
  const T* grads() const noexcept { return m_grads.data(); }
  /// (size,) views of all values / all gradients.
  VectorView<T, Space> values_view() noexcept { return m_values.view(); }
  VectorView<T, Space> grads_view() noexcept { return m_grads.view(); }
  /// (size,) the fp32 weights the optimizer updates: the master copy, or the values themselves.
  VectorView<float, Space> master() noexcept
    requires(has_master || std::is_same_v<T, float>)
  {
    if constexpr (has_master) return m_master.view();
    else return m_values.view();
  }

  /// Sets the weights (master copy and values) from `host` (size,), fp32 values in this layout.
  void assign(const VectorView<const float, Host>& host)
    requires(has_master || std::is_same_v<T, float>)
  {
    BONSAI_CHECK(host.size() == m_size, "ParamArena::assign: ", host.size(), " values for an arena of ",
                 m_size);
    if constexpr (has_master) Ops<Space>::copy(m_master.view(), host);
    Ops<Space>::copy(m_values.view(), host);
  }
  /// Writes the fp32 weights (the master copy) to `host` (size,).
  void copy_to(const VectorView<float, Host>& host)
    requires(has_master || std::is_same_v<T, float>)
  {
    BONSAI_CHECK(host.size() == m_size, "ParamArena::copy_to: ", host.size(), " values for an arena of ",
                 m_size);
    Ops<Space>::copy(host, VectorView<const float, Space>(master()));
  }

  /// (size of the slot,) flat views of one parameter and its gradient.
  VectorView<T, Space> value(std::string_view name) { return flat(values(), slot(name)); }
  VectorView<T, Space> grad(std::string_view name) { return flat(grads(), slot(name)); }
  VectorView<T, Space> value(const ParamSlot& s) { return flat(values(), s); }
  VectorView<T, Space> grad(const ParamSlot& s) { return flat(grads(), s); }

  /// `map` bound to the values / the gradients of its parameters, registered at `offset` by
  /// add_map: the (weights, grads) pair that forward and backward take.
  template <LinearMap M>
  M bind_values(const M& map, index_t offset) {
    return bind(map, flat_at(values(), offset, map.param_count()));
  }
  template <LinearMap M>
  M bind_grads(const M& map, index_t offset) {
    return bind(map, flat_at(grads(), offset, map.param_count()));
  }

  void zero_grads() {
    if (m_size) Ops<Space>::zero(m_grads.view());
  }

 private:
  VectorView<T, Space> flat(T* base, const ParamSlot& s) { return flat_at(base, s.offset, s.size()); }
  VectorView<T, Space> flat_at(T* base, index_t offset, index_t n) {
    BONSAI_CHECK(allocated(), "ParamArena: not allocated");
    BONSAI_CHECK(offset >= 0 && offset + n <= m_size, "ParamArena: elements [", offset, ", ",
                 offset + n, ") lie outside the arena of ", m_size);
    return VectorView<T, Space>(base + offset, {n});
  }

  std::vector<ParamSlot> m_slots;
  std::unordered_map<std::string, std::size_t> m_index;
  index_t m_size = 0;
  bool m_allocated = false;
  Vector<T, Space> m_values, m_grads;  // (size)
  Vector<float, Space> m_master;       // (size) when has_master
};

/// For every parameter of `to` that `from` also has, copies its slice of `src` (a buffer in
/// `from`'s layout: values, gradients or an optimizer moment) into `dst` (`to`'s layout); shapes
/// must agree. Returns the names of `to` that `from` lacks, whose slices are left untouched.
/// This is how a model changes type while keeping its state: a released self-guided model,
/// a pre-merged decoder, a grown model.
template <class T>
std::vector<std::string> copy_by_name(const ParamArena<T>& from, const T* src, const ParamArena<T>& to,
                                      T* dst) {
  std::vector<std::string> missing;
  for (const ParamSlot& t : to.slots()) {
    const ParamSlot* f = from.find(t.name);
    if (!f) {
      missing.push_back(t.name);
      continue;
    }
    BONSAI_CHECK(f->shape == t.shape, "copy_by_name: '", t.name, "' has shape ", detail::shape_string(f->shape),
                 " in the source but ", detail::shape_string(t.shape), " in the target");
    std::copy_n(src + f->offset, t.size(), dst + t.offset);
  }
  return missing;
}

}  // namespace bonsai
