// bonsai/train/trainer.hpp — the training loop of a GPT with FFN structure Map, and the events
// on its timeline.
//
// One step t: the global batch of R ranks x A micro-batches, each micro-batch's gradient added
// to the step's in a fixed order; the all-reduce over ranks; g <- g min(1, clip / ||g||);
// AdamW at lr(t). Around the steps, each a member function that a test can call on its own:
//   - SGT (self-guided training): the guided model's blend alpha(t), and release() when it
//     reaches 0 (guides, their gradients and moments freed);
//   - growth stages: grow() into the next plan's model (learned operators trained first), the
//     optimizer state carried as TrainerOptions::grow_state says, MSLT's frozen layers, MSG's
//     masks ramped in;
//   - SAT: select/observe/finish each step along the ladder schedule;
//   - evaluation, checkpoints (atomic) and exact resume (restore());
//   - a non-finite loss, gradient or parameter, or a loss spike (a finite loss above k times
//     the running mean, whose update is not taken): stop with a report, or roll back to the
//     last checkpoint with a lower learning rate.
// Rank 0 alone logs, evaluates and writes checkpoints; every rank takes the same steps.
#pragma once

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../grow/upcycle.hpp"
#include "../nn/gpt.hpp"
#include "adamw.hpp"
#include "checkpoint.hpp"
#include "communicator.hpp"
#include "data_loader.hpp"
#include "divergence.hpp"
#include "evaluate.hpp"
#include "gpt_config_json.hpp"
#include "grad_clip.hpp"
#include "growth.hpp"
#include "learned_growth.hpp"
#include "lr_schedule.hpp"
#include "metrics.hpp"
#include "sat.hpp"
#include "self_guided.hpp"
#include "trainer_options.hpp"

namespace bonsai {

/// Self-guided training as planned: the schedule over [0, T_g), the run's length, and whether
/// the extension repeats the earliest data (fixed-FLOPs budget).
struct SgtPlan {
  GuideSchedule schedule;  // guided_steps = 0: no SGT
  bool reduce_flop = false, flops_budget = false;
  index_t base_steps = 0, total_steps = 0;
  nlohmann::json to_json() const {
    return {{"decay", to_string(schedule.decay)}, {"guided_steps", schedule.guided_steps},
            {"reduce_flop", reduce_flop}, {"budget", flops_budget ? "flops" : "steps"},
            {"base_steps", base_steps}, {"total_steps", total_steps}};
  }
};

/// What Trainer::run did: steps [start, end) of total_steps.
struct RunSummary {
  index_t start = 0, end = 0, total_steps = 0;
  double val_loss = std::nan("");  // the last validation loss (NaN: none measured)
  double train_flops = 0;          // of every step so far, resumed ones included
  double tokens_per_s = 0;         // of the last step
  bool finished() const noexcept { return end == total_steps; }
};

namespace detail {

inline nlohmann::json rng_to_json(const Rng::State& s) {
  return {{"words", s.words}, {"spare", s.spare}, {"has_spare", s.has_spare}};
}
inline Rng::State rng_from_json(const nlohmann::json& j) {
  return {j.at("words").get<std::array<std::uint64_t, 4>>(), j.at("spare").get<double>(),
          j.at("has_spare").get<bool>()};
}

/// Resident memory now, in MiB (Linux), 0 elsewhere.
inline double rss_mib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return double(std::stol(line.substr(6))) / 1024.0;
  return 0;
}

/// out[i] += in[i] for n elements: one micro-batch's gradient joins the step's (a + b = b + a, so
/// either side may hold the sum).
inline void add_into(float* out, const float* in, index_t n) {
#pragma omp parallel for simd schedule(static)
  for (index_t i = 0; i < n; ++i) out[i] += in[i];
}

/// The micro-batches per step and rank, A: grad_accum, or total_batch_tokens / (R B T).
inline index_t micro_batches_per_rank(const TrainerOptions& o, index_t seq_len, int ranks) {
  index_t accum = o.grad_accum;
  if (o.total_batch_tokens > 0) {
    const index_t per = o.batch * seq_len * ranks;
    BONSAI_CHECK(o.total_batch_tokens % per == 0, "--total-batch-tokens ", o.total_batch_tokens,
                 " is not a multiple of ranks x --batch x --seq-len = ", ranks, " x ", o.batch,
                 " x ", seq_len, " = ", per);
    accum = o.total_batch_tokens / per;
  }
  BONSAI_CHECK(o.total_batch_tokens >= 0 && accum >= 1, "--grad-accum must be at least 1 and "
               "--total-batch-tokens not negative, got ", o.grad_accum, " and ", o.total_batch_tokens);
  return accum;
}

}  // namespace detail

/// ", E experts of F (top k, every N layers)" for a model with MoE layers, else "".
inline std::string moe_text(const GptConfig& c) {
  if (c.moe_experts == 0) return "";
  return fmt::format(", {} experts of {} (top {}, {}, every {} layers)", c.moe_experts,
                     c.moe_hidden(), c.moe_top_k, to_string(c.moe_gating), c.moe_every);
}

/// The trainer of a GPT whose FFN maps are Map (Dense, LowRank, BlockDense, BlockShuffle of
/// float) on the host. The constructor checks every option and plans every event (nothing
/// trains); run() resumes when asked, trains to the end or to stop_after, and checkpoints.
template <class Map>
class Trainer {
 public:
  using Plain = Gpt<Map, Map>;
  using Guided = GuidedGpt<Map, Map>;

