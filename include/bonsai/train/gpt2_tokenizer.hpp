// bonsai/train/gpt2_tokenizer.hpp — Gpt2Tokenizer: GPT-2's byte-level BPE, read from OpenAI's
// encoder.json (token string -> id) and vocab.bpe (merges, best first). Ids match GPT-2's:
// "Hello world" -> [15496, 995], "<|endoftext|>" is 50256. Needs PCRE2 (link -lpcre2-8).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <queue>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#ifndef PCRE2_CODE_UNIT_WIDTH
#  define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "../core/error.hpp"
#include "tokenizer.hpp"

namespace bonsai {

namespace detail {

/// GPT-2's byte <-> character alphabet: printable Latin-1 bytes ('!'..'~', U+00A1..U+00AC,
/// U+00AE..U+00FF) stand for themselves; the other 68 bytes map, in order, to U+0100..U+0143.
/// Tokens in encoder.json and vocab.bpe are written in this alphabet, e.g. "Ġt" is " t".
struct Gpt2ByteAlphabet {
  std::array<std::uint32_t, 256> code_point{};  // byte -> code point
  std::array<int, 324> byte_of{};               // code point -> byte, -1 if none

  Gpt2ByteAlphabet() {
    byte_of.fill(-1);
    std::uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      code_point[b] = printable ? static_cast<std::uint32_t>(b) : next++;
      byte_of[code_point[b]] = b;
    }
  }

  static const Gpt2ByteAlphabet& get() {
    static const Gpt2ByteAlphabet alphabet;
    return alphabet;
  }

  /// The UTF-8 string of the character that stands for byte b.
  std::string utf8(unsigned char b) const {
    const std::uint32_t c = code_point[b];
    if (c < 0x80) return std::string(1, static_cast<char>(c));
    return {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
  }

  /// Decodes a token written in the alphabet to its bytes; false if it holds another
  /// character (or is not UTF-8).
  bool to_bytes(std::string_view s, std::string& bytes) const {
    bytes.clear();
    for (std::size_t i = 0; i < s.size();) {
      const auto c0 = static_cast<unsigned char>(s[i]);
      std::uint32_t c = c0;
      if (c0 >= 0x80) {  // the alphabet needs at most two-byte sequences
        if ((c0 & 0xE0) != 0xC0 || i + 1 >= s.size()) return false;
        const auto c1 = static_cast<unsigned char>(s[i + 1]);
        if ((c1 & 0xC0) != 0x80) return false;
        c = ((c0 & 0x1Fu) << 6) | (c1 & 0x3Fu);
        ++i;
      }
      ++i;
      if (c >= byte_of.size() || byte_of[c] < 0) return false;
      bytes.push_back(static_cast<char>(byte_of[c]));
    }
    return !bytes.empty();
  }
};

inline std::string read_tokenizer_file(const std::filesystem::path& path, const char* who) {
  std::ifstream in(path, std::ios::binary);
  BONSAI_CHECK(in, who, ": cannot open ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  BONSAI_CHECK(!in.bad(), who, ": error reading ", path.string());
  return std::move(ss).str();
}

struct Pcre2CodeFree {
  void operator()(pcre2_code_8* p) const noexcept { pcre2_code_free_8(p); }
};
struct Pcre2MatchDataFree {
  void operator()(pcre2_match_data_8* p) const noexcept { pcre2_match_data_free_8(p); }
};

}  // namespace detail

/// GPT-2's tokenizer. Text is first split by GPT-2's pattern
///   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
/// (PCRE2, Unicode properties), then each piece's bytes are merged by BPE, lowest merge rank
/// first. Encoding is lossless for every byte string: bytes that are not valid UTF-8 cannot be
/// matched by the pattern and become pieces of their own between the matches (GPT-2 itself
/// only ever sees valid text), so decode(encode(x)) == x always. "<|endoftext|>" in the input
/// is ordinary text unless encode is called with Special::allow.
///
/// Thread-safe: encode may be called concurrently (the word cache takes a lock).
class Gpt2Tokenizer final : public Tokenizer {
 public:
  /// Reads dir/encoder.json and dir/vocab.bpe.
  explicit Gpt2Tokenizer(const std::filesystem::path& dir)
      : Gpt2Tokenizer(dir / "encoder.json", dir / "vocab.bpe") {}

