// fuzz/fuzz.hpp — what every libFuzzer target shares: the rule that bad input may only end in a
// bonsai::Error (any other exception escapes and libFuzzer reports it as a crash), a private
// scratch folder for readers that take paths, and a check that aborts with a sentence.
#pragma once

#include <unistd.h>

#include <bonsai/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace bonsai::fuzz {

/// Runs `f`; a bonsai::Error is the expected outcome of bad input and is swallowed (printed
/// when BONSAI_FUZZ_VERBOSE is set, to see why a corpus file is rejected).
template <class F>
int errors_only(F&& f) {
  static const bool verbose = std::getenv("BONSAI_FUZZ_VERBOSE") != nullptr;
  try {
    f();
  } catch (const bonsai::Error& e) {
    if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
  }
  return 0;  // libFuzzer's convention: the input was processed
}

/// Aborts (which libFuzzer reports, saving the input) when `ok` is false.
inline void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz: property violated: %s\n", what);
  std::abort();
}

/// This process's scratch folder, created on first use and removed at exit.
inline const std::filesystem::path& scratch() {
  struct Folder {
    std::filesystem::path path = std::filesystem::temp_directory_path() /
                                 ("bonsai-fuzz-" + std::to_string(::getpid()));
    Folder() { std::filesystem::create_directories(path); }
    ~Folder() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Folder folder;
  return folder.path;
}

/// Writes `bytes` to scratch()/name (replacing it) and returns the path.
inline std::filesystem::path write_scratch(std::string_view name, std::string_view bytes) {
  const std::filesystem::path path = scratch() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  require(static_cast<bool>(out), "the scratch file could be written");
  return path;
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace bonsai::fuzz