  /// `init_weights`, when given, loads the starting weights into the freshly drawn model (not
  /// with SGT, which starts from its own structured init).
  Trainer(const TrainerOptions& o, const GptConfig& config, Communicator& comm,
          const std::function<void(Plain&)>& init_weights = {})
      : o_(o), config_(config), comm_(comm), ranks_(comm.size()), me_(comm.rank()),
        root_(comm.is_root()), B_(o.batch), T_(config.max_seq_len),
        accum_(detail::micro_batches_per_rank(o, T_, ranks_)), micros_(accum_ * ranks_),
        sgt_(o.sgt != "off"), spike_({.factor = o.spike_factor, .window = o.spike_window}),
        guide_rng_(o.seed ^ 0x5347545f5347545fULL),
        loader_(o.train, {.batch_size = B_, .seq_len = T_, .world = int(micros_),
                          .shuffle = o.shuffle, .seed = o.seed, .vocab_size = config.vocab_size}),
        loader_start_(loader_.state()), config_json_(gpt_config_to_json(config)) {
    check_options(bool(init_weights));
    // ---- model: the guided one while SGT runs, the plain one after ---------------------------
    Rng init_rng(o.seed);
    if (sgt_) {
      guided_.emplace(config_);
      guided_->init(init_rng);  // S by its default, each guide W0 = S.to_dense()
    } else {
      plain_.emplace(config_);
      plain_->init(init_rng);
      if (init_weights) init_weights(*plain_);
    }
    opt_.emplace(arena(), AdamWConfig{.beta1 = o.beta1, .beta2 = o.beta2, .weight_decay = o.weight_decay});
    comm_.broadcast(values());  // rank 0's parameters to every rank (again after each growth event)
    plan_sgt();
    schedule_.emplace(lr_schedule_of(o, plan_.total_steps));
    plan_growth_stages();
    plan_sat();
  }

  // ---- what the run is ----------------------------------------------------------------------
  index_t total_steps() const noexcept { return plan_.total_steps; }
  /// The model's configuration after the last growth stage (the one the run ends with).
  const GptConfig& final_config() const noexcept { return growth_.empty() ? config_ : growth_.back().to; }
  const GptConfig& config() const noexcept { return config_; }
  const SgtPlan& sgt_plan() const noexcept { return plan_; }
  bool guided() const noexcept { return guided_.has_value(); }
  /// The plain model (after SGT's release; the trained model once run() finished).
  Plain& model() {
    BONSAI_CHECK(plain_.has_value(), "Trainer::model: SGT still trains the guided model");
    return *plain_;
  }
  /// The model of the moment, the guided or the plain one: f(model).
  template <class F>
  decltype(auto) with_model(F&& f) {
    if (guided_) return f(*guided_);
    return f(*plain_);
  }
  ParamArena<float>& arena() {
    return with_model([](auto& m) -> ParamArena<float>& { return m.arena(); });
  }
  const AdamW<float>& optimizer() const { return *opt_; }

  /// The start-up lines: model, ranks, SGT, growth stages, SAT, data.
  void describe() {
    with_model([&](auto& model) {
      fmt::print("model: {} layers, d_model {}, {} heads ({} kv), FFN {} {} (rank {}, blocks {}){}, "
                 "{:.2f}M parameters, {:.2f} GFLOP per step\n",
                 config_.n_layer, config_.d_model, config_.n_head, config_.kv_heads(),
                 to_string(config_.ffn), config_.ffn_width(), config_.rank, config_.blocks,
                 moe_text(config_), double(model.param_count()) * 1e-6,
                 3.0 * double(model.flops(B_, T_)) * double(micros_) * 1e-9);
    });
    if (ranks_ > 1)
      fmt::print("data parallel: {} ranks x {} micro-batches of {} sequences per step\n", ranks_,
                 accum_, B_);
    if (sgt_)
      fmt::print("SGT: {} decay over steps [0, {}), reduce-flop {}, budget {}: {} steps in all{}\n",
                 to_string(plan_.schedule.decay), plan_.schedule.guided_steps,
                 plan_.reduce_flop ? "on" : "off", plan_.flops_budget ? "flops" : "steps",
                 plan_.total_steps,
                 plan_.flops_budget
                     ? fmt::format(" (the last {} repeat the first data)", plan_.schedule.guided_steps)
                     : std::string());
    for (std::size_t k = 0; k < growth_.size(); ++k)
      fmt::print("growth {}: at step {}, {} -> {} layers, d_model {}, {} heads, FFN {}{} ({})\n",
                 k + 1, stages_[k].at, to_string(stages_[k].method), growth_[k].to.n_layer,
                 growth_[k].to.d_model, growth_[k].to.n_head, growth_[k].to.ffn_width(),
                 moe_text(growth_[k].to), growth_kind(k));
    if (sat_config_) {
      const Lors& l = sat_config_->ladder;
      fmt::print("SAT: omission rate {}{} until step {}, {} stairs down to dense at step {} (mean "
                 "rate {:.3f}); score {} ({}), select {}, optimizer {} on omitted parameters\n",
                 l.rho0, l.t0 > 0 ? fmt::format(" from step {}", l.t0) : std::string(), l.t1,
                 l.stairs, l.t2, l.mean_rate(plan_.total_steps), o_.sat_score, o_.sat_aggregate,
                 o_.sat_select, o_.sat_optimizer);
    }
    fmt::print("data: {} ({} batches of {}x{} per epoch), {} threads, GEMM {}\n", o_.train,
               loader_.batches_per_epoch(), B_, T_, max_threads(), cpu::gemm_library());
  }