  /// Throws bonsai::Error, naming the file, when a file is missing or malformed.
  Gpt2Tokenizer(const std::filesystem::path& encoder_json, const std::filesystem::path& vocab_bpe)
      : m_cache(std::make_unique<Cache>()) {
    const nlohmann::json encoder = load_encoder(encoder_json);
    load_merges(vocab_bpe, encoder, encoder_json);
    compile_pattern();
  }

  std::string_view name() const override { return "gpt2"; }
  std::int32_t vocab_size() const override { return static_cast<std::int32_t>(m_bytes.size()); }
  std::int32_t eot_token() const override { return m_eot; }

  std::string_view decode_token(std::int32_t id) const override {
    BONSAI_CHECK(id >= 0 && id < vocab_size(), "Gpt2Tokenizer: token id ", id,
                 " is outside the vocabulary [0, ", vocab_size(), ")");
    return m_bytes[static_cast<std::size_t>(id)];
  }

  void encode_ordinary(std::string_view text, std::vector<std::int32_t>& out) const override {
    if (text.empty()) return;
    const std::unique_ptr<pcre2_match_data_8, detail::Pcre2MatchDataFree> match(
        pcre2_match_data_create_from_pattern_8(m_pattern.get(), nullptr));
    BONSAI_CHECK(match, "Gpt2Tokenizer: out of memory");
    const auto* subject = reinterpret_cast<PCRE2_SPTR8>(text.data());
    const std::size_t n = text.size();
    std::size_t at = 0;
    while (at < n) {
      const int rc = pcre2_match_8(m_pattern.get(), subject, n, at, 0, match.get(), nullptr);
      std::size_t begin = n, end = n;
      if (rc >= 0) {
        const PCRE2_SIZE* span = pcre2_get_ovector_pointer_8(match.get());
        begin = span[0];
        end = span[1];
        BONSAI_CHECK(end > begin, "Gpt2Tokenizer: the pre-tokenizer matched an empty piece");
      } else {
        BONSAI_CHECK(rc == PCRE2_ERROR_NOMATCH, "Gpt2Tokenizer: PCRE2 match error ", rc);
      }
      if (begin > at) encode_piece(text.substr(at, begin - at), out);  // unmatched bytes
      if (end > begin) encode_piece(text.substr(begin, end - begin), out);
      at = end;
    }
  }

 private:
  struct Merge {
    std::int32_t rank;
    std::int32_t id;  // the merged token
  };
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  // Pieces already encoded. Cleared when full; long pieces are not kept.
  struct Cache {
    static constexpr std::size_t max_entries = 1 << 18;
    static constexpr std::size_t max_piece_bytes = 64;
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>> pieces;
  };

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }

  // Reads the token strings into m_bytes; returns the parsed file for load_merges.
  nlohmann::json load_encoder(const std::filesystem::path& path) {
    const std::string file = path.string();
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(detail::read_tokenizer_file(path, "Gpt2Tokenizer"));
    } catch (const nlohmann::json::exception& e) {
      detail::fail("Gpt2Tokenizer: ", file, " is not valid JSON: ", e.what());
    }
    BONSAI_CHECK(json.is_object(), "Gpt2Tokenizer: ", file,
                 " must hold a JSON object mapping token strings to ids");
    const std::size_t size = json.size();
    BONSAI_CHECK(size > 257 && size <= std::numeric_limits<std::int32_t>::max(),
                 "Gpt2Tokenizer: ", file, " has ", size,
                 " tokens; a byte-level BPE vocabulary needs more than 257");
    const auto& alphabet = detail::Gpt2ByteAlphabet::get();
    m_bytes.assign(size, std::string());
    std::vector<bool> seen(size, false);
    std::string bytes;
    for (const auto& [key, value] : json.items()) {
      BONSAI_CHECK(value.is_number_integer(), "Gpt2Tokenizer: ", file, ": the id of token \"",
                   key, "\" is not an integer");
      const auto id = value.get<std::int64_t>();
      BONSAI_CHECK(id >= 0 && id < static_cast<std::int64_t>(size), "Gpt2Tokenizer: ", file,
                   ": token \"", key, "\" has id ", id, ", outside [0, ", size, ")");
      BONSAI_CHECK(!seen[static_cast<std::size_t>(id)], "Gpt2Tokenizer: ", file, ": id ", id,
                   " is used twice");
      BONSAI_CHECK(alphabet.to_bytes(key, bytes), "Gpt2Tokenizer: ", file, ": token \"", key,
                   "\" is not written in GPT-2's byte alphabet");
      seen[static_cast<std::size_t>(id)] = true;
      m_bytes[static_cast<std::size_t>(id)] = bytes;
    }
    for (int b = 0; b < 256; ++b) {
      const auto it = json.find(alphabet.utf8(static_cast<unsigned char>(b)));
      BONSAI_CHECK(it != json.end(), "Gpt2Tokenizer: ", file, " has no token for byte ", b);
      m_byte_token[b] = it->get<std::int32_t>();
    }
    const auto eot = json.find("<|endoftext|>");
    BONSAI_CHECK(eot != json.end(), "Gpt2Tokenizer: ", file, " has no \"<|endoftext|>\" token");
    m_eot = eot->get<std::int32_t>();
    return json;
  }

