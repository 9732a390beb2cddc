// bonsai/train/tokenizer.hpp — Tokenizer, the interface between text and token ids, and
// ByteTokenizer, the simplest one: each byte is a token, plus one end-of-text token.
// Gpt2Tokenizer (gpt2_tokenizer.hpp) is the other; load_tokenizer (load_tokenizer.hpp) picks one.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"

namespace bonsai {

/// What encode does with the literal text of the end-of-text token ("<|endoftext|>").
enum class Special {
  as_text,  // it is ordinary text, tokenized like any other (GPT-2's encoder does this)
  allow,    // each occurrence becomes eot_token()
};

/// Maps UTF-8 text to token ids and back. Every byte string is encodable and
/// decode(encode(x)) == x for every x (invalid UTF-8 included).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// A short name for logs: "byte", "gpt2".
  virtual std::string_view name() const = 0;
  /// Ids are 0 .. vocab_size() - 1.
  virtual std::int32_t vocab_size() const = 0;
  /// The end-of-text token that separates documents.
  virtual std::int32_t eot_token() const = 0;
  /// The bytes of one token, for streaming output. A token may hold part of a multi-byte UTF-8
  /// character; printing tokens one after another still produces the right text. Throws
  /// bonsai::Error for ids outside [0, vocab_size()).
  virtual std::string_view decode_token(std::int32_t id) const = 0;
  /// Appends the tokens of `text` to `out`, treating all of it as ordinary text.
  virtual void encode_ordinary(std::string_view text, std::vector<std::int32_t>& out) const = 0;

  /// Appends the tokens of `text` to `out`.
  void encode(std::string_view text, std::vector<std::int32_t>& out,
              Special special = Special::as_text) const {
    if (special == Special::as_text) return encode_ordinary(text, out);
    const std::string_view eot = decode_token(eot_token());
    for (std::size_t at = text.find(eot); at != std::string_view::npos; at = text.find(eot)) {
      encode_ordinary(text.substr(0, at), out);
      out.push_back(eot_token());
      text.remove_prefix(at + eot.size());
    }
    encode_ordinary(text, out);
  }
  std::vector<std::int32_t> encode(std::string_view text,
                                   Special special = Special::as_text) const {
    std::vector<std::int32_t> out;
    encode(text, out, special);
    return out;
  }

  /// The concatenated bytes of the tokens.
  std::string decode(std::span<const std::int32_t> ids) const {
    std::string text;
    for (const std::int32_t id : ids) text += decode_token(id);
    return text;
  }
};

/// Byte-level tokenizer: token b (0..255) is the byte b, and token 256 is end-of-text, so
/// vocab_size() is 257. End-of-text decodes to "<|endoftext|>" (as GPT-2's does); with
/// Special::allow that literal text encodes to 256.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr std::int32_t eot = 256;

  std::string_view name() const override { return "byte"; }
  std::int32_t vocab_size() const override { return 257; }
  std::int32_t eot_token() const override { return eot; }

  std::string_view decode_token(std::int32_t id) const override {
    BONSAI_CHECK(id >= 0 && id <= eot, "ByteTokenizer: token id ", id,
                 " is outside the vocabulary [0, 257)");
    if (id == eot) return "<|endoftext|>";
    return {&bytes()[id], 1};
  }

  void encode_ordinary(std::string_view text, std::vector<std::int32_t>& out) const override {
    out.reserve(out.size() + text.size());
    for (const char c : text) out.push_back(static_cast<unsigned char>(c));
  }

 private:
  // The 256 byte values in order, so that decode_token can return a view of one.
  static const char* bytes() {
    static const auto table = [] {
      std::string s(256, '\0');
      for (int b = 0; b < 256; ++b) s[b] = static_cast<char>(b);
      return s;
    }();
    return table.data();
  }
};

}  // namespace bonsai
