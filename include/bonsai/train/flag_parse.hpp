// bonsai/train/flag_parse.hpp — the pieces the trainer's compound flags (--grow, --grow-lr,
// --sat-ladder) are parsed with: a non-negative step or size, a positive real number, and a
// split on one separator.
// Errors name the flag and the field.
#pragma once

#include <charconv>
#include <cmath>
#include <string_view>
#include <vector>

#include "../core/error.hpp"

namespace bonsai::detail {

/// A non-negative integer below 2^40, or an error naming `flag` and `what`.
inline index_t parse_size(std::string_view s, std::string_view flag, std::string_view what) {
  index_t v = 0;
  BONSAI_CHECK(!s.empty(), flag, ": ", what, " has no value");
  for (char c : s) {
    BONSAI_CHECK(c >= '0' && c <= '9', flag, ": ", what, " = '", s,
                 "' is not a non-negative integer");
    BONSAI_CHECK(v < (index_t(1) << 40), flag, ": ", what, " = '", s, "' is too large");
    v = v * 10 + (c - '0');
  }
  return v;
}

/// A finite number > 0 (e.g. 2e-4), or an error naming `flag` and `what`.
inline double parse_positive(std::string_view s, std::string_view flag, std::string_view what) {
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  BONSAI_CHECK(!s.empty() && ec == std::errc() && end == s.data() + s.size() && std::isfinite(v) &&
                   v > 0,
               flag, ": ", what, " = '", s, "' is not a positive number");
  return v;
}

/// The fields of `s` between the separators (one empty field for an empty string).
inline std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (std::size_t b = 0;;) {
    const std::size_t e = s.find(sep, b);
    out.push_back(s.substr(b, e == std::string_view::npos ? s.npos : e - b));
    if (e == std::string_view::npos) return out;
    b = e + 1;
  }
}

}  // namespace bonsai::detail
