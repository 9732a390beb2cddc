// bonsai/core/tensor.hpp — Tensor<T, Rank, Space>: an owning, contiguous, row-major array in one
// memory space, and Workspace<T>: scratch memory that grows but never shrinks, for the hot path
// (a second call of the same shape allocates nothing).
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <type_traits>

#include "view.hpp"

namespace bonsai {

template <class T, int Rank, class Space = Host>
class Tensor {
  static_assert(std::is_trivially_copyable_v<T>, "tensors hold trivially copyable scalars");

 public:
  using value_type = T;
  using space = Space;
  static constexpr int rank = Rank;
  using Shape = std::array<index_t, Rank>;

  Tensor() = default;
  /// Allocates `shape`, zeroed.
  explicit Tensor(const Shape& shape) : m_shape(shape) {
    index_t n = 1;
    for (index_t e : shape) {
      BONSAI_CHECK(e >= 0, "negative extent ", e, " for a tensor");
      n *= e;
    }
    m_data.reset(static_cast<T*>(Allocator<Space>::allocate(sizeof(T) * n)));
    if (n) Allocator<Space>::zero(m_data.get(), sizeof(T) * n);
  }
  template <class... I>
    requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...))
  explicit Tensor(I... extents) : Tensor(Shape{static_cast<index_t>(extents)...}) {}

  T* data() noexcept { return m_data.get(); }
  const T* data() const noexcept { return m_data.get(); }
  const Shape& shape() const noexcept { return m_shape; }
  index_t extent(int i) const noexcept { return m_shape[i]; }
  index_t size() const noexcept {
    index_t n = 1;
    for (index_t e : m_shape) n *= e;
    return n;
  }
  index_t rows() const noexcept requires(Rank == 2) { return m_shape[0]; }
  index_t cols() const noexcept requires(Rank == 2) { return m_shape[1]; }

  TensorView<T, Rank, Space> view() & { return {data(), m_shape}; }
  TensorView<const T, Rank, Space> view() const& { return {data(), m_shape}; }
  /// A view of a temporary would dangle.
  void view() && = delete;
  operator TensorView<T, Rank, Space>() & { return view(); }
  operator TensorView<const T, Rank, Space>() const& { return view(); }

  template <class... I>
    requires(sizeof...(I) == Rank && std::is_same_v<Space, Host>)
  T& operator()(I... idx) noexcept { return view()(idx...); }
  template <class... I>
    requires(sizeof...(I) == Rank && std::is_same_v<Space, Host>)
  const T& operator()(I... idx) const noexcept { return view()(idx...); }

 private:
  struct Free {
    void operator()(T* p) const noexcept { Allocator<Space>::deallocate(p); }
  };
  std::unique_ptr<T, Free> m_data;
  Shape m_shape{};
};

template <class T, class Space = Host>
using Matrix = Tensor<T, 2, Space>;
template <class T, class Space = Host>
using Vector = Tensor<T, 1, Space>;

/// Scratch memory reused across calls: `matrix(rows, cols)` returns a contiguous view of at
/// least that size, reallocating (contents lost) only when it must grow.
template <class T, class Space = Host>
class Workspace {
 public:
  MatrixView<T, Space> matrix(index_t rows, index_t cols) {
    reserve(rows * cols);
    return matrix_view<Space>(m_buffer.data(), rows, cols);
  }
  T* reserve(index_t n) {
    if (n > m_buffer.size()) m_buffer = Tensor<T, 1, Space>(n);
    return m_buffer.data();
  }
  T* data() noexcept { return m_buffer.data(); }
  const T* data() const noexcept { return m_buffer.data(); }
  index_t capacity() const noexcept { return m_buffer.size(); }

 private:
  Tensor<T, 1, Space> m_buffer;
};

}  // namespace bonsai
