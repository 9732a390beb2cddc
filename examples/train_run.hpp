// examples/train_run.hpp — train_gpt's run of one FFN structure Map, train<Map>(): everything
// below the closed switch in main(). The trainer (bonsai/train/trainer.hpp) trains; this adds
// what the program prints around it, the final sample and the exports. The four structures'
// instantiations are compiled two to a file (examples/instances/train_dense_lowrank.cpp,
// train_block.cpp): what a structure adds is a few seconds, while every file pays about 35 s for
// the code all structures share, so two files build in parallel on two cores at half the
// compilation of four. train_gpt.cpp declares train<Map> without including this header, and the
// learned growth operators are compiled once (instances/learned_growth.cpp, extern below).
#pragma once

#include <fmt/core.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/train/trainer.hpp>
#include <cmath>
#include <fstream>

#include "train_options.hpp"

using namespace bonsai;

/// Kilobytes of the largest resident set so far (Linux), 0 elsewhere.
inline long peak_rss_kib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

template <class Map>
int train(const Options& o, const GptConfig& config, Communicator& comm, const RunInputs& inputs) {
  std::function<void(Gpt<Map, Map>&)> init;
  if (inputs.init) init = [&](Gpt<Map, Map>& model) { load_init(model, *inputs.init, o.init_from); };
  Trainer<Map> trainer(o, config, comm, init);
  check_exports(o, trainer.final_config());
  if (!inputs.init_text.empty()) fmt::print("{}\n", inputs.init_text);
  fmt::print("tokenizer {} (vocab {})\n", inputs.tokenizer->name(), inputs.tokenizer->vocab_size());
  const RunSummary r = trainer.run();
  if (!r.finished()) {
    fmt::print("stopped after step {} of {}; continue with --resume\n", r.end, r.total_steps);
    return 0;
  }
  if (!comm.is_root()) return 0;  // rank 0 alone evaluates, samples and exports
  if (!std::isnan(r.val_loss))
    fmt::print("validation loss {:.4f}, perplexity {:.2f}\n", r.val_loss, std::exp(r.val_loss));
  fmt::print("training FLOPs {:.4e}, last step {:.0f} tokens/s, peak memory {:.0f} MiB\n",
             r.train_flops, r.tokens_per_s, double(peak_rss_kib()) / 1024.0);
  print_sample(trainer.model(), *inputs.tokenizer, o);
  export_model(o, trainer.model());
  return 0;
}

#define BONSAI_TRAIN_INSTANCE(EXTERN, Map)                                                      \
  EXTERN template int train<Map>(const bonsai::Options&, const bonsai::GptConfig&,              \
                                 bonsai::Communicator&, const bonsai::RunInputs&);
extern template std::vector<double> bonsai::learn_growth_operator<float>(
    const bonsai::GrowthStage&, const bonsai::GrowthPlan&, bonsai::ParamArena<float>&,
    bonsai::Gpt<bonsai::Dense<float>, bonsai::Dense<float>>&,
    const std::function<bonsai::TokenBatch()>&, std::uint64_t);