  void load_merges(const std::filesystem::path& path, const nlohmann::json& encoder,
                   const std::filesystem::path& encoder_path) {
    const std::string file = path.string();
    std::int64_t line_no = 0;
    const auto token_id = [&](const std::string& token) {
      const auto it = encoder.find(token);
      BONSAI_CHECK(it != encoder.end(), "Gpt2Tokenizer: ", file, ": line ", line_no,
                   ": token \"", token, "\" is not in ", encoder_path.string());
      return it->get<std::int32_t>();
    };
    const std::string text = detail::read_tokenizer_file(path, "Gpt2Tokenizer");
    // The rank of the merge that makes each token: -1 for the bytes, none yet for the others.
    constexpr std::int32_t unmade = std::numeric_limits<std::int32_t>::max();
    std::vector<std::int32_t> made_at(m_bytes.size(), unmade);
    for (const std::int32_t id : m_byte_token) made_at[static_cast<std::size_t>(id)] = -1;
    std::string_view rest = text;
    std::int32_t rank = 0;
    while (!rest.empty()) {
      const std::size_t eol = rest.find('\n');
      std::string_view line = rest.substr(0, eol);
      rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line_no == 1) {
        BONSAI_CHECK(line.starts_with("#version"), "Gpt2Tokenizer: ", file,
                     " must start with a \"#version\" line");
        continue;
      }
      if (line.empty()) continue;
      const std::size_t space = line.find(' ');
      BONSAI_CHECK(space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
                       line.find(' ', space + 1) == std::string_view::npos,
                   "Gpt2Tokenizer: ", file, ": line ", line_no,
                   " is not a merge of two tokens separated by one space");
      const std::string left(line.substr(0, space)), right(line.substr(space + 1));
      const std::int32_t a = token_id(left), b = token_id(right), merged = token_id(left + right);
      // Well-formed merges use only tokens made earlier and make each token once; the BPE
      // below relies on it (a merge never creates a pair that outranks it).
      BONSAI_CHECK(made_at[static_cast<std::size_t>(a)] < rank &&
                       made_at[static_cast<std::size_t>(b)] < rank,
                   "Gpt2Tokenizer: ", file, ": line ", line_no, ": merge \"", line,
                   "\" uses a token that no earlier merge makes");
      BONSAI_CHECK(made_at[static_cast<std::size_t>(merged)] == unmade, "Gpt2Tokenizer: ", file,
                   ": line ", line_no, ": merge \"", line, "\" makes a token made before");
      made_at[static_cast<std::size_t>(merged)] = rank;
      m_merges.emplace(pair_key(a, b), Merge{rank, merged});
      ++rank;
    }
    BONSAI_CHECK(line_no > 0, "Gpt2Tokenizer: ", file, " is empty");
    const std::int64_t expected = vocab_size() - 257;
    BONSAI_CHECK(rank == expected, "Gpt2Tokenizer: ", file, " has ", rank, " merges but ",
                 encoder_path.string(), "'s ", vocab_size(), " tokens need ", expected,
                 " (256 bytes + <|endoftext|> + one token per merge)");
  }

  void compile_pattern() {
    static constexpr std::string_view pattern =
        R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
    int error = 0;
    PCRE2_SIZE offset = 0;
    m_pattern.reset(pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(pattern.data()),
                                    pattern.size(),
                                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error,
                                    &offset, nullptr));
    if (!m_pattern) {
      PCRE2_UCHAR8 message[256];
      pcre2_get_error_message_8(error, message, sizeof message);
      detail::fail("Gpt2Tokenizer: PCRE2 cannot compile the pre-tokenizer pattern: ",
                   reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile_8(m_pattern.get(), PCRE2_JIT_COMPLETE);  // if JIT fails, the interpreter runs
  }

  // Appends the BPE tokens of one piece of the pre-tokenized text.
  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
    const bool cacheable = piece.size() <= Cache::max_piece_bytes;
    if (cacheable) {
      const std::lock_guard lock(m_cache->mutex);
      if (const auto it = m_cache->pieces.find(piece); it != m_cache->pieces.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<std::int32_t> ids = bpe(piece);
    out.insert(out.end(), ids.begin(), ids.end());
    if (cacheable) {
      const std::lock_guard lock(m_cache->mutex);
      if (m_cache->pieces.size() >= Cache::max_entries) m_cache->pieces.clear();
      m_cache->pieces.emplace(std::string(piece), std::move(ids));
    }
  }

  // Start from one token per byte; repeatedly merge the adjacent pair with the lowest rank,
  // the leftmost first among equals, until no adjacent pair has a merge. This is GPT-2's
  // algorithm (it merges every occurrence of the best pair, left to right, per round): merges
  // are well-formed, so a merge never creates a pair ranked below it. A heap of candidate
  // pairs over a linked list of tokens keeps long pieces O(n log n).
  std::vector<std::int32_t> bpe(std::string_view piece) const {
    constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
    const std::size_t n = piece.size();
    std::vector<std::int32_t> ids(n);  // -1 once merged into its left neighbour
    std::vector<std::size_t> prev(n), next(n);
    for (std::size_t i = 0; i < n; ++i) {
      ids[i] = m_byte_token[static_cast<unsigned char>(piece[i])];
      prev[i] = i == 0 ? none : i - 1;
      next[i] = i + 1 < n ? i + 1 : none;
    }
    struct Candidate {
      std::int32_t rank;
      std::size_t left;            // position of the pair's left token
      std::int32_t first, second;  // the pair when it was queued
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : left > o.left;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
    const auto consider = [&](std::size_t left) {
      if (left == none || next[left] == none) return;
      const std::int32_t a = ids[left], b = ids[next[left]];
      if (const auto it = m_merges.find(pair_key(a, b)); it != m_merges.end())
        queue.push({it->second.rank, left, a, b});
    };
    for (std::size_t i = 0; i + 1 < n; ++i) consider(i);
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      const std::size_t left = c.left, right = next[left];
      if (right == none || ids[left] != c.first || ids[right] != c.second)
        continue;  // stale: one of the two has been merged since
      ids[left] = m_merges.find(pair_key(c.first, c.second))->second.id;
      ids[right] = -1;
      next[left] = next[right];
      if (next[left] != none) prev[next[left]] = left;
      consider(prev[left]);
      consider(left);
    }
    std::vector<std::int32_t> out;
    for (std::size_t i = 0; i != none && i < n; i = next[i]) out.push_back(ids[i]);
    return out;
  }

  std::vector<std::string> m_bytes;            // id -> the token's bytes
  std::array<std::int32_t, 256> m_byte_token{};  // byte -> its single-byte token
  std::unordered_map<std::uint64_t, Merge> m_merges;  // (left id, right id) -> merge
  std::int32_t m_eot = 0;
  std::unique_ptr<pcre2_code_8, detail::Pcre2CodeFree> m_pattern;
  std::unique_ptr<Cache> m_cache;
};

}  // namespace bonsai
