// Token shards: llm.c's format (write, read, validation) and nanoGPT's raw uint16 files.
#include <doctest/doctest.h>

#include "support/errors.hpp"
#include "support/temp_dir.hpp"
#include <unistd.h>

#include <bonsai/train/token_shard.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace bonsai;
namespace fs = std::filesystem;

namespace {

using test::TempDir;

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

using test::error_of;

std::int32_t header_field(const std::string& bytes, int i) {
  std::int32_t v;
  std::memcpy(&v, bytes.data() + 4 * i, 4);
  return v;
}

void set_header_field(std::string& bytes, int i, std::int32_t v) { std::memcpy(bytes.data() + 4 * i, &v, 4); }

}  // namespace

TEST_CASE("token shard: write and read back, llm.c layout") {
  TempDir dir("rt");
  const fs::path path = dir.path / "train_000000.bin";
  const std::vector<std::int32_t> tokens = {0, 1, 50256, 65535, 7, 300, 42};
  write_token_shard(path, tokens);
  CHECK(!fs::exists(dir.path / "train_000000.bin.tmp"));

  const std::string bytes = read_bytes(path);
  REQUIRE(bytes.size() == 1024 + 2 * tokens.size());
  CHECK(header_field(bytes, 0) == 20240520);
  CHECK(header_field(bytes, 1) == 1);
  CHECK(header_field(bytes, 2) == 7);
  for (int i = 3; i < 256; ++i) CHECK(header_field(bytes, i) == 0);
  std::uint16_t third;
  std::memcpy(&third, bytes.data() + 1024 + 4, 2);
  CHECK(third == 50256);

  CHECK(token_shard_size(path) == 7);
  const std::vector<std::uint16_t> back = read_token_shard(path);
  CHECK(back == std::vector<std::uint16_t>(tokens.begin(), tokens.end()));
  CHECK(read_token_shard(path, ShardFormat::detect) == back);

  // uint16 input, overwriting the shard; an empty shard is valid too.
  const std::vector<std::uint16_t> small = {5, 6};
  write_token_shard(path, small);
  CHECK(read_token_shard(path) == small);
  write_token_shard(path, std::vector<std::int32_t>{});
  CHECK(read_token_shard(path).empty());
}

TEST_CASE("token shard: ids outside uint16 are refused on write") {
  TempDir dir("range");
  const fs::path path = dir.path / "s.bin";
  const std::string message =
      error_of([&] { write_token_shard(path, std::vector<std::int32_t>{1, 65536}); });
  CHECK(message.find("65536") != std::string::npos);
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK_THROWS_AS(write_token_shard(path, std::vector<std::int32_t>{-1}), Error);
  CHECK(!fs::exists(path));
  CHECK(!fs::exists(dir.path / "s.bin.tmp"));
  CHECK_THROWS_AS(write_token_shard(dir.path / "no" / "dir.bin", std::vector<std::int32_t>{1}), Error);
}

TEST_CASE("token shard: corrupt files throw bonsai::Error naming the file") {
  TempDir dir("bad");
  const fs::path good = dir.path / "good.bin", bad = dir.path / "bad.bin";
  write_token_shard(good, std::vector<std::int32_t>{1, 2, 3, 4});
  const std::string bytes = read_bytes(good);
  const auto fails = [&](const std::string& contents, const char* why) {
    write_bytes(bad, contents);
    const std::string message = error_of([&] { read_token_shard(bad); });
    INFO(why, ": ", message);
    CHECK(message.find(bad.string()) != std::string::npos);
    CHECK(message.find(why) != std::string::npos);
    CHECK_THROWS_AS(token_shard_size(bad), Error);
  };
  fails(bytes.substr(0, bytes.size() - 1), "truncated");      // last token cut in half
  fails(bytes.substr(0, 500), "header");                      // the header itself cut
  fails(bytes + "xx", "should be");                           // one token too many
  std::string wrong = bytes;
  set_header_field(wrong, 0, 20240801);
  fails(wrong, "magic");
  wrong = bytes;
  set_header_field(wrong, 1, 7);
  fails(wrong, "version");
  wrong = bytes;
  set_header_field(wrong, 2, -3);
  fails(wrong, "negative");
  CHECK(error_of([&] { read_token_shard(dir.path / "missing.bin"); }).find("missing.bin") !=
        std::string::npos);
}

TEST_CASE("token shard: nanoGPT raw uint16 files") {
  TempDir dir("raw");
  const fs::path path = dir.path / "train.bin";
  const std::vector<std::uint16_t> tokens = {10, 20, 30, 65535, 0};
  write_bytes(path, std::string(reinterpret_cast<const char*>(tokens.data()), 2 * tokens.size()));
  CHECK(read_token_shard(path, ShardFormat::raw_u16) == tokens);
  CHECK(read_token_shard(path, ShardFormat::detect) == tokens);  // no magic: raw
  CHECK(token_shard_size(path, ShardFormat::raw_u16) == 5);
  CHECK_THROWS_AS(read_token_shard(path), Error);  // llmc is the default: too short for a header
  write_bytes(path, "abc");
  CHECK_THROWS_AS(read_token_shard(path, ShardFormat::raw_u16), Error);  // odd size

  // A llm.c shard read as raw gives its header's words too: the format is never guessed
  // unless asked for.
  write_token_shard(path, tokens);
  CHECK(read_token_shard(path, ShardFormat::raw_u16).size() == 512 + tokens.size());
  CHECK(read_token_shard(path, ShardFormat::detect) == tokens);

  CHECK(shard_format_from_string("raw-u16") == ShardFormat::raw_u16);
  CHECK(shard_format_from_string("llmc") == ShardFormat::llmc);
  CHECK(std::string(to_string(ShardFormat::detect)) == "detect");
  CHECK_THROWS_AS(shard_format_from_string("npy"), Error);
}