  /// Trains from the newest checkpoint in `out` (with `resume`) or from step 0, to the end or
  /// for stop_after steps, and checkpoints the last step. Throws, leaving the last checkpoint,
  /// when the run diverges beyond what on_divergence allows.
  RunSummary run() {
    RunSummary r{.start = resume_if_asked(), .total_steps = plan_.total_steps};
    start_ = r.start;
    describe();
    r.end = o_.stop_after > 0 ? std::min(plan_.total_steps, r.start + o_.stop_after) : plan_.total_steps;
    if (root_) log_.emplace(o_.out, o_.resume ? r.start - 1 : -1);  // the lines up to the checkpoint's
    console_.emplace(plan_.total_steps);
    comm_seconds_ = step_seconds_ = 0;
    for (index_t step = r.start; step < r.end; ++step) {
      before_step(step);
      const auto t0 = std::chrono::steady_clock::now();
      const StepResult s = train_step(step);
      if (!s.finite || s.spike) {  // stop, keeping the last checkpoint, or roll back to it
        step = roll_back(step, s) - 1;  // the loop continues at the checkpoint's step
        continue;
      }
      apply_mask(step, step + 1);  // what the evaluation (and the next step) sees
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      report_step(step, s, seconds);
      after_step(step + 1, r.end);
    }
    console_->clear();
    if (ranks_ > 1 && step_seconds_ > 0)
      fmt::print("data parallel: {} ranks, all-reduce {:.1f} ms per step ({:.1f}% of the step)\n",
                 ranks_, 1e3 * comm_seconds_ / double(r.end - r.start),
                 100.0 * comm_seconds_ / step_seconds_);
    if (r.finished() && root_) {
      BONSAI_CHECK(plain_.has_value(), "SGT: the guides were not released by the last step");
      if (std::isnan(val_loss_) && plan_.total_steps > r.start) val_loss_ = validate(*plain_);
    }
    r.val_loss = val_loss_;
    r.train_flops = train_flops_;
    r.tokens_per_s = tokens_per_s_;
    return r;
  }

  // ---- the events, each callable on its own ---------------------------------------------------

  /// Mean validation loss of `model` over eval_batches batches from the start of `val`.
  template <class Model>
  double validate(Model& model) {
    return evaluate(model, context(model), o_.val, B_, T_, config_.vocab_size, o_.eval_batches);
  }

  /// SGT: replaces the guided model by the plain one; guides, their gradients and moments are
  /// freed.
  void release(index_t step) {
    const double before = detail::rss_mib();
    const index_t guided_params = guided_->param_count();
    plain_.emplace(release_guides(*guided_));
    opt_ = opt_->carried_to(guided_->arena(), plain_->arena());
    guided_.reset();
    guided_ctx_ = {};
    build_sat();
    fmt::print("step {}: SGT released the guides: {:.2f}M -> {:.2f}M parameters, resident memory "
               "{:.0f} -> {:.0f} MiB\n", step, double(guided_params) * 1e-6,
               double(plain_->param_count()) * 1e-6, before, detail::rss_mib());
  }

  /// Grows the plain model with stage `k`'s plan: parameters, optimizer state, config. `fresh`:
  /// the growth happens now (not replayed on resume, where the checkpoint then sets the values),
  /// so a learned operator trains and the growth is announced.
  void grow(std::size_t k, index_t step, bool fresh) {
    const GrowthPlan& g = growth_[k];
    const index_t before = plain_->param_count();
    Plain next(g.to);
    if (g.upcycle) upcycle(*plain_, next, *g.upcycle);
    else if (stages_[k].is_learned() && fresh) learn_growth(k, step, next);
    else grow_parameters(g, plain_->arena(), next.arena());
    opt_ = grow_optimizer(g, state_growth_, *opt_, plain_->arena(), next.arena());
    plain_.emplace(std::move(next));
    plain_ctx_ = {};
    build_sat();  // SAT's scores start afresh on the grown model
    spike_.reset();  // the losses of the smaller model are no yardstick for the grown one
    comm_.broadcast(values());
    config_ = g.to;
    config_json_ = gpt_config_to_json(config_);
    if (fresh)
      fmt::print("step {}: grew with {} ({}): {} layers, d_model {}, {} heads, FFN {}{}, "
                 "{:.2f}M -> {:.2f}M parameters, optimizer state {}\n",
                 step, to_string(stages_[k].method), growth_kind(k), config_.n_layer,
                 config_.d_model, config_.n_head, config_.ffn_width(), moe_text(config_),
                 double(before) * 1e-6, double(plain_->param_count()) * 1e-6,
                 to_string(state_growth_));
  }

  /// Writes checkpoint `step` (rank 0; every rank first checks that it holds the same state).
  void save(index_t step) {
    check_lockstep(step);
    if (!root_) return;
    nlohmann::json state = {{"step", step}, {"adamw_step", opt_->step_count()},
                            {"loader", loader_.state()}, {"seed", o_.seed}, {"train_flops", train_flops_}};
    if (rollbacks_ > 0) state["lr_scale"] = lr_scale_, state["rollbacks"] = rollbacks_;
    if (ranks_ > 1) state["ranks"] = ranks_;  // for the record: a resume may use another number
    if (sgt_) {
      state["sgt"] = plan_.to_json();
      state["guide_rng"] = detail::rng_to_json(guide_rng_.state());
    }
    if (!stages_.empty()) state["growth"] = growth_settings_;
    if (spike_.enabled()) state["loss_window"] = spike_.state();
    if (sat_config_)
      state["sat"] = {{"settings", sat_config_->to_json()},
                      {"scores", sat_ ? sat_->state() : nlohmann::json()}};
    const auto [m, v] = moments();
    save_checkpoint<float>(o_.out, step, arena(), m, v, state, config_json_);
    prune_checkpoints(o_.out, o_.keep_ckpts);
  }

