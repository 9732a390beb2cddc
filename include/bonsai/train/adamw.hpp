// bonsai/train/adamw.hpp — AdamW<T, Space>: Adam with decoupled weight decay over a
// ParamArena<T, Space>, PyTorch semantics. Per step t, with g = grad_scale * grad:
// p *= 1 - lr wd (decaying slots only), then m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr m^ / (sqrt(v^) + eps), with the bias
// corrections m^ = m / (1 - b1^t), v^ = v / (1 - b2^t). This header defines it on the host;
// train/adamw_device.cuh specialises it for Device arenas (fp32 moments and master weights, one
// fused kernel per range).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "../backend/adamw.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "../nn/arena.hpp"

namespace bonsai {

/// The slots for which frozen(slot) is false, merged into maximal runs of consecutive elements
/// with one decay flag (matrices decay, vectors do not: ParamSlot::decays), in offset order.
template <class Pred>
std::vector<AdamWRange> adamw_ranges(const std::vector<ParamSlot>& slots, Pred&& frozen) {
  std::vector<ParamSlot> sorted;
  for (const ParamSlot& s : slots)
    if (!frozen(s)) sorted.push_back(s);
  std::sort(sorted.begin(), sorted.end(),
            [](const ParamSlot& a, const ParamSlot& b) { return a.offset < b.offset; });
  std::vector<AdamWRange> ranges;
  for (const ParamSlot& s : sorted) {
    if (!ranges.empty() && ranges.back().end == s.offset && ranges.back().decays == s.decays())
      ranges.back().end += s.size();
    else
      ranges.push_back({s.offset, s.offset + s.size(), s.decays()});
  }
  return ranges;
}
/// Every slot.
inline std::vector<AdamWRange> adamw_ranges(const std::vector<ParamSlot>& slots) {
  return adamw_ranges(slots, [](const ParamSlot&) { return false; });
}

namespace detail {
/// The host's unit of parallel work: at most this many elements of one range. Chunks depend
/// only on the arena layout, never on the thread count.
inline constexpr index_t adamw_chunk = index_t(1) << 15;
}  // namespace detail

template <class T, class Space = Host>
class AdamW {
  static_assert(std::is_same_v<Space, Host>, "AdamW<T, Device>: include <bonsai/train/adamw_device.cuh>");

 public:
  using value_type = T;

  /// Zeroed moments mirroring `arena`'s layout; the decay flag of every slot is read here once.
  explicit AdamW(const ParamArena<T>& arena, AdamWConfig config = {})
      : m_config(config), m_m(arena.size()), m_v(arena.size()) {
    config.validate();
    build_chunks(arena, [](const ParamSlot&) { return false; });
  }

  /// Leaves every slot for which frozen(slot) is true out of later steps (MSLT's frozen lower
  /// layers): their values and moments stay bitwise unchanged. A predicate that is always
  /// false trains everything again.
  template <class Pred>
  void set_frozen(const ParamArena<T>& arena, Pred&& frozen) {
    BONSAI_CHECK(arena.size() == size(), "AdamW::set_frozen: the arena has ", arena.size(),
                 " parameters but the optimizer state was made for ", size());
    build_chunks(arena, frozen);
  }

  const AdamWConfig& config() const noexcept { return m_config; }
  /// Number of scalars (the arena's size).
  index_t size() const noexcept { return m_m.size(); }

