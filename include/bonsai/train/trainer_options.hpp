// bonsai/train/trainer_options.hpp — what a training run (train/trainer.hpp) is told besides its
// model: data, optimisation, run folder, and the methods on its timeline.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../config.hpp"
#include "lr_schedule.hpp"

namespace bonsai {

/// Everything a run is told besides its model: data, optimisation, run folder, and the methods
/// on its timeline, each in the grammar of train_gpt's flag of the same name (docs/training.md;
/// e.g. grow = {"200:lemon:d=384,heads=6"}, sgt = "cosine", sat_rate = 0.5).
struct TrainerOptions {
  // data
  std::string train = "data/brown/gpt2/train_*.bin", val = "data/brown/gpt2/val_*.bin";
  bool shuffle = false;
  // optimisation
  index_t batch = 4, grad_accum = 1, total_batch_tokens = 0, steps = 100, warmup = 10;
  double lr = 6e-4, min_lr_fraction = 0.1, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, clip = 1.0;
  std::string lr_schedule = "cosine";  // cosine | wsd (warm-up, stable, decay)
  double wsd_decay_fraction = 0.2;     // WSD: the share of the steps that decay
  std::string wsd_shape = "sqrt";      // WSD: the decay's shape, linear | sqrt | cosine
  // run
  std::string out = "runs/gpt";
  index_t eval_every = 50, eval_batches = 8, ckpt_every = 0, keep_ckpts = 2, stop_after = 0;
  bool resume = false;
  std::uint64_t seed = 1005;
  // a non-finite loss, gradient or parameter, or a loss spike: stop | rollback
  std::string on_divergence = "stop";
  double rollback_lr_factor = 0.5;
  index_t max_rollbacks = 3;
  // a loss spike: a finite loss above spike_factor times the mean of the last spike_window
  // losses is treated as a divergence (0: off)
  double spike_factor = 3.0;
  index_t spike_window = 50;
  // self-guided training
  std::string sgt = "off", sgt_budget = "steps";
  double sgt_ratio = 0.5;
  bool sgt_reduce_flop = false;
  // growth
  std::vector<std::string> grow;
  std::string grow_state = "reset", grow_lr = "keep", grow_new_layers = "cancel";
  double grow_noise = -1;
  index_t mslt_steps = 0, msg_steps = 0;
  // sparsity-accelerated training
  double sat_rate = 0;
  std::string sat_ladder, sat_score = "activation", sat_aggregate = "l2", sat_select = "sample",
                          sat_optimizer = "skip";
  index_t sat_align = 8;
  index_t sat_start = 0;  // the first step SAT omits anything (after SGT or a growth stage)
  double peak_gflops = 0;  // this machine's peak, for the utilisation column (0: none)
};

/// The learning rate of a run of `total_steps` steps as `o` describes it.
inline LrSchedule lr_schedule_of(const TrainerOptions& o, index_t total_steps) {
  if (o.lr_schedule == "wsd")
    return LrSchedule::wsd(o.lr, o.warmup, total_steps, o.wsd_decay_fraction,
                           parse_wsd_shape(o.wsd_shape), o.min_lr_fraction);
  BONSAI_CHECK(o.lr_schedule == "cosine", "--lr-schedule: expected cosine or wsd, got '",
               o.lr_schedule, "'");
  return LrSchedule::cosine(o.lr, o.warmup, total_steps, o.min_lr_fraction);
}

}  // namespace bonsai
