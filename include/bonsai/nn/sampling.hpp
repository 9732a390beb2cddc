// bonsai/nn/sampling.hpp — text generation from a Gpt with a KV cache: the prompt is fed once,
// then each new token is drawn from softmax(logits / temperature) restricted to the top_k most
// likely tokens (top_k = 0: all; temperature = 0: the most likely token).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "../core/rng.hpp"
#include "gpt.hpp"

namespace bonsai {

struct SamplingOptions {
  index_t max_new_tokens = 64;
  double temperature = 0.8;
  index_t top_k = 200;
  std::int32_t stop_token = -1;  // generation ends after this token (e.g. end-of-text); -1: never
};

/// Draws a token id from one row of logits (V).
template <class T>
std::int32_t sample_token(std::span<const T> logits, double temperature, index_t top_k, Rng& rng) {
  const index_t v = index_t(logits.size());
  BONSAI_CHECK(v > 0, "sample_token: empty logits");
  if (temperature <= 0)
    return std::int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const index_t k = top_k > 0 ? std::min(top_k, v) : v;
  std::vector<std::int32_t> ids(v);
  std::iota(ids.begin(), ids.end(), 0);
  // Ties broken by id so the draw does not depend on the sort's implementation.
  const auto higher = [&](std::int32_t a, std::int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), higher);
  std::vector<double> p(k);
  const double mx = double(logits[ids[0]]);
  double sum = 0;
  for (index_t i = 0; i < k; ++i) sum += p[i] = std::exp((double(logits[ids[i]]) - mx) / temperature);
  double u = rng.uniform() * sum;
  for (index_t i = 0; i < k; ++i) {
    u -= p[i];
    if (u < 0) return ids[i];
  }
  return ids[k - 1];
}

/// Continues `prompt` (one sequence) by up to opts.max_new_tokens tokens, calling
/// on_token(id) for each new token as it is drawn; returns the new tokens. The prompt plus the
/// new tokens must fit in the model's max_seq_len (the prompt is cut to its last tokens if not).
template <class Up, class Down, class OnToken>
std::vector<std::int32_t> generate(Gpt<Up, Down>& model, std::span<const std::int32_t> prompt,
                                   const SamplingOptions& opts, Rng& rng, OnToken&& on_token) {
  using T = typename Gpt<Up, Down>::T;
  BONSAI_CHECK(!prompt.empty(), "generate: the prompt needs at least one token");
  const index_t max_seq = model.config().max_seq_len;
  const index_t budget = std::min<index_t>(opts.max_new_tokens, max_seq - 1);
  const index_t keep = std::min<index_t>(index_t(prompt.size()), max_seq - budget);
  auto st = model.make_decode_state(1);
  auto logits = model.decode(st, prompt.data() + prompt.size() - keep, 1, keep);
  std::vector<std::int32_t> out;
  for (index_t i = 0; i < budget; ++i) {
    const std::int32_t id = sample_token(
        std::span<const T>(logits.data(), std::size_t(logits.cols())), opts.temperature, opts.top_k, rng);
    out.push_back(id);
    on_token(id);
    if (id == opts.stop_token || i + 1 == budget) break;
    logits = model.decode(st, &id, 1, 1);
  }
  return out;
}

}  // namespace bonsai
