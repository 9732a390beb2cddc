// bonsai/core/error.hpp — bonsai::Error, the one exception type, and the checks that throw it.
// Shape errors name both shapes, e.g. "forward: x has shape (2048, 512) but LowRank takes 768
// input features".
#pragma once

#include <initializer_list>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "../config.hpp"

namespace bonsai {

/// Thrown for every error only the run can detect: shape mismatches, invalid structure
/// parameters, unbound parameters, corrupt files.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A shape to print in an error message: shape{2048, 768} prints as "(2048, 768)".
struct shape {
  template <class... I>
  shape(I... extents) : rank(sizeof...(I)), dims{static_cast<index_t>(extents)...} {
    static_assert(sizeof...(I) <= 4, "shape prints at most four extents");
  }
  int rank;
  index_t dims[4];
  friend std::ostream& operator<<(std::ostream& os, const shape& s) {
    os << '(';
    for (int i = 0; i < s.rank; ++i) os << (i ? ", " : "") << s.dims[i];
    return os << ')';
  }
};

namespace detail {

/// A run-time shape as text: "(3, 4)"; "()" for a scalar.
inline std::string shape_string(std::span<const index_t> dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

/// One part of an error message as text: strings as they are, anything else as a stream
/// prints it.
inline std::string message_part(std::string_view s) { return std::string(s); }
inline std::string message_part(const char* s) { return s; }
inline std::string message_part(const std::string& s) { return s; }
template <class T>
std::string message_part(const T& value) {
  std::ostringstream os;
  os << value;
  return os.str();
}

/// Throws Error with the parts joined (one out-of-line function for every message).
[[noreturn, gnu::noinline]] inline void throw_error(std::initializer_list<std::string> parts) {
  std::string message;
  for (const std::string& p : parts) message += p;
  throw Error(message);
}

/// Throws Error with the message parts; arguments are taken by value, so that string literals
/// of every length share one instantiation per argument pattern.
template <class... Parts>
[[noreturn]] void fail(Parts... parts) {
  throw_error({message_part(parts)...});
}

/// `static_assert(dependent_false<T>, "...")` fails only when the template is instantiated.
template <class...>
inline constexpr bool dependent_false = false;

}  // namespace detail

/// Throws bonsai::Error with the streamed message parts when `cond` is false.
#define BONSAI_CHECK(cond, ...)                          \
  do {                                                   \
    if (!(cond)) ::bonsai::detail::fail(__VA_ARGS__);    \
  } while (0)

}  // namespace bonsai
