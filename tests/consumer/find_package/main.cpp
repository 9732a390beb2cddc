#include <bonsai/bonsai.hpp>

#include <cstdio>

int main() {
  std::printf("bonsai %s (find_package)\n", bonsai::version_string());
  return 0;
}
