// Headers that claim more than their file holds (terabytes of tensors, billions of tokens) are
// rejected from the file's size before anything is allocated: were an allocation attempted, it
// would throw std::bad_alloc instead of the bonsai::Error these checks demand.
#include <doctest/doctest.h>

#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <bonsai/train/gpt2_io.hpp>
#include <bonsai/train/gpt_config_json.hpp>
#include <bonsai/train/growth.hpp>
#include <bonsai/train/safetensors.hpp>
#include <bonsai/train/token_shard.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

using namespace bonsai;
using test::error_of;
using test::TempDir;

namespace {
void write_bytes(const std::filesystem::path& path, const std::vector<std::int32_t>& header,
                 std::size_t tail_bytes) {
  std::vector<char> bytes(1024 + tail_bytes, 0);
  std::memcpy(bytes.data(), header.data(), header.size() * sizeof(std::int32_t));
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}
}  // namespace

TEST_CASE("file limits: a safetensors header claiming 4 TiB is rejected") {
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,4398046511104]}})";
  std::vector<std::byte> bytes(8 + header.size() + 16);
  const std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  const std::string msg = error_of([&] { (void)SafetensorsFile::from_bytes(bytes, "huge.safetensors"); });
  CHECK(msg.find("huge.safetensors") != std::string::npos);
  CHECK(msg != "(no bonsai::Error thrown)");
}

TEST_CASE("file limits: an llm.c header claiming terabytes of weights is rejected") {
  TempDir dir("limits_llmc");
  // 1024 layers of d_model 2^20: 12 * 2^40 * 2^10 floats, far past what the file holds.
  write_bytes(dir.path / "huge.bin", {20240326, 3, 1024, 50257, 1024, 16, 1 << 20, 50304}, 4096);
  const std::string msg = error_of([&] { (void)import_llmc(dir.path / "huge.bin"); });
  CHECK((msg.find("impossibly large") != std::string::npos || msg.find("implies") != std::string::npos));
}

TEST_CASE("file limits: a token shard claiming 2^31 tokens is rejected") {
  TempDir dir("limits_shard");
  write_bytes(dir.path / "huge.bin", {20240520, 1, 0x7fffffff}, 64);
  const std::string msg = error_of([&] { (void)read_token_shard(dir.path / "huge.bin"); });
  CHECK(msg.find("truncated") != std::string::npos);
  CHECK(error_of([&] { (void)token_shard_size(dir.path / "huge.bin"); }).find("truncated") !=
        std::string::npos);
}

TEST_CASE("file limits: configs and growth targets beyond 2^24 per extent are rejected") {
  const nlohmann::json j = {{"vocab_size", 50257}, {"n_positions", 1024}, {"n_embd", 1 << 30},
                            {"n_layer", 2}, {"n_head", 2}};
  CHECK(error_of([&] { (void)gpt_config_from_json(j); }).find("exceeds the limit") != std::string::npos);
  GptConfig start;
  start.vocab_size = 64, start.max_seq_len = 16, start.n_layer = 2, start.d_model = 32, start.n_head = 2;
  // Once an out-of-memory: a width map of 1.1e9 heads was built before anything was checked.
  const auto stages = parse_growth_schedule("5:ligo:d=64,heads=1110000004,ffn=256,layers=8");
  CHECK(error_of([&] { (void)plan_growth(start, stages, 100, {.seed = 1}); }).find("exceeds the limit") !=
        std::string::npos);
}
