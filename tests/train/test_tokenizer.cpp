// Tokenizers: ByteTokenizer, Gpt2Tokenizer on the real GPT-2 files (scripts/fetch_data.sh) and on
// tiny hand-written vocabularies, load_tokenizer, and errors for bad tokenizer files.
#include <doctest/doctest.h>

#include "support/errors.hpp"
#include "support/temp_dir.hpp"
#include <unistd.h>

#include <bonsai/core/rng.hpp>
#include <bonsai/train/gpt2_tokenizer.hpp>
#include <bonsai/train/load_tokenizer.hpp>
#include <bonsai/train/tokenizer.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace bonsai;
namespace fs = std::filesystem;

namespace {

using Ids = std::vector<std::int32_t>;

using test::TempDir;

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

using test::error_of;

fs::path gpt2_dir() { return fs::path(BONSAI_SOURCE_DIR) / "data" / "gpt2"; }

/// GPT-2's tokenizer, loaded once for all tests. Fails the test when the files are missing.
const Gpt2Tokenizer* gpt2() {
  static const std::unique_ptr<Gpt2Tokenizer> tok = [] {
    std::unique_ptr<Gpt2Tokenizer> t;
    if (fs::exists(gpt2_dir() / "encoder.json") && fs::exists(gpt2_dir() / "vocab.bpe"))
      t = std::make_unique<Gpt2Tokenizer>(gpt2_dir());
    return t;
  }();
  if (!tok) FAIL("GPT-2 tokenizer files missing in ", gpt2_dir().string(), ": run scripts/fetch_data.sh");
  return tok.get();
}

/// A tiny BPE vocabulary in GPT-2's file format: ids 0..255 are the bytes, then one token per
/// merge in order, then <|endoftext|>.
void write_tiny_vocab(const fs::path& dir, const std::vector<std::pair<std::string, std::string>>& merges) {
  const auto& alphabet = detail::Gpt2ByteAlphabet::get();
  const auto spelled = [&](const std::string& bytes) {
    std::string s;
    for (const char c : bytes) s += alphabet.utf8(static_cast<unsigned char>(c));
    return s;
  };
  nlohmann::json encoder = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) encoder[spelled(std::string(1, static_cast<char>(b)))] = b;
  std::string bpe = "#version: 0.2\n";
  int id = 256;
  for (const auto& [a, b] : merges) {
    encoder[spelled(a + b)] = id++;
    bpe += spelled(a) + " " + spelled(b) + "\n";
  }
  encoder["<|endoftext|>"] = id;
  write_file(dir / "encoder.json", encoder.dump());
  write_file(dir / "vocab.bpe", bpe);
}

}  // namespace

TEST_CASE("byte tokenizer: every byte is a token, 256 is end-of-text") {
  const ByteTokenizer tok;
  CHECK(tok.vocab_size() == 257);
  CHECK(tok.eot_token() == 256);
  CHECK(tok.name() == "byte");
  CHECK(tok.encode("Hi\n") == Ids{72, 105, 10});
  CHECK(tok.encode(std::string("\xff\x00z", 3)) == Ids{255, 0, 122});
  CHECK(tok.decode_token(256) == "<|endoftext|>");
  CHECK(tok.encode("a<|endoftext|>b", Special::allow) == Ids{97, 256, 98});
  CHECK(tok.encode("a<|endoftext|>b").size() == 15);
  CHECK_THROWS_AS(tok.decode_token(257), Error);
  CHECK_THROWS_AS(tok.decode_token(-1), Error);

  Rng rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::string s(static_cast<std::size_t>(rng.next_u64() % 100), '\0');
    for (char& c : s) c = static_cast<char>(rng.next_u64() & 0xFF);
    const Ids ids = tok.encode(s);
    CHECK(ids.size() == s.size());
    CHECK(tok.decode(ids) == s);
  }
}

TEST_CASE("gpt2 tokenizer: known ids from GPT-2's vocabulary") {
  const Gpt2Tokenizer& tok = *gpt2();
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.eot_token() == 50256);
  CHECK(tok.name() == "gpt2");
  CHECK(tok.encode("Hello world") == Ids{15496, 995});
  CHECK(tok.encode(" Hello") == Ids{18435});
  CHECK(tok.encode(" the") == Ids{262});
  CHECK(tok.encode("the") == Ids{1169});
  CHECK(tok.encode("\n") == Ids{198});
  CHECK(tok.encode("\n\n") == Ids{628});
  CHECK(tok.encode(" ") == Ids{220});
  CHECK(tok.encode("don't") == Ids{9099, 470});
  CHECK(tok.encode("") == Ids{});
  CHECK(tok.decode_token(50256) == "<|endoftext|>");
  CHECK(tok.decode_token(15496) == "Hello");
  CHECK(tok.decode_token(995) == " world");
  CHECK_THROWS_AS(tok.decode_token(50257), Error);
  CHECK_THROWS_AS(tok.decode_token(-1), Error);
}

