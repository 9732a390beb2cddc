// safetensors: bit-exact round trips, the writer's layout (padding, '{', order, tiling), every
// reader rule on hand-made headers, and truncated or byte-flipped files that must throw, never crash.
#include <doctest/doctest.h>

#include "support/temp_dir.hpp"

#include <unistd.h>

#include <bonsai/core/rng.hpp>
#include <bonsai/train/safetensors.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

using namespace bonsai;
namespace fs = std::filesystem;

namespace {

using test::TempDir;

/// A file from a raw header text (padded with spaces to a multiple of 8 unless told not to) and
/// a data buffer.
std::vector<std::byte> make_file(const std::string& header, const std::vector<std::byte>& data,
                                 bool pad = true) {
  std::string h = header;
  if (pad) h.append((8 - h.size() % 8) % 8, ' ');
  const std::uint64_t n = h.size();
  std::vector<std::byte> out(8 + h.size());
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, h.data(), h.size());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<std::byte> zeros(std::size_t n) { return std::vector<std::byte>(n, std::byte{0}); }

/// The Error message of parsing `bytes`, or "" when it parses.
std::string parse_error(const std::vector<std::byte>& bytes, const std::string& origin = "t.st") {
  try {
    SafetensorsFile::from_bytes(bytes, origin);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

/// A small valid file with several dtypes, a scalar and a zero-size tensor.
struct Sample {
  std::vector<float> a{1.5f, -0.0f, std::numeric_limits<float>::denorm_min(), 3.25f, -7.0f, 1e30f};
  std::vector<double> b{0.1, -2.0, 1e-300};
  std::vector<std::int64_t> c{-1, std::numeric_limits<std::int64_t>::max()};
  std::vector<std::int32_t> d{7};
  std::vector<std::uint8_t> e{1, 2, 3, 255, 0};
  std::vector<std::uint16_t> bf{0x3fc0, 0xc000, 0x3e80};  // BF16 1.5, -2, 0.25
  std::vector<float> empty;

  SafetensorsWriter writer() const {
    SafetensorsWriter w;
    w.add<float>("layer.a", {2, 3}, a);
    w.add<double>("b", {3}, b);
    w.add<std::int64_t>("c", {2}, c);
    w.add<std::int32_t>("scalar", {}, d);
    w.add<std::uint8_t>("bytes", {5}, e);
    w.add("bf", Dtype::bf16, {3}, bf.data());
    w.add<float>("empty", {0, 4}, empty);
    w.metadata("note", "hello");
    return w;
  }
};

}  // namespace

TEST_CASE("safetensors: round trip is bit-exact for every dtype written") {
  TempDir dir("st_roundtrip");
  const Sample s;
  s.writer().write(dir.path / "x.safetensors");
  CHECK(fs::directory_iterator(dir.path) != fs::directory_iterator());
  for (const auto& e : fs::directory_iterator(dir.path))  // no temporary left behind
    CHECK(e.path().filename() == "x.safetensors");

  const SafetensorsFile f = SafetensorsFile::open(dir.path / "x.safetensors");
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("note") == "hello");
  CHECK(f.tensors().size() == 7);

  const std::vector<float> a = f.read_as<float>("layer.a", {2, 3});
  CHECK(std::memcmp(a.data(), s.a.data(), a.size() * 4) == 0);
  CHECK(std::signbit(a[1]));
  const std::vector<double> b = f.read_as<double>("b", {3});
  CHECK(std::memcmp(b.data(), s.b.data(), b.size() * 8) == 0);
  CHECK(f.read_as<std::int64_t>("c") == s.c);
  CHECK(f.tensor("scalar").shape.empty());
  CHECK(f.tensor("scalar").numel() == 1);
  CHECK(f.read_as<std::int32_t>("scalar") == s.d);
  CHECK(f.read_as<std::uint8_t>("bytes") == s.e);
  CHECK(f.tensor("bf").dtype == Dtype::bf16);
  CHECK(f.read_as<float>("bf") == std::vector<float>{1.5f, -2.0f, 0.25f});
  CHECK(f.tensor("empty").numel() == 0);
  CHECK(f.tensor("empty").shape == std::vector<index_t>{0, 4});
  CHECK(f.read_as<float>("empty", {0, 4}).empty());

  // Raw bytes are the caller's bytes.
  const SafeTensor& t = f.tensor("c");
  CHECK(t.bytes.size() == 16);
  CHECK(std::memcmp(t.bytes.data(), s.c.data(), 16) == 0);
}

TEST_CASE("safetensors: the header starts with a brace, is space-padded to 8, ordered and tiled") {
  TempDir dir("st_layout");
  Sample().writer().write(dir.path / "x.safetensors");
  const std::vector<std::byte> bytes = read_file_bytes(dir.path / "x.safetensors");
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, n);
  CHECK(header.front() == '{');
  const std::size_t close = header.find_last_of('}');
  CHECK(header.find_first_not_of(' ', close + 1) == std::string::npos);