  /// Loads checkpoint `dir` and the trainer state saved with it and returns the step it
  /// continues from. `replay`: the model is the starting one, so the SGT release and the growth
  /// events before that step are replayed first (a rollback keeps the model it has).
  index_t restore(const std::filesystem::path& dir, bool replay) {
    const index_t step = detail::checkpoint_step(dir.filename().string()).value_or(0);
    if (replay) {
      if (guided_ && plan_.schedule.released(step)) release(step);
      for (index_t k = 0; k < stages_before(step); ++k) grow(std::size_t(k), step, false);
    }
    // Rank 0 reads the checkpoint and sends it to the others.
    const auto [m, v] = moments();
    std::string saved;
    if (root_) {
      const CheckpointState st = load_checkpoint<float>(dir, arena(), m, v);
      saved = nlohmann::json{{"config", st.config}, {"trainer_state", st.trainer_state}}.dump();
    }
    comm_.broadcast(saved);
    comm_.broadcast(values());
    comm_.broadcast(m);
    comm_.broadcast(v);
    const nlohmann::json loaded = nlohmann::json::parse(saved);
    BONSAI_CHECK(loaded.at("config") == config_json_, "--resume: ", dir.string(),
                 " was written by a different model configuration");
    const nlohmann::json& ts = loaded.at("trainer_state");
    BONSAI_CHECK(ts.value("sgt", nlohmann::json()) == (sgt_ ? plan_.to_json() : nlohmann::json()),
                 "--resume: ", dir.string(), " was written with other --sgt settings (",
                 ts.value("sgt", nlohmann::json()).dump(), ")");
    BONSAI_CHECK(ts.value("growth", nlohmann::json()) ==
                     (stages_.empty() ? nlohmann::json() : growth_settings_),
                 "--resume: ", dir.string(), " was written with other --grow settings (",
                 ts.value("growth", nlohmann::json()).dump(), ")");
    const nlohmann::json saved_sat = ts.value("sat", nlohmann::json::object());
    BONSAI_CHECK(saved_sat.value("settings", nlohmann::json()) ==
                     (sat_config_ ? sat_config_->to_json() : nlohmann::json()),
                 "--resume: ", dir.string(), " was written with other --sat settings (",
                 saved_sat.value("settings", nlohmann::json()).dump(), ")");
    if (sat_ && !saved_sat.at("scores").is_null()) sat_->restore(saved_sat.at("scores"));
    opt_->set_step_count(ts.at("adamw_step").get<std::int64_t>());
    const auto position = ts.at("loader").get<DataLoaderState>();
    BONSAI_CHECK(position.world == micros_, "--resume: ", dir.string(), " was written by a run of ",
                 position.world, " micro-batches per step (ranks x --grad-accum); this one runs ",
                 ranks_, " x ", accum_, " = ", micros_, ". Keep their product, e.g. with "
                 "--total-batch-tokens");
    loader_.restore(position);
    spike_.restore(ts.value("loss_window", std::vector<double>{}));
    if (ts.contains("guide_rng")) guide_rng_.restore(detail::rng_from_json(ts.at("guide_rng")));
    if (replay) {
      train_flops_ = ts.value("train_flops", 0.0);
      lr_scale_ = ts.value("lr_scale", 1.0);
      rollbacks_ = ts.value("rollbacks", index_t(0));
    }
    return ts.at("step").get<index_t>();
  }

  /// The newest checkpoint in `out`, as rank 0 sees it (the same answer on every rank).
  std::optional<std::filesystem::path> latest() {
    std::string dir;
    if (root_) dir = latest_checkpoint(o_.out).value_or(std::filesystem::path()).string();
    comm_.broadcast(dir);
    if (dir.empty()) return std::nullopt;
    return std::filesystem::path(dir);
  }

 private:
  /// One step's outcome, summed over micro-batches and ranks.
  struct StepResult {
    double loss = 0, norm = 0, lr = 0, flops = 0;
    bool finite = true, spike = false;  // spike: finite, but a loss spike (no update taken)
  };

  // ---- planning (the constructor) ------------------------------------------------------------
  void check_options(bool has_init) const {
    BONSAI_CHECK(!sgt_ || config_.ffn != FfnKind::dense,
                 "--sgt guides structured FFNs; --ffn dense has nothing to guide");
    BONSAI_CHECK(!sgt_ || !has_init, "--sgt trains a structured model from scratch; "
                                     "it cannot start from --init-from weights");
    BONSAI_CHECK(o_.on_divergence == "stop" || o_.on_divergence == "rollback",
                 "--on-divergence: expected stop or rollback, got '", o_.on_divergence, "'");
    BONSAI_CHECK(o_.on_divergence == "stop" || o_.ckpt_every > 0,
                 "--on-divergence rollback returns to the last checkpoint: it needs --ckpt-every N");
    BONSAI_CHECK(o_.rollback_lr_factor > 0 && o_.rollback_lr_factor <= 1 && o_.max_rollbacks >= 0,
                 "--rollback-lr-factor ", o_.rollback_lr_factor, " must lie in (0, 1] and "
                 "--max-rollbacks ", o_.max_rollbacks, " must not be negative");
    if (config_.moe_experts > 0) {
      BONSAI_CHECK(o_.sat_rate == 0, "--sat-rate: SAT does not thin Mixture-of-Experts layers (each "
                   "token's experts already compute a share of the FFN); train --moe-experts "
                   "without it");
      BONSAI_CHECK(!sgt_ && o_.grow.empty(), "--moe-experts trains a Mixture-of-Experts model "
                   "from scratch; guiding its experts (--sgt) and growing it (--grow) are not "
                   "implemented yet");
    }
  }

  void plan_sgt() {
    plan_ = SgtPlan{.base_steps = o_.steps, .total_steps = o_.steps};
    if (!sgt_) return;
    plan_.schedule.decay = parse_guide_decay(o_.sgt);
    plan_.reduce_flop = o_.sgt_reduce_flop;
    BONSAI_CHECK(o_.sgt_budget == "steps" || o_.sgt_budget == "flops", "--sgt-budget: expected "
                 "steps or flops, got '", o_.sgt_budget, "'");
    plan_.flops_budget = o_.sgt_budget == "flops";
    if (plan_.flops_budget) {
      set_guides(*guided_, 0.0);
      const double structured = 3.0 * double(guided_->flops(B_, T_));
      set_guides(*guided_, 1.0);
      const double dense = 3.0 * double(guided_->flops(B_, T_));  // a = 1 runs only the guides
      const double guides = 3.0 * double(guide_flops(*guided_, B_ * T_));
      plan_.schedule.guided_steps = guided_steps_for_equal_flops(
          o_.steps, dense, structured, guides, plan_.reduce_flop ? 0.5 : 1.0);
      plan_.total_steps = o_.steps + plan_.schedule.guided_steps;
    } else {
      plan_.schedule = GuideSchedule::over_fraction(plan_.schedule.decay, o_.sgt_ratio, o_.steps);
    }
  }

