// bonsai/train/growth.hpp — growth inside a training run: a schedule of stages ("at step s,
// grow with method m to size t"), parsed from the command line and planned in full before any
// work; the AdamW state carried across a growth (StateGrowth); and the learning rate after
// growth (continue the schedule, rewind it to the peak as MSG does, or re-warm up over N steps
// as FLM-101B and Staged Training do).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../grow/apply.hpp"
#include "../grow/learned.hpp"
#include "../grow/ligo.hpp"
#include "../grow/mango.hpp"
#include "../grow/presets.hpp"
#include "adamw.hpp"
#include "flag_parse.hpp"
#include "lr_schedule.hpp"

namespace bonsai {

/// One growth event: before step `at` trains, the model grows with `method` to `target` (or,
/// with method upcycle, its FFNs become experts as `upcycle` says). With ligo and mango the
/// preset plan only starts the operator, which then trains as `learned` says (Mango with ring
/// rank `ring_rank`) before it writes the grown model.
struct GrowthStage {
  index_t at = 0;
  GrowthMethod method = GrowthMethod::lemon;
  GrowthTarget target;
  UpcycleOptions upcycle;
  LearnedGrowthConfig learned;
  index_t ring_rank = 1;

  bool is_learned() const noexcept {
    return method == GrowthMethod::ligo || method == GrowthMethod::mango;
  }
};

/// Sets one upcycle option of a --grow stage from its key and value.
inline void parse_upcycle_option(UpcycleOptions& o, std::string_view key, std::string_view value) {
  if (key == "gating") o.gating = parse_gating(value);
  else if (key == "router") o.router = parse_router_init(value);
  else if (key == "scale") o.scale = parse_upcycle_scale(value);
  else if (key == "experts") o.experts = detail::parse_size(value, "--grow", key);
  else if (key == "top_k") o.top_k = detail::parse_size(value, "--grow", key);
  else if (key == "granularity") o.granularity = detail::parse_size(value, "--grow", key);
  else if (key == "every") o.every = detail::parse_size(value, "--grow", key);
  else detail::fail("--grow: unknown upcycle option '", key, "' (expected experts, top_k, ",
                    "granularity, every, gating, router or scale)");
}

/// Parses "STEP:METHOD:key=value,...;STEP:..." with keys d (d_model), heads, ffn, layers and
/// rank, e.g. "300:lemon:d=256,heads=4,layers=4;600:stackbert:layers=8". Steps must increase.
/// ligo and mango stages also take steps and lr (the operator's training; default 100 and
/// 2e-4), and for mango rank is the ring rank (default 1), e.g. "300:ligo:d=256,layers=6,
/// steps=100". An upcycle stage takes experts, top_k, granularity, every, gating (topk_softmax |
/// softmax_topk), router (random | zero) and scale (down | split | none), e.g.
/// "300:upcycle:experts=8,top_k=2".
inline std::vector<GrowthStage> parse_growth_schedule(std::string_view text) {
  std::vector<GrowthStage> stages;
  if (text.empty()) return stages;
  for (std::string_view item : detail::split(text, ';')) {
    const auto parts = detail::split(item, ':');
    BONSAI_CHECK(parts.size() == 3, "--grow: '", item,
                 "' is not STEP:METHOD:key=value,... (e.g. 300:lemon:d=256,layers=4)");
    GrowthStage st;
    st.at = detail::parse_size(parts[0], "--grow", "the step");
    st.method = parse_growth_method(parts[1]);
    for (std::string_view kv : detail::split(parts[2], ',')) {
      const std::size_t eq = kv.find('=');
      BONSAI_CHECK(eq != std::string_view::npos, "--grow: '", kv, "' is not key=value");
      const std::string_view key = kv.substr(0, eq), value = kv.substr(eq + 1);
      if (st.method == GrowthMethod::upcycle) {
        parse_upcycle_option(st.upcycle, key, value);
        continue;
      }
      if (st.is_learned() && key == "lr") {
        st.learned.lr = detail::parse_positive(value, "--grow", key);
        continue;
      }
      const index_t v = detail::parse_size(value, "--grow", key);
      if (st.is_learned() && key == "steps") st.learned.steps = v;
      else if (st.method == GrowthMethod::mango && key == "rank") st.ring_rank = v;
      else if (key == "d") st.target.d_model = v;
      else if (key == "heads") st.target.n_head = v;
      else if (key == "ffn") st.target.ffn_dim = v;
      else if (key == "layers") st.target.n_layer = v;
      else if (key == "rank") st.target.rank = v;
      else detail::fail("--grow: unknown size '", key, "' (expected d, heads, ffn, layers or rank",
                        st.is_learned() ? ", steps or lr" : "", ")");
    }
    BONSAI_CHECK(stages.empty() || st.at > stages.back().at, "--grow: stage at step ", st.at,
                 " does not come after the one at step ", stages.empty() ? 0 : stages.back().at);
    stages.push_back(st);
  }
  return stages;
}

/// The plans of every stage, each from the model the previous one made (ligo, mango: the plan
/// the operator starts from); throws (before any training) for a stage that cannot be built or
/// that starts at or after `total_steps`.
inline std::vector<GrowthPlan> plan_growth(const GptConfig& start, const std::vector<GrowthStage>& stages,
                                           index_t total_steps, const PresetOptions& options) {
  std::vector<GrowthPlan> plans;
  GptConfig c = start;
  for (const GrowthStage& st : stages) {
    BONSAI_CHECK(st.at > 0 && st.at < total_steps, "--grow: a stage at step ", st.at,
                 " lies outside the run's steps (1..", total_steps - 1, ")");
    PresetOptions o = options;
    o.seed = options.seed + std::uint64_t(plans.size());
    if (st.method == GrowthMethod::upcycle) {
      UpcycleOptions u = st.upcycle;
      u.seed = o.seed;
      plans.push_back(upcycle_plan(c, u));
    } else {
      plans.push_back(make_preset(st.method, c, st.target, o));
    }
    BONSAI_CHECK(!st.is_learned() || options.split_noise <= 0, "--grow: ", to_string(st.method),
                 " starts from an equal split and learns the rest; --grow-noise ",
                 options.split_noise, " does not apply to it");
    if (st.method == GrowthMethod::ligo) Ligo<double>::check_plan(plans.back());
    if (st.method == GrowthMethod::mango) {
      Mango<double>::check_plan(plans.back());
      BONSAI_CHECK(st.ring_rank >= 1, "--grow: Mango's ring rank must be at least 1");
    }
    c = plans.back().to;
  }
  return plans;
}

/// How long a phase after growth stage k lasts (MSLT's frozen stage, MSG's ramp): `steps`, or
/// half the way to the next stage (or to `total_steps` after the last), at least 1.
inline index_t phase_steps(const std::vector<GrowthStage>& stages, std::size_t k, index_t total_steps,
                           index_t steps) {
  const index_t next = k + 1 < stages.size() ? stages[k + 1].at : total_steps;
  return steps > 0 ? steps : std::max<index_t>(1, (next - stages[k].at) / 2);
}

/// MSG's mask ramps: for each masked stage (GrowthOptions::masked), the number of steps over
/// which its masks rise from 0 to 1: `steps`, or half the way to the next stage (or the end)
/// when `steps` is 0; 0 for the other stages. Only one growth may ramp at a time, so a ramp
/// must end by the next stage; throws otherwise, before any training.
inline std::vector<index_t> mask_ramps(const std::vector<GrowthStage>& stages,
                                       const std::vector<GrowthPlan>& plans, index_t total_steps,
                                       index_t steps) {
  BONSAI_CHECK(stages.size() == plans.size(), "mask_ramps: ", stages.size(), " stages but ",
               plans.size(), " plans");
  BONSAI_CHECK(steps >= 0, "--msg-steps must not be negative");
  std::vector<index_t> ramps(stages.size(), 0);
  for (std::size_t k = 0; k < stages.size(); ++k) {
    if (!plans[k].options.masked) continue;
    const index_t next = k + 1 < stages.size() ? stages[k + 1].at : total_steps;
    ramps[k] = phase_steps(stages, k, total_steps, steps);
    BONSAI_CHECK(stages[k].at + ramps[k] <= next, "--grow: the MSG growth at step ", stages[k].at,
                 " ramps its masks over ", ramps[k], " steps, past ",
                 k + 1 < stages.size() ? "the next growth at step " : "the end of the run at step ",
                 next, " (one growth ramps at a time; lower --msg-steps)");
  }
  return ramps;
}

/// The mask value at `step` of a growth at step `at` that ramps over `ramp` steps: the step at
/// `at` trains with 0, and every optimizer step adds 1 / ramp, so step at + k trains with
/// k / ramp, up to 1.
inline double mask_value(index_t step, index_t at, index_t ramp) {
  BONSAI_CHECK(ramp > 0, "mask_value: the ramp must last at least one step");
  return std::clamp(double(step - at) / double(ramp), 0.0, 1.0);
}

/// The learning rate after growth events.
///  keep:   the run's schedule as if nothing happened (StackBERT, sparse upcycling).
///  rewind: after each of the first two events at step g, the schedule restarts from its peak:
///          lr(s) = schedule(s - g + warmup) (MSG).
///  rewarm: after an event at g, lr(s) = schedule(s) min(1, (s - g + 1) / steps) (FLM-101B,
///          Staged Training).
struct GrowthLr {
  enum class Kind { keep, rewind, rewarm } kind = Kind::keep;
  index_t rewarm_steps = 0;

