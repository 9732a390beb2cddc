// Test helper: the message of the bonsai::Error that f() throws, for checks on its wording.
#pragma once

#include <bonsai/core/error.hpp>
#include <string>

namespace test {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const bonsai::Error& e) {
    return e.what();
  }
  return "(no bonsai::Error thrown)";
}

}  // namespace test
