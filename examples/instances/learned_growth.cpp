// train_gpt's learned growth operators, LiGO and Mango, compiled once (examples/train_run.hpp).
#include "../train_run.hpp"

template std::vector<double> bonsai::learn_growth_operator<float>(
    const bonsai::GrowthStage&, const bonsai::GrowthPlan&, bonsai::ParamArena<float>&,
    bonsai::Gpt<bonsai::Dense<float>, bonsai::Dense<float>>&,
    const std::function<bonsai::TokenBatch()>&, std::uint64_t);
