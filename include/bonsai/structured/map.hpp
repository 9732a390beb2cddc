// bonsai/structured/map.hpp — what every structured linear map y = W x provides, and the
// helpers shared by all of them. A map is a small copyable description: its sizes, plus
// pointers to its parameters once bound to storage (a model's arena, or a gradient buffer of
// the same layout). Parameters are laid out back to back in the order of parameters().
#pragma once

#include <concepts>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/extent.hpp"
#include "../core/eigen.hpp"
#include "../core/tensor.hpp"

namespace bonsai {

/// One parameter tensor: a stable name ("U", "0.blocks") and its shape.
struct ParamInfo {
  std::string name;
  std::vector<index_t> shape;
  index_t size() const {
    index_t n = 1;
    for (index_t e : shape) n *= e;
    return n;
  }
  friend bool operator==(const ParamInfo&, const ParamInfo&) = default;
};

/// A structured linear map from `in_features()` to `out_features()` (both possibly static:
/// `static_in`, `static_out`, or `dynamic`).
template <class M>
concept LinearMap = requires(const M& m, index_t tokens) {
  { M::static_in } -> std::convertible_to<index_t>;
  { M::static_out } -> std::convertible_to<index_t>;
  { m.in_features() } -> std::convertible_to<index_t>;
  { m.out_features() } -> std::convertible_to<index_t>;
  { m.param_count() } -> std::convertible_to<index_t>;
  { m.flops(tokens) } -> std::convertible_to<index_t>;
  { m.parameters() } -> std::same_as<std::vector<ParamInfo>>;
};

/// The scalar type of a map (void for maps without parameters, such as Shuffle).
template <class M>
using scalar_of = typename std::remove_cvref_t<M>::scalar_type;

/// A copy of `map` whose parameters point into `storage`, which must hold exactly
/// `map.param_count()` elements. Binding one map to a weight buffer and a copy to a gradient
/// buffer gives the (weights, grads) pair that forward/backward take.
template <LinearMap M, class T, class Space>
M bind(M map, const TensorView<T, 1, Space>& storage) {
  BONSAI_CHECK(storage.size() == map.param_count(), "bind: storage has ", storage.size(),
               " elements but the map has ", map.param_count(), " parameters");
  BONSAI_CHECK(storage.is_contiguous(), "bind: storage must be contiguous");
  map.bind(storage.data());
  return map;
}

namespace detail {

/// Checks a structure parameter and names the map in the message.
inline void check_positive(const char* map, const char* what, index_t v) {
  BONSAI_CHECK(v > 0, map, ": ", what, " must be positive, got ", v);
}
inline void check_divisible(const char* map, const char* what, index_t n, index_t blocks) {
  BONSAI_CHECK(n % blocks == 0, map, ": ", what, " = ", n, " is not divisible by blocks = ",
               blocks);
}

}  // namespace detail
}  // namespace bonsai
