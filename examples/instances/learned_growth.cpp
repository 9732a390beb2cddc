// train_gpt's learned growth operators, LiGO and Mango, compiled once (examples/train_loop.hpp).
#include "../train_loop.hpp"

std::vector<double> learn_growth_operator(const GrowthStage& stage, const GrowthPlan& plan,
                                          ParamArena<float>& small,
                                          Gpt<Dense<float>, Dense<float>>& next,
                                          const std::function<TokenBatch()>& next_batch,
                                          std::uint64_t seed) {
  if (stage.method == GrowthMethod::ligo) {
    Ligo<float> op(plan, small);
    return train_learned_growth(op, next, next_batch, stage.learned);
  }
  Mango<float> op(plan, small, {.rank = stage.ring_rank, .seed = seed});
  return train_learned_growth(op, next, next_batch, stage.learned);
}
