// bonsai/train/token_shard.hpp — token shards on disk: llm.c's `.bin` (a header of 256 int32,
// [0] = 20240520, [1] = 1, [2] = token count, then the tokens as uint16) and nanoGPT's raw
// uint16 `train.bin`/`val.bin` (no header). Little-endian, as both projects write them.
#pragma once

#include <bit>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "../config.hpp"
#include "../core/error.hpp"

namespace bonsai {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian; this machine is not");

/// How a shard file is laid out.
enum class ShardFormat {
  llmc,     // llm.c: 1024-byte header (magic 20240520, version 1, count), uint16 tokens
  raw_u16,  // nanoGPT: uint16 tokens, no header
  detect,   // llmc when the file starts with llm.c's magic, else raw_u16
};

inline constexpr std::int32_t shard_magic = 20240520;
inline constexpr std::int32_t shard_version = 1;
inline constexpr std::int64_t shard_header_bytes = 256 * sizeof(std::int32_t);

inline const char* to_string(ShardFormat f) {
  switch (f) {
    case ShardFormat::llmc: return "llmc";
    case ShardFormat::raw_u16: return "raw-u16";
    case ShardFormat::detect: return "detect";
  }
  return "?";
}

/// "llmc", "raw-u16" or "detect"; anything else throws bonsai::Error.
inline ShardFormat shard_format_from_string(std::string_view s) {
  if (s == "llmc") return ShardFormat::llmc;
  if (s == "raw-u16") return ShardFormat::raw_u16;
  if (s == "detect") return ShardFormat::detect;
  detail::fail("unknown token shard format \"", s, "\" (expected llmc, raw-u16 or detect)");
}

namespace detail {

// Writes `tokens` in llm.c's format to path + ".tmp", then renames it over `path`, so a
// reader never sees a half-written shard.
template <class Token>
void write_token_shard_impl(const std::filesystem::path& path, std::span<const Token> tokens) {
  const std::string file = path.string();
  BONSAI_CHECK(tokens.size() <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
               "write_token_shard: ", file, ": ", tokens.size(),
               " tokens do not fit the header's int32 count");
  std::vector<std::uint16_t> data(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const auto t = static_cast<std::int64_t>(tokens[i]);
    BONSAI_CHECK(t >= 0 && t <= 65535, "write_token_shard: ", file, ": token ", t,
                 " at position ", i, " does not fit in uint16 (ids must be in [0, 65536))");
    data[i] = static_cast<std::uint16_t>(t);
  }
  std::int32_t header[256] = {};
  header[0] = shard_magic;
  header[1] = shard_version;
  header[2] = static_cast<std::int32_t>(tokens.size());

  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    BONSAI_CHECK(out, "write_token_shard: cannot create ", tmp.string());
    out.write(reinterpret_cast<const char*>(header), sizeof header);
    out.write(reinterpret_cast<const char*>(data.data()),
              static_cast<std::streamsize>(data.size() * sizeof(std::uint16_t)));
    out.close();
    BONSAI_CHECK(out, "write_token_shard: error writing ", tmp.string());
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  BONSAI_CHECK(!ec, "write_token_shard: cannot rename ", tmp.string(), " to ", file, ": ",
               ec.message());
}

// Where a shard's tokens start and how many there are, after checking the file's size.
struct ShardLayout {
  std::int64_t offset;  // bytes
  std::int64_t count;   // tokens
};

inline ShardLayout read_shard_layout(std::ifstream& in, const std::filesystem::path& path,
                                     ShardFormat format) {
  const std::string file = path.string();
  BONSAI_CHECK(in, "token shard ", file, ": cannot open");
  in.seekg(0, std::ios::end);
  const std::int64_t size = in.tellg();
  in.seekg(0);
  BONSAI_CHECK(size >= 0, "token shard ", file, ": cannot read its size");

  std::int32_t header[256] = {};
  bool has_magic = false;
  if (size >= shard_header_bytes) {
    in.read(reinterpret_cast<char*>(header), sizeof header);
    BONSAI_CHECK(in, "token shard ", file, ": cannot read the header");
    has_magic = header[0] == shard_magic;
  }
  if (format == ShardFormat::detect) format = has_magic ? ShardFormat::llmc : ShardFormat::raw_u16;

  if (format == ShardFormat::raw_u16) {
    BONSAI_CHECK(size % 2 == 0, "token shard ", file, ": raw uint16 file has an odd size (",
                 size, " bytes)");
    return {0, size / 2};
  }
  BONSAI_CHECK(size >= shard_header_bytes, "token shard ", file, ": ", size,
               " bytes is shorter than llm.c's 1024-byte header (truncated, or not a llm.c "
               "shard)");
  BONSAI_CHECK(has_magic, "token shard ", file, ": bad magic ", header[0], " (expected ",
               shard_magic, "; a headerless nanoGPT file needs format raw-u16)");
  BONSAI_CHECK(header[1] == shard_version, "token shard ", file, ": unsupported version ",
               header[1], " (expected ", shard_version, ")");
  const std::int64_t count = header[2];
  BONSAI_CHECK(count >= 0, "token shard ", file, ": negative token count ", count);
  const std::int64_t expected = shard_header_bytes + 2 * count;
  BONSAI_CHECK(size == expected, "token shard ", file, ": the header says ", count,
               " tokens, so the file should be ", expected, " bytes, but it is ", size,
               size < expected ? " (truncated)" : "");
  return {shard_header_bytes, count};
}

}  // namespace detail

/// Writes an llm.c shard (atomically: path.tmp, then rename). Throws bonsai::Error when a
/// token is outside [0, 65536) or the file cannot be written.
inline void write_token_shard(const std::filesystem::path& path,
                              std::span<const std::int32_t> tokens) {
  detail::write_token_shard_impl(path, tokens);
}
inline void write_token_shard(const std::filesystem::path& path,
                              std::span<const std::uint16_t> tokens) {
  detail::write_token_shard_impl(path, tokens);
}

/// The number of tokens in a shard, reading only its header (and checking the file size).
inline index_t token_shard_size(const std::filesystem::path& path,
                                ShardFormat format = ShardFormat::llmc) {
  std::ifstream in(path, std::ios::binary);
  return detail::read_shard_layout(in, path, format).count;
}

/// All the tokens of a shard. Throws bonsai::Error, naming the file, when it is missing,
/// truncated, or has the wrong magic, version or size.
inline std::vector<std::uint16_t> read_token_shard(const std::filesystem::path& path,
                                                   ShardFormat format = ShardFormat::llmc) {
  std::ifstream in(path, std::ios::binary);
  const auto [offset, count] = detail::read_shard_layout(in, path, format);
  std::vector<std::uint16_t> tokens(static_cast<std::size_t>(count));
  in.seekg(offset);
  in.read(reinterpret_cast<char*>(tokens.data()),
          static_cast<std::streamsize>(count * sizeof(std::uint16_t)));
  BONSAI_CHECK(in || count == 0, "token shard ", path.string(), ": cannot read its ", count,
               " tokens");
  return tokens;
}

}  // namespace bonsai
