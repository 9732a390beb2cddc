// bonsai/train/load_tokenizer.hpp — load_tokenizer(spec): a tokenizer from a command-line
// style description, "byte" or a directory holding GPT-2's encoder.json and vocab.bpe.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>

#include "../core/error.hpp"
#include "gpt2_tokenizer.hpp"
#include "tokenizer.hpp"

namespace bonsai {

/// "byte" gives a ByteTokenizer; a directory gives Gpt2Tokenizer(dir) (dir/encoder.json and
/// dir/vocab.bpe). Anything else throws bonsai::Error.
inline std::unique_ptr<Tokenizer> load_tokenizer(std::string_view spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  const std::filesystem::path dir(spec);
  BONSAI_CHECK(std::filesystem::is_directory(dir), "load_tokenizer: \"", spec,
               "\" is neither \"byte\" nor a directory holding encoder.json and vocab.bpe "
               "(scripts/fetch_data.sh puts GPT-2's in data/gpt2)");
  return std::make_unique<Gpt2Tokenizer>(dir);
}

}  // namespace bonsai
