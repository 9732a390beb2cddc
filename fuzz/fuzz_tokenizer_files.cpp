// Fuzzes the GPT-2 tokenizer's file readers: the input is encoder.json, a line "=====", then
// vocab.bpe. A vocabulary they accept must still encode losslessly.
#include "fuzz.hpp"

#include <bonsai/train/gpt2_tokenizer.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace bonsai;
  return fuzz::errors_only([&] {
    const std::string_view input = fuzz::as_text(data, size);
    static constexpr std::string_view separator = "\n=====\n";
    const std::size_t cut = input.find(separator);
    const std::string_view encoder = input.substr(0, cut);
    const std::string_view merges =
        cut == std::string_view::npos ? std::string_view() : input.substr(cut + separator.size());
    const Gpt2Tokenizer tokenizer(fuzz::write_scratch("encoder.json", encoder),
                                  fuzz::write_scratch("vocab.bpe", merges));
    for (const std::string_view text :
         {std::string_view("the theory, then 12 3's <|endoftext|>  \n\t x\xff\xc3"), merges.substr(0, 64)}) {
      const std::vector<std::int32_t> ids = tokenizer.encode(text, Special::allow);
      fuzz::require(tokenizer.decode(ids) == text, "decode(encode(x)) == x");
    }
  });
}
