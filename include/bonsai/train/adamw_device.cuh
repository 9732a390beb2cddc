// bonsai/train/adamw_device.cuh — AdamW<T, Device>: train/adamw.hpp's optimizer for an arena on
// the GPU. It keeps fp32 moments m and v (arena size,) on the device, the arena's decay ranges and
// the update count t; step() runs update t + 1 of the arena's fp32 master weights and their T
// working copy from its T gradients with backend/cuda/adamw.cuh's fused kernel (one launch per
// range), the float operations of AdamW<float, Host>::step in its order. download() and upload()
// move the moments and t to and from a host AdamW<float> of the same layout, which is what
// checkpoints read and write.
#pragma once

#include <cstdint>
#include <vector>

#include "../backend/cuda/adamw.cuh"
#include "../backend/cuda/memory.cuh"
#include "../nn/arena.hpp"
#include "adamw.hpp"

namespace bonsai {

template <class T>
class AdamW<T, Device> {
 public:
  using value_type = T;

  /// Zeroed moments for the parameters of `layout` (its slots and size: a device arena, or the
  /// host arena of the same model).
  template <class Layout>
  AdamW(const Layout& layout, const AdamWConfig& config)
      : m_config((config.validate(), config)), m_ranges(adamw_ranges(layout.slots())), m_m(layout.size()),
        m_v(layout.size()) {}

  /// One update of `arena` (master weights and working copy) from its gradients scaled by
  /// grad_scale (the clip factor and any micro-batch average).
  void step(ParamArena<T, Device>& arena, double lr, double grad_scale = 1.0) {
    BONSAI_CHECK(arena.allocated() && arena.size() == size(), "AdamW<Device>: the arena has ", arena.size(),
                 " parameters but the optimizer state was made for ", size());
    cuda::adamw_step<T>(m_ranges, arena.master(), arena.values_view(),
                        VectorView<const T, Device>(arena.grads_view()), m_m.view(), m_v.view(), m_config,
                        m_step + 1, lr, grad_scale);
    ++m_step;
  }

  /// The moments and step count into / from a host optimizer of the same layout.
  void download(AdamW<float, Host>& host) const {
    check_host(host);
    BONSAI_CUDA_CHECK(cudaStreamSynchronize(cuda::runtime().stream()));
    cuda::copy(host.m(), VectorView<const float, Device>(m_m.data(), {size()}));
    cuda::copy(host.v(), VectorView<const float, Device>(m_v.data(), {size()}));
    host.set_step_count(m_step);
  }
  void upload(const AdamW<float, Host>& host) {
    check_host(host);
    BONSAI_CUDA_CHECK(cudaStreamSynchronize(cuda::runtime().stream()));
    cuda::copy(m_m.view(), host.m());
    cuda::copy(m_v.view(), host.v());
    m_step = host.step_count();
  }

  index_t size() const noexcept { return m_m.size(); }
  std::int64_t step_count() const noexcept { return m_step; }
  const AdamWConfig& config() const noexcept { return m_config; }
  /// (size,) fp32 moments on the device, in the arena's layout.
  VectorView<float, Device> m() noexcept { return m_m.view(); }
  VectorView<float, Device> v() noexcept { return m_v.view(); }

 private:
  void check_host(const AdamW<float, Host>& host) const {
    BONSAI_CHECK(host.size() == size(), "AdamW<Device>: the host optimizer holds ", host.size(),
                 " parameters but this one ", size());
  }

  AdamWConfig m_config;
  std::vector<AdamWRange> m_ranges;
  Vector<float, Device> m_m, m_v;  // (P)
  std::int64_t m_step = 0;
};

}  // namespace bonsai
