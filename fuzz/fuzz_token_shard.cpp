// Fuzzes the llm.c token-shard reader (header, magic, version, count against the file size, in
// both the llm.c and the detecting format) and the data loader on the shards it accepts.
#include "fuzz.hpp"

#include <bonsai/train/data_loader.hpp>
#include <bonsai/train/token_shard.hpp>

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace bonsai;
  return fuzz::errors_only([&] {
    const auto path = fuzz::write_scratch("shard.bin", fuzz::as_text(data, size));
    for (const ShardFormat format : {ShardFormat::detect, ShardFormat::llmc}) {
      fuzz::errors_only([&] {
        const index_t count = token_shard_size(path, format);
        const std::vector<std::uint16_t> tokens = read_token_shard(path, format);
        fuzz::require(index_t(tokens.size()) == count, "the header's count is the tokens read");
      });
    }
    // GPT-2's vocabulary: larger ids must be rejected as the shard loads, not read past a table.
    DataLoader loader(std::vector{path}, {.batch_size = 1, .seq_len = 4, .shuffle = size % 2 == 1,
                                          .seed = size, .vocab_size = 50257});
    std::vector<std::int32_t> in(4), tgt(4);  // (B, T)
    for (int i = 0; i < 3; ++i) {
      loader.next_batch(in, tgt);
      for (int t = 0; t < 4; ++t) fuzz::require(in[t] >= 0 && in[t] < 50257, "token ids in range");
    }
  });
}