  /// One update of every parameter from arena.grads() * grad_scale (the scale folds in clipping
  /// and the 1/micro-batches average; the gradients themselves are not modified). Deterministic:
  /// purely elementwise, so the result does not depend on the thread count. With `update` (one
  /// flag per parameter), elements whose flag is 0 are skipped: their values and moments stay
  /// bitwise unchanged, so neither weight decay nor stale moments move them (the neurons a
  /// sparsity-accelerated step omitted); the step count advances for all.
  void step(ParamArena<T>& arena, double lr, double grad_scale = 1.0,
            std::span<const std::uint8_t> update = {}) {
    BONSAI_CHECK(update.empty() || index_t(update.size()) == size(), "AdamW: ", update.size(),
                 " update flags for ", size(), " parameters");
    BONSAI_CHECK(arena.allocated() && arena.size() == size(), "AdamW: the arena has ", arena.size(),
                 " parameters", arena.allocated() ? "" : " (not allocated)",
                 " but the optimizer state was made for ", size());
    BONSAI_CHECK(std::isfinite(lr) && lr >= 0, "AdamW: learning rate ", lr,
                 " must be finite and non-negative");
    BONSAI_CHECK(std::isfinite(grad_scale), "AdamW: grad_scale ", grad_scale, " is not finite");
    ++m_step;
    const double bc1 = 1.0 - std::pow(m_config.beta1, double(m_step));
    const double bc2 = 1.0 - std::pow(m_config.beta2, double(m_step));
    const T b1 = T(m_config.beta1), c1 = T(1.0 - m_config.beta1);
    const T b2 = T(m_config.beta2), c2 = T(1.0 - m_config.beta2);
    const T eps = T(m_config.eps), scale = T(grad_scale);
    const T step_size = T(lr / bc1), inv_sqrt_bc2 = T(1.0 / std::sqrt(bc2));
    const T shrink = T(1.0 - lr * m_config.weight_decay);

    T* p = arena.values();
    const T* g = arena.grads();
    T* m = m_m.data();
    T* v = m_v.data();
    const AdamWRange* chunks = m_chunks.data();
    const std::uint8_t* flags = update.empty() ? nullptr : update.data();
    parallel_for(
        index_t(m_chunks.size()),
        [=](index_t c) {
          const AdamWRange ch = chunks[c];
          const T keep = ch.decays ? shrink : T(1);
          if (flags) {  // branch-free, so it vectorises like the plain loop
            for (index_t i = ch.begin; i < ch.end; ++i) {
              const bool u = flags[i] != 0;
              const T gi = g[i] * scale;
              const T mi = b1 * m[i] + c1 * gi;
              const T vi = b2 * v[i] + c2 * gi * gi;
              const T pi = p[i] * keep - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
              m[i] = u ? mi : m[i];
              v[i] = u ? vi : v[i];
              p[i] = u ? pi : p[i];
            }
          } else {
            for (index_t i = ch.begin; i < ch.end; ++i) {
              const T gi = g[i] * scale;
              const T mi = b1 * m[i] + c1 * gi;
              const T vi = b2 * v[i] + c2 * gi * gi;
              m[i] = mi;
              v[i] = vi;
              p[i] = p[i] * keep - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
            }
          }
        },
        detail::adamw_chunk);
  }

  /// Steps taken so far (t of the last update); set it when resuming from a checkpoint.
  std::int64_t step_count() const noexcept { return m_step; }
  void set_step_count(std::int64_t t) {
    BONSAI_CHECK(t >= 0, "AdamW: step count ", t, " is negative");
    m_step = t;
  }

  /// (size,) first and second moments in the arena's layout (exp_avg, exp_avg_sq), writable
  /// so a checkpoint can restore them.
  VectorView<T> m() noexcept { return m_m.view(); }
  VectorView<T> v() noexcept { return m_v.view(); }
  VectorView<const T> m() const noexcept { return m_m.view(); }
  VectorView<const T> v() const noexcept { return m_v.view(); }
  /// The moments of one parameter slot.
  VectorView<T> m(const ParamSlot& s) { return flat(m_m.data(), s); }
  VectorView<T> v(const ParamSlot& s) { return flat(m_v.data(), s); }

  /// The optimizer of `to`, a model of another type made from `from` (this optimizer's arena):
  /// the moments of every parameter both have are carried over by name, the others start at 0;
  /// the step count and the configuration are kept. What `from` alone had is not carried.
  AdamW carried_to(const ParamArena<T>& from, const ParamArena<T>& to) const {
    BONSAI_CHECK(from.size() == size(), "AdamW::carried_to: the source arena has ", from.size(),
                 " parameters but the optimizer state was made for ", size());
    AdamW next(to, m_config);
    copy_by_name(from, m_m.data(), to, next.m_m.data());
    copy_by_name(from, m_v.data(), to, next.m_v.data());
    next.m_step = m_step;
    return next;
  }

  /// Zeroes the moments and the step count.
  void reset() noexcept {
    if (size()) {
      std::memset(m_m.data(), 0, sizeof(T) * size());
      std::memset(m_v.data(), 0, sizeof(T) * size());
    }
    m_step = 0;
  }

 private:
  /// Cuts the trained slots' ranges into chunks.
  template <class Pred>
  void build_chunks(const ParamArena<T>& arena, Pred&& frozen) {
    m_chunks.clear();
    for (const AdamWRange& r : adamw_ranges(arena.slots(), frozen))
      for (index_t b = r.begin; b < r.end; b += detail::adamw_chunk)
        m_chunks.push_back({b, std::min(b + detail::adamw_chunk, r.end), r.decays});
  }

  VectorView<T> flat(T* base, const ParamSlot& s) {
    BONSAI_CHECK(s.offset >= 0 && s.offset + s.size() <= size(), "AdamW: slot '", s.name,
                 "' lies outside the optimizer state of ", size(), " scalars");
    return VectorView<T>(base + s.offset, {s.size()});
  }

  AdamWConfig m_config;
  Vector<T> m_m, m_v;
  std::vector<AdamWRange> m_chunks;
  std::int64_t m_step = 0;
};

}  // namespace bonsai