  /// Every growth stage planned before any work.
  void plan_growth_stages() {
    std::string text;  // one stage per entry
    for (const std::string& g : o_.grow) text += (text.empty() ? "" : ";") + g;
    stages_ = parse_growth_schedule(text);
    growth_ = plan_growth(config_, stages_, plan_.total_steps,
                          {.seed = o_.seed, .split_noise = o_.grow_noise,
                           .new_layers = parse_new_layers(o_.grow_new_layers)});
    const index_t guided = plan_.schedule.guided_steps;
    for (std::size_t k = 0; k < stages_.size(); ++k) {
      BONSAI_CHECK(!sgt_ || stages_[k].at >= guided, "--grow: stage ", k + 1, " at step ",
                   stages_[k].at, " lies within SGT's guided steps [0, ", guided, "): a model is "
                   "grown once its guides are released; grow at step ", guided, " or later");
      BONSAI_CHECK(!stages_[k].is_learned() || (std::is_same_v<Map, Dense<float>>), "--grow: ",
                   to_string(stages_[k].method), " learns dense FFN maps only (--ffn dense)");
    }
    state_growth_ = parse_state_growth(o_.grow_state);
    growth_lr_ = GrowthLr::parse(o_.grow_lr);
    for (const GrowthStage& st : stages_) growth_steps_.push_back(st.at);
    ramps_ = mask_ramps(stages_, growth_, plan_.total_steps, o_.msg_steps);
    nlohmann::json stages_json = nlohmann::json::array();
    for (const GrowthStage& st : stages_) stages_json.push_back(to_json(st));
    growth_settings_ = {{"stages", stages_json}, {"state", o_.grow_state},
                        {"lr", growth_lr_.to_string()}, {"noise", o_.grow_noise},
                        {"new_layers", o_.grow_new_layers}, {"mslt_steps", o_.mslt_steps},
                        {"msg_steps", o_.msg_steps}};
  }

  /// SAT's settings, checked against every phase it overlaps before any step: it starts once
  /// SGT's guides are gone, never during MSG's ramp or MSLT's freezing, and thins only models
  /// without Mixture-of-Experts layers whose FFN structure can compute the kept channels.
  void plan_sat() {
    if (o_.sat_rate <= 0) {
      BONSAI_CHECK(o_.sat_ladder.empty() && o_.sat_start == 0, "--sat-ladder and --sat-start need "
                   "--sat-rate");
      return;
    }
    BONSAI_CHECK(o_.sat_optimizer == "skip" || o_.sat_optimizer == "step",
                 "--sat-optimizer: expected skip or step, got '", o_.sat_optimizer, "'");
    BONSAI_CHECK(o_.sat_aggregate == "l2" || o_.sat_aggregate == "max",
                 "--sat-aggregate: expected l2 or max, got '", o_.sat_aggregate, "'");
    // Without a ladder: the rate until half-way from the start, then 4 stairs down to dense at
    // 90% of the way.
    const index_t n = plan_.total_steps, s0 = o_.sat_start;
    const std::string ladder = o_.sat_ladder.empty()
        ? fmt::format("{},{},4", s0 + (n - s0) / 2, s0 + (n - s0) * 9 / 10) : o_.sat_ladder;
    sat_config_ = SatConfig{.ladder = Lors::parse(o_.sat_rate, ladder, s0),
                            .score = parse_score_kind(o_.sat_score),
                            .aggregate = o_.sat_aggregate == "l2" ? Aggregate::l2 : Aggregate::max,
                            .select = parse_selection(o_.sat_select),
                            .channel_align = o_.sat_align,
                            .skip_omitted = o_.sat_optimizer == "skip",
                            .seed = o_.seed};
    const index_t t0 = sat_config_->ladder.t0, t2 = sat_config_->ladder.t2;
    const auto overlaps = [&](index_t a, index_t b) { return a < t2 && t0 < b; };  // [a, b), [t0, t2)
    const index_t guided = plan_.schedule.guided_steps;
    BONSAI_CHECK(!sgt_ || t0 >= guided, "--sat-start ", t0, " lies within SGT's guided steps [0, ",
                 guided, "): SAT thins the structured model, which trains blended with its dense "
                 "guides until they are released; start SAT at step ", guided, " or later");
    // The models of the phases SAT overlaps: the first one, and those of growth stages.
    const bool thins_first = stages_.empty() || overlaps(0, stages_[0].at);
    std::vector<GptConfig> grown;
    for (std::size_t k = 0; k < stages_.size(); ++k) {
      const index_t at = stages_[k].at;
      const index_t next = k + 1 < stages_.size() ? stages_[k + 1].at : n;
      if (!overlaps(at, next)) continue;
      grown.push_back(growth_[k].to);
      BONSAI_CHECK(ramps_[k] == 0 || !overlaps(at, at + ramps_[k]), "--sat-start ", t0, ": MSG's "
                   "masks ramp in growth stage ", k + 1, "'s new units over steps [", at, ", ",
                   at + ramps_[k], "), which SAT would score and omit while they are masked; start "
                   "SAT at step ", at + ramps_[k], " or later");
      const index_t frozen = growth_[k].frozen_layers > 0
          ? phase_steps(stages_, k, n, o_.mslt_steps) : 0;
      BONSAI_CHECK(frozen == 0 || !overlaps(at, at + frozen), "--sat-start ", t0, ": MSLT trains "
                   "only growth stage ", k + 1, "'s new layers over steps [", at, ", ", at + frozen,
                   "), while SAT thins every layer's update; start SAT at step ", at + frozen,
                   " or later");
    }
    // Each model SAT thins must be able to (the model's sentence otherwise, e.g. a LowRank FFN
    // whose rank exceeds the kept channels, or Mixture-of-Experts layers).
    if (thins_first) {
      if (plain_) (void)Sat<Plain>(*sat_config_, *plain_);
      else (void)Sat<Plain>(*sat_config_, Plain(config_));
    }
    for (const GptConfig& c : grown) (void)Sat<Plain>(*sat_config_, Plain(c));
    build_sat();
  }

