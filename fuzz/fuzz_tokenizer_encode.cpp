// Fuzzes encoding with GPT-2's real tokenizer (data/gpt2, or the folder in BONSAI_GPT2_DIR) and
// the byte tokenizer on arbitrary bytes: encoding never fails and decode(encode(x)) == x, with
// "<|endoftext|>" as text and as the special token.
#include "fuzz.hpp"

#include <bonsai/train/gpt2_tokenizer.hpp>
#include <bonsai/train/tokenizer.hpp>

#include <cstdlib>

namespace {
const bonsai::Gpt2Tokenizer& gpt2() {
  static const bonsai::Gpt2Tokenizer tokenizer([] {
    const char* dir = std::getenv("BONSAI_GPT2_DIR");
    return std::filesystem::path(dir ? dir : "data/gpt2");
  }());
  return tokenizer;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  try {
    (void)gpt2();
  } catch (const bonsai::Error& e) {
    std::fprintf(stderr, "fuzz_tokenizer_encode: %s (run scripts/fetch_data.sh)\n", e.what());
    std::exit(1);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace bonsai;
  const std::string_view text = fuzz::as_text(data, size);
  const ByteTokenizer bytes;
  for (const Tokenizer* tokenizer : {static_cast<const Tokenizer*>(&gpt2()),
                                     static_cast<const Tokenizer*>(&bytes)}) {
    for (const Special special : {Special::as_text, Special::allow}) {
      const std::vector<std::int32_t> ids = tokenizer->encode(text, special);
      for (const std::int32_t id : ids)
        fuzz::require(id >= 0 && id < tokenizer->vocab_size(), "token ids lie in the vocabulary");
      fuzz::require(tokenizer->decode(ids) == text, "decode(encode(x)) == x");
    }
  }
  return 0;
}