TEST_CASE("gpt2 tokenizer: <|endoftext|> is text unless Special::allow") {
  const Gpt2Tokenizer& tok = *gpt2();
  const Ids as_text = tok.encode("<|endoftext|>");
  CHECK(as_text == Ids{27, 91, 437, 1659, 5239, 91, 29});
  CHECK(tok.decode(as_text) == "<|endoftext|>");
  CHECK(tok.encode("<|endoftext|>", Special::allow) == Ids{50256});
  CHECK(tok.encode("Hello world<|endoftext|> the", Special::allow) == Ids{15496, 995, 50256, 262});
  CHECK(tok.decode(Ids{15496, 50256, 262}) == "Hello<|endoftext|> the");
}

TEST_CASE("gpt2 tokenizer: pre-tokenizer pieces (whitespace runs, contractions, digits)") {
  const Gpt2Tokenizer& tok = *gpt2();
  // "\n\n" before a word is two pieces: \s+(?!\S) leaves the last whitespace to the next piece.
  CHECK(tok.encode("a\n\nb") == Ids{64, 198, 198, 65});
  CHECK(tok.encode("Hello  world") == Ids{15496, 220, 995});
  // Pieces never merge across the pattern: ' s' is not "'s".
  CHECK(tok.encode("it's") == Ids{270, 338});
  CHECK(tok.encode("2024") == Ids{1238, 1731});
}

TEST_CASE("gpt2 tokenizer: decode(encode(x)) == x for arbitrary text and bytes") {
  const Gpt2Tokenizer& tok = *gpt2();
  const std::vector<std::string> samples = {
      "Hello world", "don't you're we've I'm they'll he'd it's", "\n\n", "  \t \n  \r\n",
      "trailing spaces   ", "   leading", "😀 emoji 🎉🎉 and 👨‍👩‍👧 zwj", "日本語のテキスト、中文文本。",
      "Ünïcödé çàfé naïve — “quotes” «guillemets»", "x = 3.14159 * (a + b) // 2e10;",
      "tab\tseparated\tvalues", "mixed123abc456", std::string("nul\0byte", 8),
      "\xff\xfe invalid \xc3 utf8 \xe2\x82", "\xed\xa0\x80 surrogate \xf4\x90\x80\x80 too big",
      "<|endoftext|><|endoftext|>", "'''''", "a", ""};
  for (const std::string& s : samples) {
    const Ids ids = tok.encode(s);
    CHECK(tok.decode(ids) == s);
    for (const std::int32_t id : ids) CHECK((id >= 0 && id < tok.vocab_size()));
  }

  Rng rng(2024);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(static_cast<std::size_t>(rng.next_u64() % 64), '\0');
    for (char& c : s) c = static_cast<char>(rng.next_u64() & 0xFF);
    CHECK(tok.decode(tok.encode(s)) == s);
  }
  // One long piece (BPE over a heap stays fast), and a long whitespace run.
  std::string letters(100000, 'a');
  for (char& c : letters) c = static_cast<char>('a' + rng.next_u64() % 26);
  CHECK(tok.decode(tok.encode(letters)) == letters);
  const std::string spaces(100000, ' ');
  CHECK(tok.encode(spaces) == Ids(100000, 220));  // GPT-2 has no multi-space tokens
  // Random printable ASCII and whitespace, which makes many pieces.
  const std::string alphabet = "abc XYZ 09 '.,!? \n\t";
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(static_cast<std::size_t>(rng.next_u64() % 80), ' ');
    for (char& c : s) c = alphabet[rng.next_u64() % alphabet.size()];
    CHECK(tok.decode(tok.encode(s)) == s);
  }
}

TEST_CASE("gpt2 tokenizer: decode_token streams the same bytes as decode") {
  const Gpt2Tokenizer& tok = *gpt2();
  const std::string text = "Streaming 日本語 ok";
  const Ids ids = tok.encode(text);
  std::string streamed;
  for (const std::int32_t id : ids) streamed += tok.decode_token(id);
  CHECK(streamed == text);
  // Three 3-byte characters take six tokens: some tokens hold part of a character.
  CHECK(tok.encode("日本語") == Ids{33768, 98, 17312, 105, 45739, 252});
  CHECK(tok.decode_token(98).size() == 1);
}

TEST_CASE("gpt2 tokenizer: BPE applies merges by rank on a hand-written vocabulary") {
  TempDir dir("rank");
  // ids: bytes 0..255, then "ab" 256, "abc" 257, "bc" 258, "aa" 259, "aaaa" 260, eot 261.
  write_tiny_vocab(dir.path, {{"a", "b"}, {"ab", "c"}, {"b", "c"}, {"a", "a"}, {"aa", "aa"}});
  const Gpt2Tokenizer tok(dir.path);
  CHECK(tok.vocab_size() == 262);
  CHECK(tok.eot_token() == 261);
  CHECK(tok.encode("abc") == Ids{257});
  CHECK(tok.encode("bcab") == Ids{258, 256});  // a b (rank 0) first, then b c
  CHECK(tok.encode("aaa") == Ids{259, 'a'});    // left to right, no overlap
  CHECK(tok.encode("aaaa") == Ids{260});
  CHECK(tok.encode("aaaaa") == Ids{260, 'a'});
  CHECK(tok.encode("abc abc") == Ids{257, ' ', 257});  // " abc" is one piece; no merge for ' '
  CHECK(tok.decode(Ids{257, 258, 261}) == "abcbc<|endoftext|>");

  // The same merges with "b c" ranked first: "abc" now becomes a + bc.
  TempDir other("rank2");
  write_tiny_vocab(other.path, {{"b", "c"}, {"a", "b"}, {"ab", "c"}});
  const Gpt2Tokenizer tok2(other.path);
  CHECK(tok2.encode("abc") == Ids{'a', 256});
  CHECK(tok2.encode("abd") == Ids{257, 'd'});
}

