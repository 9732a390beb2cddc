// examples/train_loop.hpp — train_gpt's training loop, train<Map>() for one FFN structure Map:
// everything below the closed switch in main(). The four structures' instantiations are
// compiled two to a file (examples/instances/train_dense_lowrank.cpp, train_block.cpp): what a
// structure adds is a few seconds, while every file pays about 35 s for the code all structures
// share, so two files build in parallel on two cores at half the compilation of four. The extern
// declarations at the end keep train_gpt.cpp from compiling any of them.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/nn/premerge.hpp>
#include <bonsai/nn/sampling.hpp>
#include <bonsai/train/adamw.hpp>
#include <bonsai/train/checkpoint.hpp>
#include <bonsai/train/communicator.hpp>
#include <bonsai/train/data_loader.hpp>
#include <bonsai/train/divergence.hpp>
#include <bonsai/train/gpt2_io.hpp>
#include <bonsai/train/gpt_config_json.hpp>
#include <bonsai/train/grad_clip.hpp>
#include <bonsai/grow/upcycle.hpp>
#include <bonsai/train/growth.hpp>
#include <bonsai/train/lr_schedule.hpp>
#include <bonsai/train/sat.hpp>
#include <bonsai/train/metrics.hpp>
#include <bonsai/train/self_guided.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>

#include "train_options.hpp"

using namespace bonsai;
namespace fs = std::filesystem;


/// Kilobytes of the largest resident set so far (Linux), 0 elsewhere.
inline long peak_rss_kib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}


/// Self-guided training as the flags ask for it: the schedule over [0, T_g), the run's length,
/// and whether the extension repeats the earliest data (fixed-FLOPs budget).
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

inline nlohmann::json rng_to_json(const Rng::State& s) {
  return {{"words", s.words}, {"spare", s.spare}, {"has_spare", s.has_spare}};
}
inline Rng::State rng_from_json(const nlohmann::json& j) {
  return {j.at("words").get<std::array<std::uint64_t, 4>>(), j.at("spare").get<double>(),
          j.at("has_spare").get<bool>()};
}

