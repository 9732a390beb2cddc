// bonsai/train/learned_growth.hpp — training a learned growth operator (LiGO: grow/ligo.hpp;
// Mango: grow/mango.hpp): a few steps of AdamW on the operator's parameters theta, each step
// materialising the grown model W = G(theta), running its forward and backward on a batch and
// mapping dL/dW onto dL/dtheta; then W is written once and the operator discarded.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "../core/error.hpp"
#include "../grow/learned.hpp"
#include "../grow/ligo.hpp"
#include "../grow/mango.hpp"
#include "../nn/gpt.hpp"
#include "adamw.hpp"
#include "growth.hpp"

namespace bonsai {

/// Trains a learned growth operator (Ligo, Mango: anything with config(), arena(),
/// materialize(target arena) and backward(target arena)) for config.steps steps on batches from
/// next_batch() (a callable returning a TokenBatch with targets, valid until the next call), then
/// writes the final grown parameters into `target` (a model built with its config(), e.g.
/// Gpt<Dense<T>, Dense<T>>). Each step: materialize into target, forward and backward the target
/// with grad_scale 1, zero the operator's gradients, backward, observe(step, loss) (the target then
/// holds the weights this step used and the operator's arena().grads() its gradient), AdamW step on
/// its arena(). The target's own gradients are overwritten. Returns the loss of every step.
template <class Operator, class Model, class NextBatch, class Observer = NoGrowthObserver>
std::vector<double> train_learned_growth(Operator& op, Model& target, NextBatch&& next_batch,
                                         const LearnedGrowthConfig& config = {},
                                         Observer&& observe = {}) {
  using T = typename Model::T;
  const GptConfig& want = op.config();
  const GptConfig& got = target.config();
  BONSAI_CHECK(got.d_model == want.d_model && got.n_layer == want.n_layer &&
                   got.n_head == want.n_head && got.kv_heads() == want.kv_heads() &&
                   got.ffn_width() == want.ffn_width() && got.norm == want.norm &&
                   got.act == want.act && got.pos == want.pos && got.norm_eps == want.norm_eps,
               "train_learned_growth: the target model (d_model ", got.d_model, ", n_layer ",
               got.n_layer, ", n_head ", got.n_head, ", ffn ", got.ffn_width(), ", eps ",
               got.norm_eps, ") is not the plan's grown model (d_model ", want.d_model,
               ", n_layer ", want.n_layer, ", n_head ", want.n_head, ", ffn ", want.ffn_width(),
               ", eps ", want.norm_eps, "); build it with the operator's config()");
  BONSAI_CHECK(config.steps >= 0, "train_learned_growth: ", config.steps, " steps");
  AdamW<T> opt(op.arena(), config.adamw);
  typename Model::Context ctx;
  std::vector<double> losses;
  for (index_t step = 0; step < config.steps; ++step) {
    op.materialize(target.arena());
    target.arena().zero_grads();
    const TokenBatch batch = next_batch();
    BONSAI_CHECK(batch.targets != nullptr, "train_learned_growth: batch ", step, " has no targets");
    const double loss = target.forward(ctx, batch, T(1));
    target.backward(ctx);
    op.arena().zero_grads();
    op.backward(target.arena());
    observe(step, loss);
    opt.step(op.arena(), config.lr);
    losses.push_back(loss);
  }
  op.materialize(target.arena());
  return losses;
}

/// Growth stage `stage` (LiGO or Mango) of plan `plan`: builds its operator from the arena of
/// the small dense model, trains it on next_batch()'s batches into `next` and returns the loss of
/// every step. `seed` draws Mango's initial ring factors.
template <class T>
std::vector<double> learn_growth_operator(const GrowthStage& stage, const GrowthPlan& plan,
                                          ParamArena<T>& small, Gpt<Dense<T>, Dense<T>>& next,
                                          const std::function<TokenBatch()>& next_batch,
                                          std::uint64_t seed) {
  BONSAI_CHECK(stage.is_learned(), "learn_growth_operator: ", to_string(stage.method),
               " is not a learned growth operator (ligo, mango)");
  if (stage.method == GrowthMethod::ligo) {
    Ligo<T> op(plan, small);
    return train_learned_growth(op, next, next_batch, stage.learned);
  }
  Mango<T> op(plan, small, {.rank = stage.ring_rank, .seed = seed});
  return train_learned_growth(op, next, next_batch, stage.learned);
}

}  // namespace bonsai