TEST_CASE("gpt2 tokenizer: load_tokenizer picks by spec") {
  CHECK(load_tokenizer("byte")->vocab_size() == 257);
  TempDir dir("load");
  write_tiny_vocab(dir.path, {{"a", "b"}});
  const auto tok = load_tokenizer(dir.path.string());
  CHECK(tok->name() == "gpt2");
  CHECK(tok->encode("ab") == Ids{256});
  CHECK(error_of([&] { load_tokenizer("no/such/dir"); }).find("no/such/dir") != std::string::npos);
}

TEST_CASE("gpt2 tokenizer: bad files throw bonsai::Error naming the file") {
  TempDir dir("bad");
  const fs::path enc = dir.path / "encoder.json", bpe = dir.path / "vocab.bpe";
  const auto reset = [&] { write_tiny_vocab(dir.path, {{"a", "b"}, {"ab", "c"}}); };
  const auto load = [&] { Gpt2Tokenizer tok(dir.path); };
  const auto error_names = [&](const fs::path& file) {
    const std::string message = error_of(load);
    INFO(message);
    CHECK(message.find(file.string()) != std::string::npos);
  };
  reset();
  CHECK_NOTHROW(load());

  SUBCASE("missing files") {
    fs::remove(enc);
    error_names(enc);
    reset();
    fs::remove(bpe);
    error_names(bpe);
  }
  SUBCASE("truncated encoder.json") {
    const std::string text = read_file(enc);
    write_file(enc, text.substr(0, text.size() / 2));
    error_names(enc);
  }
  SUBCASE("encoder.json is not an object") {
    write_file(enc, "[1, 2, 3]");
    error_names(enc);
  }
  SUBCASE("encoder.json id of the wrong type, out of range, or repeated") {
    auto json = nlohmann::json::parse(read_file(enc));
    json["ab"] = "256";
    write_file(enc, json.dump());
    error_names(enc);
    json["ab"] = 100000;
    write_file(enc, json.dump());
    error_names(enc);
    json["ab"] = 5;
    write_file(enc, json.dump());
    error_names(enc);
  }
  SUBCASE("encoder.json without <|endoftext|> or without a byte") {
    auto json = nlohmann::json::parse(read_file(enc));
    json.erase("<|endoftext|>");
    json["xyz"] = 258;
    write_file(enc, json.dump());
    error_names(enc);
    json.erase("xyz");
    json.erase("a");
    json["<|endoftext|>"] = 97;
    write_file(enc, json.dump());
    error_names(enc);
  }
  SUBCASE("merge with a token not in the encoder") {
    write_file(bpe, "#version: 0.2\na b\nab q\n");
    error_names(bpe);
  }
  SUBCASE("merge using a token before a merge makes it, or making a token twice") {
    write_file(bpe, "#version: 0.2\nab c\na b\n");
    error_names(bpe);
    write_file(bpe, "#version: 0.2\na b\na b\n");
    error_names(bpe);
  }
  SUBCASE("malformed merge line") {
    write_file(bpe, "#version: 0.2\na b\nabc\n");
    error_names(bpe);
  }
  SUBCASE("missing #version line") {
    write_file(bpe, "a b\nab c\n");
    error_names(bpe);
  }
  SUBCASE("wrong number of merges") {
    write_file(bpe, "#version: 0.2\na b\n");
    error_names(bpe);
  }
  SUBCASE("empty vocab.bpe") {
    write_file(bpe, "");
    error_names(bpe);
  }
}

TEST_CASE("gpt2 tokenizer: a truncated copy of the real encoder.json is rejected") {
  const Gpt2Tokenizer& real = *gpt2();
  CHECK(real.vocab_size() == 50257);
  TempDir dir("real");
  const std::string text = read_file(gpt2_dir() / "encoder.json");
  write_file(dir.path / "encoder.json", text.substr(0, 100000));
  fs::copy_file(gpt2_dir() / "vocab.bpe", dir.path / "vocab.bpe");
  CHECK_THROWS_AS(Gpt2Tokenizer(dir.path), Error);
  // The full encoder with a truncated vocab.bpe: too few merges.
  write_file(dir.path / "encoder.json", text);
  const std::string merges = read_file(gpt2_dir() / "vocab.bpe");
  write_file(dir.path / "vocab.bpe", merges.substr(0, merges.size() / 2));
  CHECK_THROWS_AS(Gpt2Tokenizer(dir.path), Error);
}