  // Order: descending element size, then name; offsets tile the buffer from 0.
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(header);
  CHECK(j.begin().key() == "__metadata__");
  std::vector<std::string> names;
  std::uint64_t at = 0;
  for (const auto& [name, e] : j.items()) {
    if (name == "__metadata__") continue;
    names.push_back(name);
    CHECK(e["data_offsets"][0].get<std::uint64_t>() == at);
    at = e["data_offsets"][1].get<std::uint64_t>();
  }
  CHECK(names == std::vector<std::string>{"b", "c", "empty", "layer.a", "scalar", "bf", "bytes"});
  CHECK(8 + n + at == bytes.size());

  // Each tensor's data is aligned to its element size within the file.
  const SafetensorsFile f = SafetensorsFile::from_bytes(bytes, "x");
  for (const SafeTensor& t : f.tensors()) {
    const auto offset = std::size_t(t.bytes.data() - f.tensors().front().bytes.data()) + 8 + n;
    CHECK(offset % std::size_t(std::max(1, dtype_bits(t.dtype) / 8)) == 0);
  }
}

TEST_CASE("safetensors: F16, BF16 and F64 convert to float and double on load") {
  TempDir dir("st_convert");
  const std::vector<float> exact{1.5f, -2.0f, 0.25f, 0.0f, 65504.0f};
  const std::vector<double> wide{0.1, -3.0};
  SafetensorsWriter w;
  w.add_converted<float>("h", Dtype::f16, {5}, exact);
  w.add_converted<float>("bh", Dtype::bf16, {5}, std::vector<float>{1.5f, -2.0f, 0.25f, 0.0f, 65536.0f});
  w.add<double>("d", {2}, wide);
  w.add_converted<double>("df", Dtype::f32, {2}, wide);
  w.write(dir.path / "c.safetensors");
  const SafetensorsFile f = SafetensorsFile::open(dir.path / "c.safetensors");
  CHECK(f.tensor("h").dtype == Dtype::f16);
  CHECK(f.tensor("h").bytes.size() == 10);
  CHECK(f.read_as<float>("h") == exact);
  CHECK(f.read_as<double>("bh") == std::vector<double>{1.5, -2.0, 0.25, 0.0, 65536.0});
  CHECK(f.read_as<float>("d") == std::vector<float>{0.1f, -3.0f});
  CHECK(f.read_as<double>("df") == std::vector<double>{double(0.1f), -3.0});
  // BF16 rounds to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  SafetensorsWriter r;
  r.add_converted<float>("x", Dtype::bf16, {2}, std::vector<float>{1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f});
  r.write(dir.path / "r.safetensors");
  CHECK(SafetensorsFile::open(dir.path / "r.safetensors").read_as<float>("x") ==
        std::vector<float>{1.0f, 1.0f + 0x1p-6f});

  // Integer tensors are read raw, only as their own type; floats never as integers.
  CHECK_THROWS_AS(f.read_as<std::int32_t>("h"), Error);
  SafetensorsWriter iw;
  const std::vector<std::int32_t> ints{1, 2};
  iw.add<std::int32_t>("i", {2}, ints);
  iw.write(dir.path / "i.safetensors");
  const SafetensorsFile fi = SafetensorsFile::open(dir.path / "i.safetensors");
  CHECK_THROWS_AS(fi.read_as<float>("i"), Error);
  CHECK_THROWS_AS(fi.read_as<std::int64_t>("i"), Error);
  CHECK(fi.read_as<std::int32_t>("i") == ints);
}

TEST_CASE("safetensors: read checks the expected shape and the destination size") {
  TempDir dir("st_shape");
  Sample().writer().write(dir.path / "x.safetensors");
  const SafetensorsFile f = SafetensorsFile::open(dir.path / "x.safetensors");
  try {
    f.read_as<float>("layer.a", {3, 2});
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("x.safetensors") != std::string::npos);
    CHECK(msg.find("layer.a") != std::string::npos);
    CHECK(msg.find("(2, 3)") != std::string::npos);
    CHECK(msg.find("(3, 2)") != std::string::npos);
  }
  std::vector<float> small(5);
  CHECK_THROWS_AS(f.read_into<float>("layer.a", std::span<float>(small)), Error);
  CHECK_THROWS_AS(f.tensor("nope"), Error);
  CHECK(f.find("nope") == nullptr);
}