/// ", E experts of F (top k, every N layers)" for a model with MoE layers, else "".
inline std::string moe_text(const GptConfig& c) {
  if (c.moe_experts == 0) return "";
  return fmt::format(", {} experts of {} (top {}, {}, every {} layers)", c.moe_experts,
                     c.moe_hidden(), c.moe_top_k, to_string(c.moe_gating), c.moe_every);
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

/// LiGO or Mango (stage.method): trains the operator of growth `plan` from the arena of the
/// small dense model into `next` for stage.learned.steps steps on next_batch()'s batches, and
/// returns the loss of every step (instances/learned_growth.cpp compiles both operators once).
std::vector<double> learn_growth_operator(const GrowthStage& stage, const GrowthPlan& plan,
                                          ParamArena<float>& small,
                                          Gpt<Dense<float>, Dense<float>>& next,
                                          const std::function<TokenBatch()>& next_batch,
                                          std::uint64_t seed);

template <class Map>
int train(const Options& o, GptConfig config, Communicator& comm, const RunInputs& inputs) {
  using Plain = Gpt<Map, Map>;
  using Guided = GuidedGpt<Map, Map>;
  const auto& tokenizer = inputs.tokenizer;  // loaded and checked by prepare_run
  const index_t B = o.batch, T = config.max_seq_len;
  // ---- data parallel: R ranks of A micro-batches each run R A micro-batches per step ---------
  const int ranks = comm.size(), me = comm.rank();
  const bool root = comm.is_root();
  index_t accum = o.grad_accum;  // A
  if (o.total_batch_tokens > 0) {
    const index_t per = B * T * ranks;
    BONSAI_CHECK(o.total_batch_tokens % per == 0, "--total-batch-tokens ", o.total_batch_tokens,
                 " is not a multiple of ranks x --batch x --seq-len = ", ranks, " x ", B, " x ", T,
                 " = ", per);
    accum = o.total_batch_tokens / per;
  }
  BONSAI_CHECK(o.total_batch_tokens >= 0 && accum >= 1, "--grad-accum must be at least 1 and "
               "--total-batch-tokens not negative, got ", o.grad_accum, " and ", o.total_batch_tokens);
  const index_t micros = accum * ranks;  // micro-batches per step over all ranks
  const bool sgt = o.sgt != "off";
  BONSAI_CHECK(!sgt || config.ffn != FfnKind::dense,
               "--sgt guides structured FFNs; --ffn dense has nothing to guide");
  BONSAI_CHECK(!sgt || o.init_from.empty(), "--sgt trains a structured model from scratch; "
                                            "it cannot start from --init-from weights");
  BONSAI_CHECK(o.on_divergence == "stop" || o.on_divergence == "rollback",
               "--on-divergence: expected stop or rollback, got '", o.on_divergence, "'");
  BONSAI_CHECK(o.on_divergence == "stop" || (o.ckpt_every > 0 && !sgt),
               "--on-divergence rollback returns to the last checkpoint: it needs --ckpt-every N, "
               "and it cannot be combined with --sgt yet");
  BONSAI_CHECK(o.rollback_lr_factor > 0 && o.rollback_lr_factor <= 1 && o.max_rollbacks >= 0,
               "--rollback-lr-factor ", o.rollback_lr_factor, " must lie in (0, 1] and --max-rollbacks ",
               o.max_rollbacks, " must not be negative");
  if (config.moe_experts > 0) {
    BONSAI_CHECK(!sgt && o.grow.empty() && o.sat_rate == 0,
                 "--moe-experts trains a Mixture-of-Experts model from scratch; it cannot be "
                 "combined with --sgt, --grow or --sat-rate yet");
  }

  // ---- model: the guided one while SGT runs, the plain one after -----------------------------
  std::optional<Guided> guided;
  std::optional<Plain> plain;
  Rng init_rng(o.seed);
  if (sgt) {
    guided.emplace(config);
    guided->init(init_rng);  // S by its default, each guide W0 = S.to_dense()
  } else {
    plain.emplace(config);
    plain->init(init_rng);
    if (inputs.init) load_init(*plain, *inputs.init, o.init_from);
  }
  const auto with_model = [&](auto&& f) -> decltype(auto) {
    if (guided) return f(*guided);
    return f(*plain);
  };
  const auto arena = [&]() -> ParamArena<float>& { return with_model([](auto& m) -> auto& { return m.arena(); }); };
  std::optional<AdamW<float>> opt;
  opt.emplace(arena(), AdamWConfig{.beta1 = o.beta1, .beta2 = o.beta2, .weight_decay = o.weight_decay});
  const auto values = [&] { return std::span<float>(arena().values(), std::size_t(arena().size())); };
  comm.broadcast(values());  // rank 0's parameters to every rank (again after each growth event)

  // ---- SGT plan and schedule ----------------------------------------------------------------
  SgtPlan plan{.base_steps = o.steps, .total_steps = o.steps};
  const index_t micro_tokens = B * T;
  if (sgt) {
    plan.schedule.decay = parse_guide_decay(o.sgt);
    plan.reduce_flop = o.sgt_reduce_flop;
    BONSAI_CHECK(o.sgt_budget == "steps" || o.sgt_budget == "flops", "--sgt-budget: expected steps "
                 "or flops, got '", o.sgt_budget, "'");
    plan.flops_budget = o.sgt_budget == "flops";
    if (plan.flops_budget) {
      set_guides(*guided, 0.0);
      const double structured = 3.0 * double(guided->flops(B, T));
      set_guides(*guided, 1.0);
      const double dense = 3.0 * double(guided->flops(B, T));  // a = 1 runs only the guides
      const double guides = 3.0 * double(guide_flops(*guided, micro_tokens));
      plan.schedule.guided_steps = guided_steps_for_equal_flops(
          o.steps, dense, structured, guides, plan.reduce_flop ? 0.5 : 1.0);
      plan.total_steps = o.steps + plan.schedule.guided_steps;
    } else {
      plan.schedule = GuideSchedule::over_fraction(plan.schedule.decay, o.sgt_ratio, o.steps);
    }
  }
  const auto schedule = LrSchedule::cosine(o.lr, o.warmup, plan.total_steps, o.min_lr_fraction);

  // ---- growth: every stage planned before any work ------------------------------------------
  std::string grow_text;  // --grow may be repeated, one stage each
  for (const std::string& g : o.grow) grow_text += (grow_text.empty() ? "" : ";") + g;
  const std::vector<GrowthStage> stages = parse_growth_schedule(grow_text);
  BONSAI_CHECK(stages.empty() || !sgt, "--grow and --sgt cannot be combined yet");
  const std::vector<GrowthPlan> growth =
      plan_growth(config, stages, plan.total_steps,
                  {.seed = o.seed, .split_noise = o.grow_noise, .new_layers = parse_new_layers(o.grow_new_layers)});
  const StateGrowth state_growth = parse_state_growth(o.grow_state);
  check_exports(o, growth.empty() ? config : growth.back().to);
  const GrowthLr growth_lr = GrowthLr::parse(o.grow_lr);
  std::vector<index_t> growth_steps;
  for (const GrowthStage& st : stages) growth_steps.push_back(st.at);
  const auto stages_before = [&](index_t step) {  // growth events applied before `step` trains
    return index_t(std::count_if(stages.begin(), stages.end(), [&](const GrowthStage& st) { return st.at < step; }));
  };
  /// MSLT: the layers frozen at `step` (those below the new ones, for --mslt-steps after the
  /// event; by default until half-way to the next event or the end).
  const auto frozen_at = [&](index_t step) -> index_t {
    const index_t k = stages_before(step + 1);  // events at or before step
    if (k == 0 || growth[std::size_t(k - 1)].frozen_layers == 0) return 0;
    const std::size_t e = std::size_t(k - 1);
    const index_t length = phase_steps(stages, e, plan.total_steps, o.mslt_steps);
    return step < stages[e].at + length ? growth[e].frozen_layers : 0;
  };
  const std::vector<index_t> ramps = mask_ramps(stages, growth, plan.total_steps, o.msg_steps);
  const auto growth_kind = [&](std::size_t k) -> std::string {
    if (stages[k].is_learned())
      return fmt::format("learned for {} steps from a function-preserving start", stages[k].learned.steps);
    return growth[k].function_preserving() ? "function-preserving" : "not function-preserving";
  };
  nlohmann::json growth_json = nlohmann::json::array();
  for (const GrowthStage& st : stages) growth_json.push_back(to_json(st));
  const nlohmann::json growth_settings = {{"stages", growth_json}, {"state", o.grow_state},
                                          {"lr", growth_lr.to_string()}, {"noise", o.grow_noise},
                                          {"new_layers", o.grow_new_layers}, {"mslt_steps", o.mslt_steps},
                                          {"msg_steps", o.msg_steps}};
  Rng guide_rng(o.seed ^ 0x5347545f5347545fULL);

  // ---- sparsity-accelerated training --------------------------------------------------------
  std::optional<Sat<Plain>> sat;
  if (o.sat_rate > 0) {
    BONSAI_CHECK(!sgt && stages.empty(), "--sat-rate cannot be combined with --sgt or --grow yet");
    BONSAI_CHECK(o.sat_optimizer == "skip" || o.sat_optimizer == "step",
                 "--sat-optimizer: expected skip or step, got '", o.sat_optimizer, "'");
    BONSAI_CHECK(o.sat_aggregate == "l2" || o.sat_aggregate == "max",
                 "--sat-aggregate: expected l2 or max, got '", o.sat_aggregate, "'");
    // Without --sat-ladder: the rate until half-way, then 4 stairs down to dense at 90%.
    const std::string ladder = o.sat_ladder.empty()
        ? fmt::format("{},{},4", plan.total_steps / 2, plan.total_steps * 9 / 10) : o.sat_ladder;
    sat.emplace(SatConfig{.ladder = Lors::parse(o.sat_rate, ladder),
                          .score = parse_score_kind(o.sat_score),
                          .aggregate = o.sat_aggregate == "l2" ? Aggregate::l2 : Aggregate::max,
                          .select = parse_selection(o.sat_select),
                          .channel_align = o.sat_align,
                          .skip_omitted = o.sat_optimizer == "skip",
                          .seed = o.seed},
                *plain);
  } else {
    BONSAI_CHECK(o.sat_ladder.empty(), "--sat-ladder needs --sat-rate");
  }

  // A window is one step's global batch: micro-batch m of rank r reads slice m R + r.
  DataLoader loader(o.train, {.batch_size = B, .seq_len = T, .world = int(micros), .shuffle = o.shuffle,
                              .seed = o.seed, .vocab_size = config.vocab_size});
  const DataLoaderState loader_start = loader.state();
  nlohmann::json config_json = gpt_config_to_json(config);

  typename Guided::Context guided_ctx;  // what forward keeps for backward, per model type
  typename Plain::Context plain_ctx;

  /// Replaces the guided model by the plain one: guides, their gradients and moments are freed.
  const auto release = [&](index_t step) {
    const double before = rss_mib();
    const index_t guided_params = guided->param_count();
    plain.emplace(release_guides(*guided));
    opt = opt->carried_to(guided->arena(), plain->arena());
    guided.reset();
    guided_ctx = {};
    fmt::print("step {}: SGT released the guides: {:.2f}M -> {:.2f}M parameters, resident memory "
               "{:.0f} -> {:.0f} MiB\n", step, double(guided_params) * 1e-6,
               double(plain->param_count()) * 1e-6, before, rss_mib());
  };

  double train_flops = 0;  // of the steps so far (and of learned growth operators' training)

  /// LiGO, Mango: trains growth k's operator from the current model into `next` on batches of
  /// its own loader (shuffled with its own seed, so the run's data order and resume stay exact).
  const auto learn_growth = [&](std::size_t k, index_t step, Plain& next) {
    const GrowthStage& st = stages[k];
    if constexpr (std::is_same_v<Map, Dense<float>>) {
      DataLoader data(o.train, {.batch_size = B, .seq_len = T, .shuffle = true,
                                .seed = o.seed + 7919 * (k + 1), .vocab_size = config.vocab_size});
      std::vector<std::int32_t> x(B * T), y(B * T), x0, y0;  // (B, T); x0, y0: the first batch
      const auto batch = [&] {
        data.next_batch(x, y);
        if (x0.empty()) x0 = x, y0 = y;
        return TokenBatch{x.data(), y.data(), B, T};
      };
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<double> losses =
          learn_growth_operator(st, growth[k], plain->arena(), next, batch, o.seed + k);
      train_flops += double(losses.size()) * double(next.training_flops(B, T));
      if (losses.empty()) return;
      // Batches differ by more than the operator moves the loss, so it is compared on one.
      typename Plain::Context ctx;
      const double after = next.forward(ctx, TokenBatch{x0.data(), y0.data(), B, T});
      train_flops += double(next.flops(B, T));
      fmt::print("step {}: {} trained its operator for {} steps ({:.1f} s); loss on its first batch "
                 "{:.3f} -> {:.3f}\n", step, to_string(st.method), losses.size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                 losses.front(), after);
    } else {
      detail::fail("--grow: ", to_string(st.method), " learns dense FFN maps only");
    }
  };

  /// Grows the plain model with plan `k`: parameters, optimizer state, config. `fresh`: the
  /// growth happens now (not replayed on resume, where the checkpoint then sets the values), so
  /// a learned operator trains and the growth is announced.
  const auto grow_model = [&](std::size_t k, index_t step, bool fresh) {
    const GrowthPlan& g = growth[k];
    const index_t before = plain->param_count();
    Plain next(g.to);
    if (g.upcycle) upcycle(*plain, next, *g.upcycle);
    else if (stages[k].is_learned() && fresh) learn_growth(k, step, next);
    else grow_parameters(g, plain->arena(), next.arena());
    opt = grow_optimizer(g, state_growth, *opt, plain->arena(), next.arena());
    plain.emplace(std::move(next));
    plain_ctx = {};
    comm.broadcast(values());
    config = g.to;
    config_json = gpt_config_to_json(config);
    if (fresh)
      fmt::print("step {}: grew with {} ({}): {} layers, d_model {}, {} heads, FFN {}{}, "
                 "{:.2f}M -> {:.2f}M parameters, optimizer state {}\n",
                 step, to_string(stages[k].method), growth_kind(k), config.n_layer, config.d_model,
                 config.n_head, config.ffn_width(), moe_text(config), double(before) * 1e-6,
                 double(plain->param_count()) * 1e-6, to_string(state_growth));
  };
  /// Freezes what MSLT freezes at `step` (or unfreezes), in the model and the optimizer.
  const auto apply_freeze = [&](index_t step) {
    if (!plain) return;
    const index_t f = frozen_at(step);
    if (f == plain->frozen_layers()) return;
    plain->set_frozen_layers(f);
    opt->set_frozen(plain->arena(), [&](const ParamSlot& s) { return plain->is_frozen(s); });
    fmt::print("step {}: {}\n", step, f ? fmt::format("MSLT trains only layers {}..{} and ln_f", f, config.n_layer - 1)
                                         : std::string("all layers train"));
  };

  /// MSG: sets the masks of a ramping growth (of those applied by step `step`) to their value
  /// at step `at`, and drops them once the ramp is over (at value 1 the masks change nothing).
  const auto apply_mask = [&](index_t step, index_t at) {
    if (!plain) return;
    const index_t k = stages_before(step + 1);  // events at or before step
    const std::size_t e = std::size_t(k - 1);
    if (k > 0 && ramps[e] > 0 && at < stages[e].at + ramps[e]) {
      GrowthMask mask = growth[e].mask();
      mask.value = mask_value(at, stages[e].at, ramps[e]);
      plain->set_growth_mask(std::move(mask));
    } else if (plain->growth_mask()) {
      plain->clear_growth_mask();
      fmt::print("step {}: MSG's masks reached 1 and were dropped\n", at);
    }
  };

  // ---- resume ------------------------------------------------------------------------------
  double lr_scale = 1;    // lowered by every rollback after a divergence
  index_t rollbacks = 0;  // rollbacks so far
  /// Loads checkpoint `dir` and the trainer state saved with it and returns the step it
  /// continues from. `replay`: the model is the starting one, so the SGT release and the growth
  /// events before that step are replayed first (a rollback keeps the model it has).
  /// The newest checkpoint in --out, as rank 0 sees it (the same answer on every rank).
  const auto latest = [&]() -> std::optional<fs::path> {
    std::string dir;
    if (root) dir = latest_checkpoint(o.out).value_or(fs::path()).string();
    comm.broadcast(dir);
    if (dir.empty()) return std::nullopt;
    return fs::path(dir);
  };
  const auto moments = [&] {
    return std::pair{std::span<float>(opt->m().data(), std::size_t(opt->size())),
                     std::span<float>(opt->v().data(), std::size_t(opt->size()))};
  };
  const auto restore = [&](const fs::path& dir, bool replay) -> index_t {
    const index_t step = detail::checkpoint_step(dir.filename().string()).value_or(0);
    if (replay) {
      if (guided && plan.schedule.released(step)) release(step);
      for (index_t k = 0; k < stages_before(step); ++k) grow_model(std::size_t(k), step, false);
    }
    // Rank 0 reads the checkpoint and sends it to the others.
    const auto [m, v] = moments();
    std::string saved;
    if (root) {
      const CheckpointState st = load_checkpoint<float>(dir, arena(), m, v);
      saved = nlohmann::json{{"config", st.config}, {"trainer_state", st.trainer_state}}.dump();
    }
    comm.broadcast(saved);
    comm.broadcast(values());
    comm.broadcast(m);
    comm.broadcast(v);
    const nlohmann::json loaded = nlohmann::json::parse(saved);
    BONSAI_CHECK(loaded.at("config") == config_json, "--resume: ", dir.string(),
                 " was written by a different model configuration");
    const nlohmann::json& ts = loaded.at("trainer_state");
    BONSAI_CHECK(ts.value("sgt", nlohmann::json()) == (sgt ? plan.to_json() : nlohmann::json()),
                 "--resume: ", dir.string(), " was written with other --sgt settings (",
                 ts.value("sgt", nlohmann::json()).dump(), ")");
    BONSAI_CHECK(ts.value("growth", nlohmann::json()) == (stages.empty() ? nlohmann::json() : growth_settings),
                 "--resume: ", dir.string(), " was written with other --grow settings (",
                 ts.value("growth", nlohmann::json()).dump(), ")");
    const nlohmann::json saved_sat = ts.value("sat", nlohmann::json::object());
    BONSAI_CHECK(saved_sat.value("settings", nlohmann::json()) == (sat ? sat->config().to_json() : nlohmann::json()),
                 "--resume: ", dir.string(), " was written with other --sat settings (",
                 saved_sat.value("settings", nlohmann::json()).dump(), ")");
    if (sat) sat->restore(saved_sat.at("scores"));
    opt->set_step_count(ts.at("adamw_step").get<std::int64_t>());
    const auto position = ts.at("loader").get<DataLoaderState>();
    BONSAI_CHECK(position.world == micros, "--resume: ", dir.string(), " was written by a run of ",
                 position.world, " micro-batches per step (ranks x --grad-accum); this one runs ",
                 ranks, " x ", accum, " = ", micros, ". Keep their product, e.g. with "
                 "--total-batch-tokens");
    loader.restore(position);
    if (ts.contains("guide_rng")) guide_rng.restore(rng_from_json(ts.at("guide_rng")));
    if (replay) {
      train_flops = ts.value("train_flops", 0.0);
      lr_scale = ts.value("lr_scale", 1.0);
      rollbacks = ts.value("rollbacks", index_t(0));
    }
    return ts.at("step").get<index_t>();
  };
  index_t start = 0;
  if (o.resume) {
    if (const auto dir = latest()) {
      start = restore(*dir, true);
      fmt::print("resumed from {} at step {}\n", dir->string(), start);
    } else {
      fmt::print("--resume: no checkpoint in {}, starting afresh\n", o.out);
    }
  }
  if (guided && plan.schedule.released(start)) release(start);  // T_g = 0: nothing to guide

  /// Every rank must hold what rank 0 checkpoints: parameters and both moments, bit for bit.
  const auto check_lockstep = [&](index_t step) {
    if (ranks == 1) return;
    const auto [m, v] = moments();
    std::uint64_t h = fingerprint(std::as_bytes(values()));
    h = fingerprint(std::as_bytes(m), h);
    h = fingerprint(std::as_bytes(v), h);
    BONSAI_CHECK(comm.same_on_all_ranks(h), "after step ", step, " the ", ranks, " data-parallel "
                 "ranks hold different parameters or optimizer states; a rank computed something "
                 "the others did not (the checkpoint is not written)");
  };
  const auto save = [&](index_t step) {
    check_lockstep(step);
    if (!root) return;
    nlohmann::json state = {{"step", step}, {"adamw_step", opt->step_count()},
                            {"loader", loader.state()}, {"seed", o.seed}, {"train_flops", train_flops}};
    if (rollbacks > 0) state["lr_scale"] = lr_scale, state["rollbacks"] = rollbacks;
    if (ranks > 1) state["ranks"] = ranks;  // for the record: a resume may use another number
    if (sgt) {
      state["sgt"] = plan.to_json();
      state["guide_rng"] = rng_to_json(guide_rng.state());
    }
    if (!stages.empty()) state["growth"] = growth_settings;
    if (sat) state["sat"] = {{"settings", sat->config().to_json()}, {"scores", sat->state()}};
    const auto [m, v] = moments();
    save_checkpoint<float>(o.out, step, arena(), m, v, state, config_json);
    prune_checkpoints(o.out, o.keep_ckpts);
  };

  with_model([&](auto& model) {
    fmt::print("model: {} layers, d_model {}, {} heads ({} kv), FFN {} {} (rank {}, blocks {}){}, "
               "{:.2f}M parameters, {:.2f} GFLOP per step\n",
               config.n_layer, config.d_model, config.n_head, config.kv_heads(), to_string(config.ffn),
               config.ffn_width(), config.rank, config.blocks, moe_text(config),
               double(model.param_count()) * 1e-6,
               3.0 * double(model.flops(B, T)) * double(micros) * 1e-9);
  });
  if (ranks > 1)
    fmt::print("data parallel: {} ranks x {} micro-batches of {} sequences per step\n", ranks, accum, B);
  if (sgt)
    fmt::print("SGT: {} decay over steps [0, {}), reduce-flop {}, budget {}: {} steps in all{}\n",
               to_string(plan.schedule.decay), plan.schedule.guided_steps, plan.reduce_flop ? "on" : "off",
               plan.flops_budget ? "flops" : "steps", plan.total_steps,
               plan.flops_budget ? fmt::format(" (the last {} repeat the first data)", plan.schedule.guided_steps)
                                 : std::string());
  for (std::size_t k = 0; k < growth.size(); ++k)
    fmt::print("growth {}: at step {}, {} -> {} layers, d_model {}, {} heads, FFN {}{} ({})\n", k + 1,
               stages[k].at, to_string(stages[k].method), growth[k].to.n_layer, growth[k].to.d_model,
               growth[k].to.n_head, growth[k].to.ffn_width(), moe_text(growth[k].to), growth_kind(k));
  if (sat) {
    const Lors& l = sat->config().ladder;
    fmt::print("SAT: omission rate {} until step {}, {} stairs down to dense at step {} (mean rate {:.3f}); "
               "score {} ({}), select {}, optimizer {} on omitted parameters\n",
               l.rho0, l.t1, l.stairs, l.t2, l.mean_rate(plan.total_steps), o.sat_score, o.sat_aggregate,
               o.sat_select, o.sat_optimizer);
  }
  if (!inputs.init_text.empty()) fmt::print("{}\n", inputs.init_text);
  fmt::print("data: {} ({} batches of {}x{} per epoch), tokenizer {} (vocab {}), {} threads, GEMM {}\n",
             o.train, loader.batches_per_epoch(), B, T, tokenizer->name(), tokenizer->vocab_size(),
             max_threads(), cpu::gemm_library());

  // ---- training loop -------------------------------------------------------------------------
  std::optional<MetricsLog> log;  // rank 0's
  if (root) log.emplace(o.out, o.resume ? start - 1 : -1);  // the lines up to the checkpoint's
  ConsoleReporter console(plan.total_steps);
  const auto context = [&](auto& model) -> auto& {
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(model)>, Guided>) return guided_ctx;
    else return plain_ctx;
  };
  std::vector<std::int32_t> in(B * T), tgt(B * T);  // (B, T)
  std::vector<float> grad_sum;  // (params): the step's gradient, added micro-batch by micro-batch
  double comm_seconds = 0, step_seconds = 0;  // all-reduces, and whole steps, of this run
  const index_t end = o.stop_after > 0 ? std::min(plan.total_steps, start + o.stop_after) : plan.total_steps;
  double tokens_per_s = 0, val_loss = std::nan("");
  for (index_t step = start; step < end; ++step) {
    if (plan.flops_budget && step == plan.base_steps && plan.schedule.guided_steps > 0)
      loader.restore(loader_start);  // the extension re-trains on the earliest tokens
    for (std::size_t k = 0; k < stages.size(); ++k)
      if (stages[k].at == step) {
        console.clear();
        grow_model(k, step, true);
      }
    apply_freeze(step);
    apply_mask(step, step);
    const auto t0 = std::chrono::steady_clock::now();
    const double alpha = plan.schedule.alpha(step);
    double loss = 0, step_flops = 0;
    if (sat && step > start && sat->rate(step) != sat->rate(step - 1)) {
      console.clear();
      fmt::print("step {}: SAT omission rate {:.3f}\n", step, sat->rate(step));
    }
    // Each micro-batch's gradient is computed from zero and added to the step's in a fixed
    // order, the same whether the micro-batches run on one rank or on several.
    with_model([&](auto& model) {
      auto& ctx = context(model);
      auto& params = model.arena();
      for (index_t micro = 0; micro < accum; ++micro) {
        const index_t global = micro * ranks + me;  // the micro-batch's index in the step
        std::span<const LayerKept> kept;
        if constexpr (std::is_same_v<std::remove_cvref_t<decltype(model)>, Guided>) {
          // Every rank draws every micro-batch's guides in order, keeping its own: lock-step.
          for (int r = 0; r <= me; ++r)
            if (r == me || plan.reduce_flop) set_guides(model, alpha, plan.reduce_flop, guide_rng);
          step_flops += 3.0 * double(model.flops(B, T));
        } else {
          if (sat) kept = sat->select(model, step, global);
          step_flops += double(model.training_flops(B, T, kept));
        }
        loader.read_slice(in, tgt, global);
        params.zero_grads();
        loss += model.forward(ctx, TokenBatch{in.data(), tgt.data(), B, T}, 1.0f / float(micros), kept);
        if constexpr (std::is_same_v<std::remove_cvref_t<decltype(model)>, Plain>)
          if (sat) sat->observe(model, ctx);
        model.backward(ctx);
        if constexpr (std::is_same_v<std::remove_cvref_t<decltype(model)>, Guided>)
          if (plan.reduce_flop)
            for (int r = me + 1; r < ranks; ++r) set_guides(model, alpha, true, guide_rng);
        // The sum so far waits in grad_sum; the last micro-batch's gradient takes it in place.
        if (accum == 1) continue;
        if (micro == 0) grad_sum.assign(params.grads(), params.grads() + params.size());
        else if (micro + 1 < accum) add_into(grad_sum.data(), params.grads(), params.size());
        else add_into(params.grads(), grad_sum.data(), params.size());
      }
    });
    loader.next_window();
    if (sat) sat->finish_step(comm);
    if (ranks > 1) {  // the sums over ranks: gradient, loss and FLOPs
      const auto c0 = std::chrono::steady_clock::now();
      comm.allreduce_sum(std::span<float>(arena().grads(), std::size_t(arena().size())));
      double totals[2] = {loss, step_flops};
      comm.allreduce_sum(std::span<double>(totals, 2));
      loss = totals[0], step_flops = totals[1];
      comm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
    }
    loss /= double(micros);
    const double norm = global_norm(arena().grads_view());
    const double lr = lr_scale * growth_lr.at(schedule, step, growth_steps);
    bool finite = std::isfinite(loss) && std::isfinite(norm);
    if (finite) {
      opt->step(arena(), lr, clip_scale(norm, o.clip),
                sat ? sat->update_flags() : std::span<const std::uint8_t>());
      finite = all_finite(arena().values_view());  // an update can overflow too
    }
    if (!finite) {  // stop, keeping the last checkpoint, or roll back to it with a lower rate
      console.clear();
      const std::string report = divergence_report(step, loss, norm, first_non_finite(arena()));
      const auto dir = latest();
      const index_t back = dir ? detail::checkpoint_step(dir->filename().string()).value_or(0) : 0;
      if (o.on_divergence == "stop" || !dir || rollbacks == o.max_rollbacks ||
          stages_before(back) != stages_before(step + 1)) {
        detail::fail(report, "; training diverged. ",
                     !dir ? std::string("No checkpoint was written (--ckpt-every)")
                          : fmt::format("The last good checkpoint is {}", dir->string()),
                     o.on_divergence == "stop" ? "; resume from it with a lower --lr, or run with "
                                                 "--on-divergence rollback"
                     : !dir ? "; nothing to roll back to"
                     : rollbacks == o.max_rollbacks
                         ? fmt::format("; {} rollbacks did not help", rollbacks)
                         : "; a growth event lies between it and this step, so it cannot be rolled "
                           "back to (resume from it with a lower --lr)");
      }
      ++rollbacks;
      const double scale = lr_scale * o.rollback_lr_factor;
      const index_t to = restore(*dir, false);
      lr_scale = scale;
      log.reset();
      if (root) log.emplace(o.out, to - 1);
      fmt::print("{}\nrolled back to {} (rollback {} of {}); learning rate x{:.3g} from now on\n",
                 report, dir->string(), rollbacks, o.max_rollbacks, lr_scale);
      step = to - 1;  // the loop continues at step `to`
      continue;
    }
    apply_mask(step, step + 1);  // what the evaluation (and the next step) sees
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    train_flops += step_flops;
    step_seconds += seconds;

    tokens_per_s = double(B * T * micros) / seconds;
    const double gflops = step_flops / seconds * 1e-9;
    const StepMetrics m{.step = step, .loss = loss, .lr = lr, .grad_norm = norm, .ms = seconds * 1e3,
                        .tokens_per_s = tokens_per_s, .gflops = gflops,
                        .mfu = o.peak_gflops > 0 ? 100.0 * gflops / o.peak_gflops : StepMetrics::none,
                        .train_flops = train_flops};
    if (log) log->log_train(m);
    console.train(m);

    const index_t done = step + 1;
    if (guided && plan.schedule.released(done)) {
      console.clear();
      release(done);
    }
    // The evaluation's line precedes the checkpoint (a resume continues after both); an
    // evaluation that fails still leaves the step's checkpoint behind.
    const bool checkpoint = (o.ckpt_every > 0 && done % o.ckpt_every == 0) || done == end;
    if (root && ((o.eval_every > 0 && done % o.eval_every == 0) || done == plan.total_steps)) {
      try {
        val_loss = with_model([&](auto& model) {
          if constexpr (std::is_same_v<std::remove_cvref_t<decltype(model)>, Guided>)
            set_guides(model, plan.schedule.alpha(done));  // evaluate the deterministic blend
          return evaluate(model, context(model), o, T, config.vocab_size);
        });
      } catch (...) {
        if (checkpoint) save(done);
        throw;
      }
      log->log_val(done, val_loss, train_flops);
      console.val(done, val_loss);
    }
    if (checkpoint) save(done);
  }
  console.clear();

  // ---- results -------------------------------------------------------------------------------
  if (ranks > 1 && step_seconds > 0)
    fmt::print("data parallel: {} ranks, all-reduce {:.1f} ms per step ({:.1f}% of the step)\n", ranks,
               1e3 * comm_seconds / double(end - start), 100.0 * comm_seconds / step_seconds);
  if (end < plan.total_steps) {
    fmt::print("stopped after step {} of {}; continue with --resume\n", end, plan.total_steps);
    return 0;
  }
  if (!root) return 0;  // rank 0 alone evaluates, samples and exports
  BONSAI_CHECK(plain.has_value(), "SGT: the guides were not released by the last step");
  Plain& model = *plain;
  if (std::isnan(val_loss) && plan.total_steps > start)
    val_loss = evaluate(model, plain_ctx, o, T, config.vocab_size);
  if (!std::isnan(val_loss))
    fmt::print("validation loss {:.4f}, perplexity {:.2f}\n", val_loss, std::exp(val_loss));
  fmt::print("training FLOPs {:.4e}, last step {:.0f} tokens/s, peak memory {:.0f} MiB\n", train_flops,
             tokens_per_s, double(peak_rss_kib()) / 1024.0);
  print_sample(model, *tokenizer, o);
  export_model(o, model);
  return 0;
}

#define BONSAI_TRAIN_INSTANCE(EXTERN, Map)                                                      \
  EXTERN template int train<Map>(const bonsai::Options&, bonsai::GptConfig, bonsai::Communicator&, \
                                 const bonsai::RunInputs&);
BONSAI_TRAIN_INSTANCE(extern, bonsai::Dense<float>)
BONSAI_TRAIN_INSTANCE(extern, bonsai::LowRank<float>)
BONSAI_TRAIN_INSTANCE(extern, bonsai::BlockDense<float>)
BONSAI_TRAIN_INSTANCE(extern, bonsai::BlockShuffle<float>)
