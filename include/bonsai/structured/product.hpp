// bonsai/structured/product.hpp — Product<F0, ..., Fn>: the composition y = F0(F1(...Fn(x))),
// written and built as F0 * F1 * ... * Fn (the right factor is applied first, as in matrix
// notation), with W_merged = W0 W1 ... Wn. Products of products flatten, so BlockDense and
// BlockShuffle are plain type aliases. Parameters are named "<k>.<name>" with k the factor's
// position in application order (0 = applied first), and laid out in that order.
#pragma once

#include <string>
#include <tuple>
#include <utility>

#include "map.hpp"

namespace bonsai {

namespace detail {

template <class... Ts>
struct first_non_void {
  using type = void;
};
template <class T, class... Ts>
struct first_non_void<T, Ts...> {
  using type = std::conditional_t<std::is_void_v<T>, typename first_non_void<Ts...>::type, T>;
};

template <class... Fs>
constexpr bool chain_is_consistent() {
  constexpr index_t ins[] = {Fs::static_in...};
  constexpr index_t outs[] = {Fs::static_out...};
  for (std::size_t k = 0; k + 1 < sizeof...(Fs); ++k)
    if (static_mismatch(ins[k], outs[k + 1])) return false;
  return true;
}

}  // namespace detail

template <LinearMap... Fs>
class Product {
  static_assert(sizeof...(Fs) >= 2, "a Product composes at least two maps");
  static_assert(detail::chain_is_consistent<Fs...>(),
                "in a Product each factor's input width must equal the output width of the "
                "factor to its right (the right factor is applied first); these static extents "
                "differ");

 public:
  using scalar_type = typename detail::first_non_void<scalar_of<Fs>...>::type;
  static_assert(!std::is_void_v<scalar_type>, "a Product needs at least one factor with parameters");
  static_assert(((std::is_void_v<scalar_of<Fs>> || std::is_same_v<scalar_of<Fs>, scalar_type>) && ...),
                "all factors of a Product must use the same scalar type");
  static constexpr std::size_t size = sizeof...(Fs);
  using Factors = std::tuple<Fs...>;
  static constexpr index_t static_out = std::tuple_element_t<0, Factors>::static_out;
  static constexpr index_t static_in = std::tuple_element_t<size - 1, Factors>::static_in;

  explicit Product(Fs... factors) : m_factors(std::move(factors)...) {
    check_chain(std::make_index_sequence<size - 1>{});
  }

  /// Factor k in written order (0 = leftmost, applied last).
  template <std::size_t K>
  const auto& factor() const noexcept { return std::get<K>(m_factors); }
  template <std::size_t K>
  auto& factor() noexcept { return std::get<K>(m_factors); }
  const Factors& factors() const noexcept { return m_factors; }

  index_t in_features() const noexcept { return std::get<size - 1>(m_factors).in_features(); }
  index_t out_features() const noexcept { return std::get<0>(m_factors).out_features(); }
  index_t param_count() const noexcept {
    return std::apply([](const auto&... f) { return (index_t{0} + ... + f.param_count()); }, m_factors);
  }
  index_t flops(index_t tokens) const noexcept {
    return std::apply([&](const auto&... f) { return (index_t{0} + ... + f.flops(tokens)); }, m_factors);
  }
  std::vector<ParamInfo> parameters() const {
    std::vector<ParamInfo> out;
    for_each_applied([&](std::size_t step, const auto& f) {
      for (ParamInfo p : f.parameters()) {
        p.name = std::to_string(step) + "." + p.name;
        out.push_back(std::move(p));
      }
    });
    return out;
  }

  /// W_merged = W0 W1 ... Wn: (out, in).
  Matrix<scalar_type> to_dense() const {
    EigenRowMajor<scalar_type> w = dense_of(std::get<size - 1>(m_factors));
    for_each_applied([&](std::size_t step, const auto& f) {
      if (step > 0) w = (dense_of(f) * w).eval();
    });
    return to_matrix(w);
  }

  /// Binds the factors back to back, in application order.
  void bind(scalar_type* data) noexcept {
    for_each_applied([&](std::size_t, auto& f) {
      f.bind(data);
      if (data) data += f.param_count();
    });
  }
  bool is_bound() const noexcept {
    return std::apply([](const auto&... f) { return (f.is_bound() && ...); }, m_factors);
  }

  /// Calls f(step, factor) for every factor in application order (rightmost first).
  template <class F>
  void for_each_applied(F&& f) const {
    for_each_applied_impl(*this, f, std::make_index_sequence<size>{});
  }
  template <class F>
  void for_each_applied(F&& f) {
    for_each_applied_impl(*this, f, std::make_index_sequence<size>{});
  }

 private:
  template <class Self, class F, std::size_t... S>
  static void for_each_applied_impl(Self& self, F& f, std::index_sequence<S...>) {
    (f(S, std::get<size - 1 - S>(self.m_factors)), ...);
  }
  template <class F>
  static EigenRowMajor<scalar_type> dense_of(const F& f) {
    if constexpr (std::is_void_v<scalar_of<F>>)
      return as_eigen(f.template to_dense<scalar_type>());
    else
      return as_eigen(f.to_dense());
  }
  template <std::size_t... K>
  void check_chain(std::index_sequence<K...>) const {
    (check_link(std::get<K>(m_factors), std::get<K + 1>(m_factors), K), ...);
  }
  template <class L, class R>
  static void check_link(const L& left, const R& right, std::size_t k) {
    BONSAI_CHECK(left.in_features() == right.out_features(), "Product: factor ", k + 1,
                 " maps ", right.in_features(), " -> ", right.out_features(),
                 " features but factor ", k, " to its left takes ", left.in_features(),
                 " (shapes ", shape{right.out_features(), right.in_features()}, " and ",
                 shape{left.out_features(), left.in_features()}, ")");
  }

  Factors m_factors;
};

namespace detail {
template <class M>
auto factors_of(const M& m) {
  return std::tuple<M>(m);
}
template <class... Fs>
auto factors_of(const Product<Fs...>& p) {
  return p.factors();
}
}  // namespace detail

/// a * b: apply b, then a. Flattens nested products.
template <LinearMap A, LinearMap B>
auto operator*(const A& a, const B& b) {
  static_assert(!static_mismatch(A::static_in, B::static_out),
                "a * b applies b first, so b's output width must equal a's input width; the "
                "static extents of these two maps differ");
  return std::apply([](const auto&... f) { return Product<std::remove_cvref_t<decltype(f)>...>(f...); },
                    std::tuple_cat(detail::factors_of(a), detail::factors_of(b)));
}

}  // namespace bonsai