TEST_CASE("safetensors: legal corner cases load") {
  // No tensors at all, no metadata.
  const SafetensorsFile e = SafetensorsFile::from_bytes(make_file("{}", {}), "e");
  CHECK(e.tensors().empty());
  CHECK(e.metadata().empty());
  // Leading whitespace (current readers accept it), null metadata, two zero-size tensors at
  // the same offset, a scalar.
  const SafetensorsFile f = SafetensorsFile::from_bytes(
      make_file(R"(  {"__metadata__":null,"z1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                R"("s":{"dtype":"F64","shape":[],"data_offsets":[0,8]},)"
                R"("z2":{"dtype":"I8","shape":[3,0],"data_offsets":[8,8]},)"
                R"("h":{"dtype":"F16","shape":[1],"data_offsets":[8,10]}})",
                zeros(10)),
      "f");
  CHECK(f.tensors().size() == 4);
  CHECK(f.read_as<double>("s") == std::vector<double>{0.0});
  // Sub-byte dtypes are validated by bits: 4 F4 values are 2 bytes.
  CHECK_NOTHROW(SafetensorsFile::from_bytes(
      make_file(R"({"q":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}})", zeros(2)), "q"));
}

TEST_CASE("safetensors: every reader rule throws bonsai::Error naming the file and tensor") {
  auto expect = [](const std::vector<std::byte>& bytes, const std::string& needle) {
    const std::string msg = parse_error(bytes, "bad.safetensors");
    CAPTURE(needle);
    CAPTURE(msg);
    CHECK(!msg.empty());
    CHECK(msg.find("bad.safetensors") != std::string::npos);
    CHECK(msg.find(needle) != std::string::npos);
  };
  const auto entry = [](const std::string& name, const std::string& body) {
    return "{\"" + name + "\":" + body + "}";
  };
  // Sizes.
  expect(zeros(0), "shorter than");
  expect(zeros(7), "shorter than");
  {
    std::vector<std::byte> big = make_file("{}", {});
    const std::uint64_t n = 100'000'001;
    std::memcpy(big.data(), &n, 8);
    expect(big, "exceeds the limit");
  }
  {
    std::vector<std::byte> past = make_file("{}", {});
    const std::uint64_t n = 16;
    std::memcpy(past.data(), &n, 8);
    expect(past, "runs past the end");
  }
  // JSON.
  expect(make_file("{\"a\":", {}), "not valid UTF-8 JSON");
  expect(make_file("{\"a\xff\":{}}", {}), "not valid UTF-8 JSON");
  expect(make_file("[1, 2]", {}), "not a JSON object");
  expect(make_file(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", zeros(8)), "repeats the key 't'");
  expect(make_file(R"({"__metadata__":{"a":"1","a":"2"}})", {}), "repeats the key 'a'");
  expect(make_file(entry("t", R"({"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]})"), zeros(4)), "repeats the key 'dtype'");
  // Tensor entries.
  expect(make_file(entry("t", "3"), {}), "tensor 't'");
  expect(make_file(entry("t", R"({"shape":[1],"data_offsets":[0,4]})"), zeros(4)), "missing \"dtype\"");
  expect(make_file(entry("t", R"({"dtype":"F32","data_offsets":[0,4]})"), zeros(4)), "missing \"shape\"");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[1]})"), zeros(4)), "missing \"data_offsets\"");
  expect(make_file(entry("t", R"({"dtype":5,"shape":[1],"data_offsets":[0,4]})"), zeros(4)), "dtype is not a string");
  expect(make_file(entry("t", R"({"dtype":"F17","shape":[1],"data_offsets":[0,4]})"), zeros(4)), "unknown dtype 'F17'");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":1,"data_offsets":[0,4]})"), zeros(4)), "shape is not an array");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[1.0],"data_offsets":[0,4]})"), zeros(4)), "not a non-negative");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})"), zeros(4)), "not a non-negative");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":["1"],"data_offsets":[0,4]})"), zeros(4)), "not a non-negative");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]})"), zeros(4)), "not a non-negative");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]})"), zeros(4)), "overflows");
  expect(make_file(entry("t", R"({"dtype":"F4","shape":[3],"data_offsets":[0,2]})"), zeros(2)), "byte boundary");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[1],"data_offsets":[0]})"), zeros(4)), "data_offsets is not an array of two");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[1],"data_offsets":{"a":0}})"), zeros(4)), "data_offsets is not an array of two");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})"), zeros(4)), "begin <= end");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[1],"data_offsets":[4,0]})"), zeros(4)), "begin <= end");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})"), zeros(4)), "needs 8");
  // Tiling.
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})"), zeros(8)), "begins at byte 4");
  expect(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", zeros(12)), "tensor 'b' begins at byte 4");
  expect(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", zeros(12)), "tensor 'b' begins at byte 8");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})"), zeros(5)), "holds 5");
  expect(make_file(entry("t", R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})"), zeros(3)), "holds 3");
  // Metadata.
  expect(make_file(R"({"__metadata__":{"format":1}})", {}), "value of 'format' is not a string");
  expect(make_file(R"({"__metadata__":["pt"]})", {}), "__metadata__ is not an object");
}