  /// SAT on the plain model of the moment (none while SGT trains the guided one).
  void build_sat() {
    if (sat_config_ && plain_) sat_.emplace(*sat_config_, *plain_);
  }

  /// Whether SAT selects, observes and finishes step `step`: from the dense step before its
  /// start, which measures the activation scores the first thinned step selects by, until the
  /// ladder reaches dense (a dense step with SAT is the step without it, bit for bit).
  bool sat_runs(index_t step) const {
    return sat_ && step + 1 >= sat_config_->ladder.t0 && step < sat_config_->ladder.t2;
  }

  // ---- the timeline -------------------------------------------------------------------------
  /// Growth events applied before `step` trains.
  index_t stages_before(index_t step) const {
    return index_t(std::count_if(stages_.begin(), stages_.end(),
                                 [&](const GrowthStage& st) { return st.at < step; }));
  }

  /// MSLT: the layers frozen at `step` (those below the new ones, for mslt_steps after the
  /// event; by default until half-way to the next event or the end).
  index_t frozen_at(index_t step) const {
    const index_t k = stages_before(step + 1);  // events at or before step
    if (k == 0 || growth_[std::size_t(k - 1)].frozen_layers == 0) return 0;
    const std::size_t e = std::size_t(k - 1);
    const index_t length = phase_steps(stages_, e, plan_.total_steps, o_.mslt_steps);
    return step < stages_[e].at + length ? growth_[e].frozen_layers : 0;
  }

  std::string growth_kind(std::size_t k) const {
    if (stages_[k].is_learned())
      return fmt::format("learned for {} steps from a function-preserving start", stages_[k].learned.steps);
    return growth_[k].function_preserving() ? "function-preserving" : "not function-preserving";
  }

  /// Resumes from the newest checkpoint when asked; the step the run continues from.
  index_t resume_if_asked() {
    index_t start = 0;
    if (o_.resume) {
      if (const auto dir = latest()) {
        start = restore(*dir, true);
        fmt::print("resumed from {} at step {}\n", dir->string(), start);
      } else {
        fmt::print("--resume: no checkpoint in {}, starting afresh\n", o_.out);
      }
    }
    if (guided_ && plan_.schedule.released(start)) release(start);  // T_g = 0: nothing to guide
    return start;
  }

  /// The events before step `step` trains: the fixed-FLOPs rewind of the data, growth, MSLT's
  /// freezing, MSG's masks, SAT's new rate.
  void before_step(index_t step) {
    if (plan_.flops_budget && step == plan_.base_steps && plan_.schedule.guided_steps > 0)
      loader_.restore(loader_start_);  // the extension re-trains on the earliest tokens
    for (std::size_t k = 0; k < stages_.size(); ++k)
      if (stages_[k].at == step) {
        console_->clear();
        grow(k, step, true);
      }
    apply_freeze(step);
    apply_mask(step, step);
    if (sat_config_ && step > start_ && sat_config_->ladder.rate(step) != sat_config_->ladder.rate(step - 1)) {
      console_->clear();
      fmt::print("step {}: SAT omission rate {:.3f}\n", step, sat_config_->ladder.rate(step));
    }
  }

  /// The step's gradient over every micro-batch and rank, and the AdamW update when it is
  /// finite. Each micro-batch's gradient is computed from zero and added to the step's in a fixed
  /// order, the same whether the micro-batches run on one rank or on several.
  StepResult train_step(index_t step) {
    StepResult s;
    const double alpha = plan_.schedule.alpha(step);
    with_model([&](auto& model) {
      constexpr bool is_guided = std::is_same_v<std::remove_cvref_t<decltype(model)>, Guided>;
      auto& ctx = context(model);
      auto& params = model.arena();
      for (index_t micro = 0; micro < accum_; ++micro) {
        const index_t global = micro * ranks_ + me_;  // the micro-batch's index in the step
        std::span<const LayerKept> kept;
        if constexpr (is_guided) {
          // Every rank draws every micro-batch's guides in order, keeping its own: lock-step.
          for (int r = 0; r <= me_; ++r)
            if (r == me_ || plan_.reduce_flop) set_guides(model, alpha, plan_.reduce_flop, guide_rng_);
          s.flops += 3.0 * double(model.flops(B_, T_));
        } else {
          if (sat_runs(step)) kept = sat_->select(model, step, global);
          s.flops += double(model.training_flops(B_, T_, kept));
        }
        loader_.read_slice(in_, tgt_, global);
        params.zero_grads();
        s.loss += model.forward(ctx, TokenBatch{in_.data(), tgt_.data(), B_, T_},
                                1.0f / float(micros_), kept);
        if constexpr (!is_guided)
          if (sat_runs(step)) sat_->observe(model, ctx);
        model.backward(ctx);
        if constexpr (is_guided)
          if (plan_.reduce_flop)
            for (int r = me_ + 1; r < ranks_; ++r) set_guides(model, alpha, true, guide_rng_);
        // The sum so far waits in grad_sum_; the last micro-batch's gradient takes it in place.
        if (accum_ == 1) continue;
        if (micro == 0) grad_sum_.assign(params.grads(), params.grads() + params.size());
        else if (micro + 1 < accum_) detail::add_into(grad_sum_.data(), params.grads(), params.size());
        else detail::add_into(params.grads(), grad_sum_.data(), params.size());
      }
    });
    loader_.next_window();
    if (sat_runs(step)) sat_->finish_step(comm_);
    if (ranks_ > 1) {  // the sums over ranks: gradient, loss and FLOPs
      const auto c0 = std::chrono::steady_clock::now();
      comm_.allreduce_sum(std::span<float>(arena().grads(), std::size_t(arena().size())));
      double totals[2] = {s.loss, s.flops};
      comm_.allreduce_sum(std::span<double>(totals, 2));
      s.loss = totals[0], s.flops = totals[1];
      comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
    }
    s.loss /= double(micros_);
    s.norm = global_norm(arena().grads_view());
    s.lr = lr_scale_ * growth_lr_.at(*schedule_, step, growth_steps_);
    s.finite = std::isfinite(s.loss) && std::isfinite(s.norm);
    s.spike = s.finite && spike_.is_spike(s.loss);
    if (s.finite && !s.spike) {
      opt_->step(arena(), s.lr, clip_scale(s.norm, o_.clip),
                 sat_runs(step) ? sat_->update_flags() : std::span<const std::uint8_t>());
      s.finite = all_finite(arena().values_view());  // an update can overflow too
      if (s.finite) spike_.observe(s.loss);
    }
    return s;
  }