  /// "keep", "rewind" or "rewarm:N".
  static GrowthLr parse(std::string_view s) {
    if (s == "keep") return {};
    if (s == "rewind") return {Kind::rewind, 0};
    if (s.starts_with("rewarm:")) {
      const index_t n = detail::parse_size(s.substr(7), "--grow-lr", "rewarm steps");
      BONSAI_CHECK(n > 0, "--grow-lr rewarm:N needs N > 0");
      return {Kind::rewarm, n};
    }
    detail::fail("--grow-lr: expected keep, rewind or rewarm:N, got '", s, "'");
  }
  std::string to_string() const {
    if (kind == Kind::keep) return "keep";
    if (kind == Kind::rewind) return "rewind";
    return "rewarm:" + std::to_string(rewarm_steps);
  }

  /// The learning rate of `step` given the steps of the growth events (increasing).
  double at(const LrSchedule& schedule, index_t step, const std::vector<index_t>& events) const {
    index_t last = -1, rewound = -1;
    for (std::size_t i = 0; i < events.size() && events[i] <= step; ++i) {
      last = events[i];
      if (i < 2) rewound = events[i];
    }
    switch (kind) {
      case Kind::keep: return schedule.at(step);
      case Kind::rewind:
        if (rewound < 0) return schedule.at(step);
        return schedule.at(step - rewound + schedule.warmup_steps());
      case Kind::rewarm:
        if (last < 0) return schedule.at(step);
        return schedule.at(step) * std::min(1.0, double(step - last + 1) / double(rewarm_steps));
    }
    return schedule.at(step);
  }
};

/// The optimizer of the grown model: both moments mapped with `policy`; the step count is kept,
/// except after reset (a fresh optimizer starts at step 0, so its bias correction restarts).
template <class T>
AdamW<T> grow_optimizer(const GrowthPlan& plan, StateGrowth policy, const AdamW<T>& opt,
                        const ParamArena<T>& from, const ParamArena<T>& to) {
  BONSAI_CHECK(opt.size() == from.size(), "grow_optimizer: the optimizer holds ", opt.size(),
               " scalars but the source model has ", from.size());
  AdamW<T> next(to, opt.config());
  grow_state(plan, policy, Moment::first, from, opt.m().data(), to, next.m().data());
  grow_state(plan, policy, Moment::second, from, opt.v().data(), to, next.v().data());
  next.set_step_count(policy == StateGrowth::reset ? 0 : opt.step_count());
  return next;
}

inline StateGrowth parse_state_growth(std::string_view s) {
  return detail::parse_kind(s, "optimizer state policy",
                            {StateGrowth::reset, StateGrowth::carry, StateGrowth::duplicate,
                             StateGrowth::gradient});
}

inline LayerInit parse_new_layers(std::string_view s) {
  BONSAI_CHECK(s == "cancel" || s == "zero_out", "--grow-new-layers: expected cancel or zero_out, got '",
               s, "'");
  return s == "cancel" ? LayerInit::cancel : LayerInit::zero_out;
}

inline nlohmann::json to_json(const GrowthStage& s) {
  if (s.method == GrowthMethod::upcycle) {
    const UpcycleOptions& u = s.upcycle;
    return {{"at", s.at}, {"method", "upcycle"}, {"experts", u.experts}, {"top_k", u.top_k},
            {"granularity", u.granularity}, {"every", u.every}, {"gating", to_string(u.gating)},
            {"router", to_string(u.router)}, {"scale", to_string(u.scale)}};
  }
  nlohmann::json j = {{"at", s.at}, {"method", to_string(s.method)},
                      {"d_model", s.target.d_model}, {"n_head", s.target.n_head},
                      {"ffn_dim", s.target.ffn_dim}, {"n_layer", s.target.n_layer},
                      {"rank", s.target.rank}};
  if (s.is_learned()) {
    j["steps"] = s.learned.steps;
    j["lr"] = s.learned.lr;
  }
  if (s.method == GrowthMethod::mango) j["ring_rank"] = s.ring_rank;
  return j;
}

}  // namespace bonsai