TEST_CASE("safetensors: every truncation of a valid file throws") {
  TempDir dir("st_truncate");
  Sample().writer().write(dir.path / "x.safetensors");
  const std::vector<std::byte> bytes = read_file_bytes(dir.path / "x.safetensors");
  CHECK_NOTHROW(SafetensorsFile::from_bytes(bytes, "x"));
  for (std::size_t len = 0; len < bytes.size(); ++len) {
    CAPTURE(len);
    const std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + std::ptrdiff_t(len));
    CHECK_THROWS_AS(SafetensorsFile::from_bytes(prefix, "x"), Error);
  }
  // One byte too many fails as well; through a real file, too.
  std::vector<std::byte> longer = bytes;
  longer.push_back(std::byte{0});
  CHECK_THROWS_AS(SafetensorsFile::from_bytes(longer, "x"), Error);
  fs::resize_file(dir.path / "x.safetensors", bytes.size() - 1);
  CHECK_THROWS_AS(SafetensorsFile::open(dir.path / "x.safetensors"), Error);
  CHECK_THROWS_AS(SafetensorsFile::open(dir.path / "missing.safetensors"), Error);
}

TEST_CASE("safetensors: flipped bytes throw bonsai::Error or load, never crash") {
  TempDir dir("st_flip");
  Sample().writer().write(dir.path / "x.safetensors");
  const std::vector<std::byte> bytes = read_file_bytes(dir.path / "x.safetensors");
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  Rng rng(7);
  int errors = 0, loads = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (unsigned flip : {0x01u, 0x04u, 0x20u, 0x80u, unsigned(rng.next_u64() % 255 + 1)}) {
      std::vector<std::byte> b = bytes;
      b[i] ^= std::byte(flip);
      CAPTURE(i);
      CAPTURE(int(flip));
      try {
        const SafetensorsFile f = SafetensorsFile::from_bytes(std::move(b), "x");
        // Whatever loaded is self-consistent: every tensor can be read.
        for (const SafeTensor& t : f.tensors()) {
          std::size_t total = 0;
          if (dtype_bits(t.dtype) % 8 == 0)
            total = std::size_t(t.numel()) * std::size_t(dtype_bits(t.dtype) / 8);
          CHECK(t.bytes.size() == total);
        }
        ++loads;
        if (i < 8 + n) continue;  // header flips may still be valid (e.g. a renamed tensor)
      } catch (const Error&) {
        ++errors;
        CHECK(i < 8 + n);  // data bytes carry no structure: flipping them always loads
      }
    }
  }
  CHECK(errors > 0);
  CHECK(loads > 0);
}

TEST_CASE("safetensors: the writer rejects inconsistent tensors") {
  SafetensorsWriter w;
  const std::vector<float> v(6);
  w.add<float>("a", {2, 3}, v);
  CHECK_THROWS_AS(w.add<float>("a", {6}, v), Error);              // duplicate
  CHECK_THROWS_AS(w.add<float>("b", {2, 2}, v), Error);           // count
  CHECK_THROWS_AS(w.add<float>("__metadata__", {6}, v), Error);   // reserved
  CHECK_THROWS_AS(w.add("c", Dtype::f32, {-1, 2}, v.data()), Error);
  CHECK_THROWS_AS(w.add("d", Dtype::f4, {3}, v.data()), Error);    // 12 bits
  CHECK_THROWS_AS(w.add_converted<float>("e", Dtype::i32, {6}, v), Error);
  TempDir dir("st_writer");
  CHECK_THROWS_AS(w.write(dir.path / "no_such_dir" / "x.safetensors"), Error);
}
