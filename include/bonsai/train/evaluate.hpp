// bonsai/train/evaluate.hpp — validation loss: the mean cross-entropy of a model over the first
// batches of a set of token shards, L = (1/n) sum_i loss(batch_i), read in order from the start.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "data_loader.hpp"

namespace bonsai {

/// Mean loss of `model` (forward only, with `ctx`) over min(batches, one epoch) batches of
/// batch x seq tokens read from the start of the shards `pattern` names; every token must lie
/// below `vocab`.
template <class Model>
double evaluate(Model& model, typename Model::Context& ctx, std::string_view pattern,
                index_t batch, index_t seq, index_t vocab, index_t batches) {
  DataLoader val(pattern, {.batch_size = batch, .seq_len = seq, .vocab_size = vocab});
  std::vector<std::int32_t> in(std::size_t(batch * seq)), tgt(in.size());  // (B, T)
  const index_t n = std::min(batches, val.batches_per_epoch());
  double sum = 0;
  for (index_t i = 0; i < n; ++i) {
    val.next_batch(std::span<std::int32_t>(in), std::span<std::int32_t>(tgt));
    sum += model.forward(ctx, TokenBatch{in.data(), tgt.data(), batch, seq});
  }
  return sum / double(n);
}

}  // namespace bonsai