  /// Step `step` diverged (or its loss spiked): stops with a report (keeping the last
  /// checkpoint), or rolls back to that checkpoint with the learning rate times
  /// rollback_lr_factor and returns its step.
  index_t roll_back(index_t step, const StepResult& s) {
    console_->clear();
    const std::string report = s.finite ? spike_.report(step, s.loss)
                                        : divergence_report(step, s.loss, s.norm, first_non_finite(arena()));
    const auto dir = latest();
    const index_t back = dir ? detail::checkpoint_step(dir->filename().string()).value_or(0) : 0;
    const bool across_release = sgt_ && plan_.schedule.released(back) != plan_.schedule.released(step);
    if (o_.on_divergence == "stop" || !dir || rollbacks_ == o_.max_rollbacks ||
        stages_before(back) != stages_before(step + 1) || across_release) {
      detail::fail(report, s.finite ? "; the update was not taken. " : "; training diverged. ",
                   !dir ? std::string("No checkpoint was written (--ckpt-every)")
                        : fmt::format("The last good checkpoint is {}", dir->string()),
                   o_.on_divergence == "stop"
                       ? s.finite ? "; resume from it with a lower --lr, run with --on-divergence "
                                    "rollback, or raise --spike-factor (0: off)"
                                  : "; resume from it with a lower --lr, or run with "
                                    "--on-divergence rollback"
                   : !dir ? "; nothing to roll back to"
                   : rollbacks_ == o_.max_rollbacks
                       ? fmt::format("; {} rollbacks did not help", rollbacks_)
                   : across_release
                       ? "; SGT released the guides between it and this step, so it cannot be "
                         "rolled back to (resume from it with a lower --lr)"
                       : "; a growth event lies between it and this step, so it cannot be rolled "
                         "back to (resume from it with a lower --lr)");
    }
    ++rollbacks_;
    const double scale = lr_scale_ * o_.rollback_lr_factor;
    const index_t to = restore(*dir, false);
    lr_scale_ = scale;
    log_.reset();
    if (root_) log_.emplace(o_.out, to - 1);
    fmt::print("{}\nrolled back to {} (rollback {} of {}); learning rate x{:.3g} from now on\n",
               report, dir->string(), rollbacks_, o_.max_rollbacks, lr_scale_);
    return to;
  }

  /// The step's line in metrics.csv and on the console.
  void report_step(index_t step, const StepResult& s, double seconds) {
    train_flops_ += s.flops;
    step_seconds_ += seconds;
    tokens_per_s_ = double(B_ * T_ * micros_) / seconds;
    const double gflops = s.flops / seconds * 1e-9;
    const StepMetrics m{.step = step, .loss = s.loss, .lr = s.lr, .grad_norm = s.norm,
                        .ms = seconds * 1e3, .tokens_per_s = tokens_per_s_, .gflops = gflops,
                        .mfu = o_.peak_gflops > 0 ? 100.0 * gflops / o_.peak_gflops : StepMetrics::none,
                        .train_flops = train_flops_};
    if (log_) log_->log_train(m);
    console_->train(m);
  }

  /// The events after `done` steps: SGT's release, evaluation, checkpoint. The evaluation's
  /// line precedes the checkpoint (a resume continues after both); an evaluation that fails
  /// still leaves the step's checkpoint behind.
  void after_step(index_t done, index_t end) {
    if (guided_ && plan_.schedule.released(done)) {
      console_->clear();
      release(done);
    }
    const bool checkpoint = (o_.ckpt_every > 0 && done % o_.ckpt_every == 0) || done == end;
    if (root_ && ((o_.eval_every > 0 && done % o_.eval_every == 0) || done == plan_.total_steps)) {
      try {
        val_loss_ = with_model([&](auto& model) {
          if constexpr (std::is_same_v<std::remove_cvref_t<decltype(model)>, Guided>)
            set_guides(model, plan_.schedule.alpha(done));  // evaluate the deterministic blend
          return validate(model);
        });
      } catch (...) {
        if (checkpoint) save(done);
        throw;
      }
      log_->log_val(done, val_loss_, train_flops_);
      console_->val(done, val_loss_);
    }
    if (checkpoint) save(done);
  }

  /// MSLT: freezes what it freezes at `step` (or unfreezes), in the model and the optimizer.
  void apply_freeze(index_t step) {
    if (!plain_) return;
    const index_t f = frozen_at(step);
    if (f == plain_->frozen_layers()) return;
    plain_->set_frozen_layers(f);
    opt_->set_frozen(plain_->arena(), [&](const ParamSlot& s) { return plain_->is_frozen(s); });
    fmt::print("step {}: {}\n", step,
               f ? fmt::format("MSLT trains only layers {}..{} and ln_f", f, config_.n_layer - 1)
                 : std::string("all layers train"));
  }

