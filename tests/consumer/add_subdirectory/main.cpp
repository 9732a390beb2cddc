#include <bonsai/bonsai.hpp>

#include <cstdio>

int main() {
  std::printf("bonsai %s (add_subdirectory)\n", bonsai::version_string());
  return 0;
}
