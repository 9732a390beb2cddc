// bonsai/core/view.hpp — TensorView<T, Rank, Space>: a non-owning strided view, pointer plus
// shape plus strides (in elements), row-major by default. MatrixView is the rank-2 case used
// for activations (tokens, features) and weights (out, in).
#pragma once

#include <array>
#include <type_traits>

#include "error.hpp"
#include "memory.hpp"

namespace bonsai {

template <class T, int Rank, class Space = Host>
class TensorView {
  static_assert(Rank >= 1, "a view has at least one dimension");

 public:
  using value_type = std::remove_const_t<T>;
  using element_type = T;
  using space = Space;
  static constexpr int rank = Rank;
  using Shape = std::array<index_t, Rank>;

  /// The empty view: no data, every extent 0. Passing one where an output is optional (dx)
  /// means "not wanted".
  TensorView() = default;

  /// A contiguous row-major view of `shape`.
  TensorView(T* data, const Shape& shape) : m_data(data), m_shape(shape) {
    index_t s = 1;
    for (int i = Rank - 1; i >= 0; --i) {
      BONSAI_CHECK(shape[i] >= 0, "negative extent ", shape[i], " in a view");
      m_stride[i] = s;
      s *= shape[i];
    }
  }
  TensorView(T* data, const Shape& shape, const Shape& stride)
      : m_data(data), m_shape(shape), m_stride(stride) {}

  /// A view of const elements converts implicitly from a view of mutable ones.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  TensorView(const TensorView<U, Rank, Space>& other)
      : m_data(other.data()), m_shape(other.shape()), m_stride(other.strides()) {}

  T* data() const noexcept { return m_data; }
  const Shape& shape() const noexcept { return m_shape; }
  const Shape& strides() const noexcept { return m_stride; }
  index_t extent(int i) const noexcept { return m_shape[i]; }
  index_t stride(int i) const noexcept { return m_stride[i]; }
  index_t size() const noexcept {
    index_t n = 1;
    for (index_t e : m_shape) n *= e;
    return n;
  }
  bool empty() const noexcept { return m_data == nullptr || size() == 0; }
  bool is_contiguous() const noexcept { return *this == TensorView(m_data, m_shape); }

  // Rank-2 vocabulary: (rows, cols) with leading dimension ld = stride between rows.
  index_t rows() const noexcept requires(Rank == 2) { return m_shape[0]; }
  index_t cols() const noexcept requires(Rank == 2) { return m_shape[1]; }
  index_t ld() const noexcept requires(Rank == 2) { return m_stride[0]; }

  /// Element access on host memory: v(i, j, ...).
  template <class... I>
    requires(sizeof...(I) == Rank && std::is_same_v<Space, Host>)
  T& operator()(I... idx) const noexcept {
    const std::array<index_t, Rank> ix{static_cast<index_t>(idx)...};
    index_t off = 0;
    for (int i = 0; i < Rank; ++i) off += ix[i] * m_stride[i];
    return m_data[off];
  }

  friend bool operator==(const TensorView& a, const TensorView& b) {
    return a.m_data == b.m_data && a.m_shape == b.m_shape && a.m_stride == b.m_stride;
  }

 private:
  T* m_data = nullptr;
  Shape m_shape{};
  Shape m_stride{};
};

template <class T, class Space = Host>
using MatrixView = TensorView<T, 2, Space>;
template <class T, class Space = Host>
using VectorView = TensorView<T, 1, Space>;

/// A (rows, cols) row-major matrix view with leading dimension `ld` (>= cols).
template <class Space = Host, class T>
MatrixView<T, Space> matrix_view(T* data, index_t rows, index_t cols, index_t ld) {
  return MatrixView<T, Space>(data, {rows, cols}, {ld, 1});
}
/// A contiguous (rows, cols) row-major matrix view.
template <class Space = Host, class T>
MatrixView<T, Space> matrix_view(T* data, index_t rows, index_t cols) {
  return MatrixView<T, Space>(data, {rows, cols});
}

/// Columns [begin, begin + count) of a matrix view: same rows, same leading dimension.
template <class T, class Space>
MatrixView<T, Space> columns(const MatrixView<T, Space>& m, index_t begin, index_t count) {
  return MatrixView<T, Space>(m.data() + begin * m.stride(1), {m.rows(), count}, m.strides());
}

}  // namespace bonsai