  /// MSG: sets the masks of a ramping growth (of those applied by step `step`) to their value
  /// at step `at`, and drops them once the ramp is over (at value 1 the masks change nothing).
  void apply_mask(index_t step, index_t at) {
    if (!plain_) return;
    const index_t k = stages_before(step + 1);  // events at or before step
    const std::size_t e = std::size_t(k - 1);
    if (k > 0 && ramps_[e] > 0 && at < stages_[e].at + ramps_[e]) {
      GrowthMask mask = growth_[e].mask();
      mask.value = mask_value(at, stages_[e].at, ramps_[e]);
      plain_->set_growth_mask(std::move(mask));
    } else if (plain_->growth_mask()) {
      plain_->clear_growth_mask();
      fmt::print("step {}: MSG's masks reached 1 and were dropped\n", at);
    }
  }

  /// LiGO, Mango: trains stage k's operator from the current model into `next` on batches of
  /// its own loader (shuffled with its own seed, so the run's data order and resume stay exact).
  void learn_growth(std::size_t k, index_t step, Plain& next) {
    const GrowthStage& st = stages_[k];
    if constexpr (std::is_same_v<Map, Dense<float>>) {
      DataLoader data(o_.train, {.batch_size = B_, .seq_len = T_, .shuffle = true,
                                 .seed = o_.seed + 7919 * (k + 1), .vocab_size = config_.vocab_size});
      std::vector<std::int32_t> x(B_ * T_), y(B_ * T_), x0, y0;  // (B, T); x0, y0: the first batch
      const auto batch = [&] {
        data.next_batch(x, y);
        if (x0.empty()) x0 = x, y0 = y;
        return TokenBatch{x.data(), y.data(), B_, T_};
      };
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<double> losses =
          learn_growth_operator<float>(st, growth_[k], plain_->arena(), next, batch, o_.seed + k);
      train_flops_ += double(losses.size()) * double(next.training_flops(B_, T_));
      if (losses.empty()) return;
      // Batches differ by more than the operator moves the loss, so it is compared on one.
      typename Plain::Context ctx;
      const double after = next.forward(ctx, TokenBatch{x0.data(), y0.data(), B_, T_});
      train_flops_ += double(next.flops(B_, T_));
      fmt::print("step {}: {} trained its operator for {} steps ({:.1f} s); loss on its first batch "
                 "{:.3f} -> {:.3f}\n", step, to_string(st.method), losses.size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                 losses.front(), after);
    } else {
      detail::fail("--grow: ", to_string(st.method), " learns dense FFN maps only");
    }
  }

  /// Every rank must hold what rank 0 checkpoints: parameters and both moments, bit for bit.
  void check_lockstep(index_t step) {
    if (ranks_ == 1) return;
    const auto [m, v] = moments();
    std::uint64_t h = fingerprint(std::as_bytes(values()));
    h = fingerprint(std::as_bytes(m), h);
    h = fingerprint(std::as_bytes(v), h);
    BONSAI_CHECK(comm_.same_on_all_ranks(h), "after step ", step, " the ", ranks_, " data-parallel "
                 "ranks hold different parameters or optimizer states; a rank computed something "
                 "the others did not (the checkpoint is not written)");
  }

  std::span<float> values() { return {arena().values(), std::size_t(arena().size())}; }
  std::pair<std::span<float>, std::span<float>> moments() {
    return {std::span<float>(opt_->m().data(), std::size_t(opt_->size())),
            std::span<float>(opt_->v().data(), std::size_t(opt_->size()))};
  }
  template <class Model>
  auto& context(Model&) {
    if constexpr (std::is_same_v<Model, Guided>) return guided_ctx_;
    else return plain_ctx_;
  }

  TrainerOptions o_;
  GptConfig config_;  // the model's now (it changes at each growth stage)
  Communicator& comm_;
  int ranks_, me_;
  bool root_;
  index_t B_, T_;               // sequences per micro-batch, tokens per sequence
  index_t accum_, micros_;      // micro-batches per step: per rank, over all ranks
  bool sgt_;
  LossSpikeGuard spike_;        // the losses of the last steps, against which a spike is judged
  Rng guide_rng_;               // SGT's reduce-flop draws
  DataLoader loader_;           // a window is one step's global batch: micro-batch m of rank r reads slice m R + r
  DataLoaderState loader_start_;
  nlohmann::json config_json_;
  std::optional<Guided> guided_;  // while SGT runs
  std::optional<Plain> plain_;    // after
  typename Guided::Context guided_ctx_;
  typename Plain::Context plain_ctx_;
  std::optional<AdamW<float>> opt_;
  SgtPlan plan_;
  std::optional<LrSchedule> schedule_;
  std::vector<GrowthStage> stages_;
  std::vector<GrowthPlan> growth_;
  StateGrowth state_growth_{};
  GrowthLr growth_lr_;
  std::vector<index_t> growth_steps_, ramps_;
  nlohmann::json growth_settings_;
  std::optional<SatConfig> sat_config_;  // SAT's settings (none: no SAT)
  std::optional<Sat<Plain>> sat_;         // on the plain model of the moment
  std::optional<MetricsLog> log_;  // rank 0's
  std::optional<ConsoleReporter> console_;
  std::vector<std::int32_t> in_ = std::vector<std::int32_t>(B_ * T_), tgt_ = in_;  // (B, T)
  std::vector<float> grad_sum_;  // (params): the step's gradient, added micro-batch by micro-batch
  double train_flops_ = 0;       // of the steps so far (and of learned growth operators' training)
  double lr_scale_ = 1;          // lowered by every rollback
  index_t rollbacks_ = 0;
  index_t start_ = 0;  // the first step of this run
  double comm_seconds_ = 0, step_seconds_ = 0;  // all-reduces, and whole steps, of this run
  double tokens_per_s_ = 0, val_loss_ = std::nan("");
};

}  // namespace bonsai
