// bonsai/train/sat.hpp — Sat<Model>: sparsity-accelerated training (SAT) of a Gpt. At optimizer
// step t every layer computes only k = N - round(rho(t) N) of its N query heads and of its N FFN
// channels (channels rounded up to a multiple of channel_align), rho(t) from the ladder schedule
// (train/lors.hpp), the neurons picked by importance with top-k or seeded sampling
// (sparse/selection.hpp), in the forward and in the backward (Gpt::forward's kept sets). Each
// micro-batch draws its own kept sets.
//
// Scores (spec sat.md §3, §5 design A: the forward itself is sparse, so no dense pass is paid
// for scoring; designs B and C are not implemented):
//   magnitude   s = the L2 norm of the neuron's own weights (up and gate rows and down column;
//               q rows, its key/value head's k and v rows and output columns), read from the
//               current weights: no state;
//   activation  s = max_t |a_t| or ||a||_2 over the micro-batch's tokens for a channel, ||o_h||_F
//               or max_t ||o_h[t]||_2 for a head, measured on every training forward for the
//               neurons it computed; an omitted neuron keeps the score it had when it last ran;
//   wanda       s = sum_c ||W_reader[:, c]||_1 ||a[:, c]||_2 over the neuron's columns c, the
//               activation norms measured as above, the weights current.
// Data scores start from one dense step, which measures every neuron, and are trainer state:
// state() / restore() carry them through checkpoints, so a resumed run selects what the
// uninterrupted run would have. The selection's randomness is a function of (seed, step,
// micro-batch, layer), not a stream, for the same reason.
//
// Steps: every micro-batch of a step selects from the scores as they were when the step began;
// what the step measures joins them in finish_step(), each neuron taking the value of the last
// micro-batch (in global order) that computed it. Data-parallel ranks pass the global index of
// their micro-batch (m R + r for micro-batch m on rank r of R) and their Communicator, so every
// rank selects the same sets as one process running all R micro-batches of every step.
//
// Optimizer policy (skip_omitted, the default): a parameter no micro-batch of the step computed
// with is left out of the AdamW update (update_flags()), so weight decay and stale moments do
// not move omitted neurons. With skip_omitted off they take a normal AdamW step on a zero
// gradient, as a gather-based PyTorch implementation would. The paper's choices (metric,
// aggregation, selection, policy, ladder) are not published in what we could check; all are
// options (spec sat.md §0).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../nn/gpt.hpp"
#include "communicator.hpp"
#include "../sparse/importance.hpp"
#include "../sparse/selection.hpp"
#include "lors.hpp"

namespace bonsai {

struct SatConfig {
  Lors ladder;                               // rho(t)
  ScoreKind score = ScoreKind::activation;   // what ranks the neurons
  Aggregate aggregate = Aggregate::l2;       // how activation scores reduce over tokens
  Selection select = Selection::sample;      // top-k, or sampling in proportion to the scores
  index_t channel_align = 8;                 // kept channels: a multiple of this (or all)
  bool skip_omitted = true;                  // the optimizer policy above
  std::uint64_t seed = 0;                    // of the sampling

  /// Everything that decides the kept sets, for checkpoints to compare.
  nlohmann::json to_json() const {
    nlohmann::json j = {{"rate", ladder.rho0}, {"ladder", ladder.to_string()},
                        {"score", to_string(score)},
                        {"aggregate", aggregate == Aggregate::l2 ? "l2" : "max"},
                        {"select", to_string(select)}, {"channel_align", channel_align},
                        {"optimizer", skip_omitted ? "skip" : "step"}, {"seed", seed}};
    if (ladder.t0 > 0) j["start"] = ladder.t0;
    return j;
  }
};

template <class Model>
class Sat {
 public:
  using T = typename Model::T;

  Sat(SatConfig config, const Model& model) : m_config(std::move(config)) {
    const GptConfig& c = model.config();
    BONSAI_CHECK(c.moe_experts == 0, "SAT: a model with Mixture-of-Experts layers is not thinned "
                 "(its experts already compute a share of the FFN per token)");
    m_config.ladder.validate();
    BONSAI_CHECK(m_config.channel_align >= 1, "SAT: the channel alignment must be at least 1, got ",
                 m_config.channel_align);
    m_layers = c.n_layer;
    m_heads = c.n_head;
    m_channels = c.ffn_width();
    m_head_dim = c.head_dim();
    const bool wanda = m_config.score == ScoreKind::wanda;
    m_head_scores.assign(std::size_t(m_layers),
                         std::vector<double>(std::size_t(wanda ? m_heads * m_head_dim : m_heads)));
    m_channel_scores.assign(std::size_t(m_layers), std::vector<double>(std::size_t(m_channels)));
    const std::size_t neurons = std::size_t(m_layers) * (m_head_scores[0].size() + std::size_t(m_channels));
    m_measured_now.assign(neurons, 0.0);
    m_writer.assign(neurons, -1);
    // Fail now, with the model's sentence, if a layer cannot compute this few (e.g. a LowRank
    // FFN of rank above the kept channels) or at all (block-diagonal FFNs).
    if (m_config.ladder.rho0 > 0) {
      std::vector<LayerKept> probe(static_cast<std::size_t>(m_layers));
      for (LayerKept& k : probe) {
        k.heads = first(kept_heads(m_config.ladder.rho0));
        k.channels = first(kept_channels(m_config.ladder.rho0));
      }
      (void)model.flops(1, 1, probe);
    }
    m_template.assign(std::size_t(model.arena().size()), 1);
    for (const ParamSlot& s : model.arena().slots()) {
      const auto layer = split_layer_param_name(s.name);
      if (layer && (layer->rest.starts_with("attn.") || layer->rest.starts_with("mlp.")))
        std::fill_n(m_template.begin() + s.offset, s.size(), std::uint8_t(0));
    }
  }

  const SatConfig& config() const noexcept { return m_config; }
  double rate(index_t step) const { return m_config.ladder.rate(step); }
  index_t kept_heads(double rho) const { return keep_count(m_heads, rho); }
  index_t kept_channels(double rho) const {
    return keep_count(m_channels, rho, m_config.channel_align);
  }

  /// The kept sets of micro-batch `micro` (its global index) of step `step` (pass them to
  /// Gpt::forward and training_flops), one LayerKept per layer; empty (dense) when rho(step) = 0
  /// and, for data scores, until a dense step has measured every neuron. The first call with a
  /// new step starts that step.
  std::span<const LayerKept> select(const Model& model, index_t step, index_t micro) {
    if (step != m_step) begin_step(step);
    m_micro = micro;
    m_kept.clear();
    const double rho = rate(step);
    if (rho == 0.0 || (m_config.score != ScoreKind::magnitude && !m_measured)) return {};
    if (m_weight_step != step) refresh_weights(model, step);
    const index_t kh = kept_heads(rho), kc = kept_channels(rho);
    m_kept.resize(std::size_t(m_layers));
    std::vector<double> scores;
    for (index_t l = 0; l < m_layers; ++l) {
      LayerKept& k = m_kept[std::size_t(l)];
      if (kh < m_heads) k.heads = pick(head_scores(l, scores), kh, step, micro, 2 * l);
      if (kc < m_channels) k.channels = pick(channel_scores(l, scores), kc, step, micro, 2 * l + 1);
    }
    if (!m_sparse_step) m_update = m_template;
    m_sparse_step = true;
    return m_kept;
  }

  /// After a training forward with the kept sets of select(): records which parameters it
  /// computed with and, for data scores, the scores of the neurons it computed (used from the
  /// next step on, see finish_step). `valid` leaves padding tokens out of the scores.
  void observe(const Model& model, typename Model::Context& ctx, TokenMask valid = {}) {
    const index_t n = ctx.batch * ctx.seq;
    const bool data = m_config.score != ScoreKind::magnitude;
    std::vector<double> s;
    for_each_layer(model, ctx, [&](index_t l, const auto& block, auto& bctx) {
      if (m_sparse_step) {
        block.attention().mark_computed(bctx.attn, m_update.data());
        block.mlp().mark_computed(bctx.mlp, m_update.data());
      }
      if (!data) return;
      const auto& attn = block.attention();
      const auto o = attn.head_outputs(bctx.attn, n);  // (N, k hd)
      const std::vector<index_t> heads = all_if_empty(bctx.attn.kept, m_heads);
      const index_t hs = head_offset(l);
      if (m_config.score == ScoreKind::wanda) {
        s.resize(std::size_t(o.cols()));
        activation_scores(o, Aggregate::l2, valid, s);  // per column
        for (std::size_t j = 0; j < heads.size(); ++j)
          for (index_t c = 0; c < m_head_dim; ++c)
            measure(hs + heads[j] * m_head_dim + c, s[j * std::size_t(m_head_dim) + std::size_t(c)]);
      } else {
        s.resize(heads.size());
        head_activation_scores(o, m_head_dim, m_config.aggregate, valid, s);
        for (std::size_t j = 0; j < heads.size(); ++j) measure(hs + heads[j], s[j]);
      }
      const auto a = block.mlp().activations(bctx.mlp, n);  // (N, k)
      const std::vector<index_t> channels = all_if_empty(bctx.mlp.kept, m_channels);
      s.resize(channels.size());
      activation_scores(a, m_config.score == ScoreKind::wanda ? Aggregate::l2 : m_config.aggregate,
                        valid, s);
      const index_t cs = channel_offset(l);
      for (std::size_t j = 0; j < channels.size(); ++j) measure(cs + channels[j], s[j]);
    });
    if (data && !m_sparse_step) m_measuring = true;
  }

  /// Ends the step: the update flags become those of every rank's micro-batches (a parameter
  /// counts as computed when any computed with it), and the step's measurements join the
  /// scores, each neuron's from the last micro-batch, in global order, that computed it. Call
  /// it after the last observe() of the step, before update_flags().
  void finish_step(Communicator& comm) {
    if (comm.size() > 1 && m_sparse_step && m_config.skip_omitted) comm.allreduce_max(std::span(m_update));
    if (m_config.score == ScoreKind::magnitude) return;
    if (comm.size() > 1) {
      // The last writer of each neuron, then its value: the others add zeros.
      std::vector<std::int64_t> last = m_writer;
      comm.allreduce_max(std::span(last));
      for (std::size_t i = 0; i < last.size(); ++i)
        if (m_writer[i] != last[i]) m_measured_now[i] = 0.0;
      comm.allreduce_sum(std::span(m_measured_now));
      m_writer = std::move(last);
    }
    for (std::size_t i = 0; i < m_writer.size(); ++i)
      if (m_writer[i] >= 0) score(index_t(i)) = m_measured_now[i];
    if (m_measuring) m_measured = true;
    std::fill(m_writer.begin(), m_writer.end(), -1);
    m_measuring = false;
  }
  void finish_step() {
    SingleProcess one;
    finish_step(one);
  }

  /// For AdamW::step: one flag per parameter, 0 for those that no micro-batch of this step
  /// computed with; empty (update everything) after a dense step or with skip_omitted off.
  std::span<const std::uint8_t> update_flags() const {
    if (!m_sparse_step || !m_config.skip_omitted) return {};
    return m_update;
  }

  /// The measured scores (data scores only), for a checkpoint's trainer state.
  nlohmann::json state() const {
    if (m_config.score == ScoreKind::magnitude) return nlohmann::json::object();
    return {{"measured", m_measured}, {"heads", m_head_scores}, {"channels", m_channel_scores}};
  }
  void restore(const nlohmann::json& j) {
    begin_step(-1);  // the next select() starts a step, nothing of the current one kept
    if (m_config.score == ScoreKind::magnitude) return;
    const auto heads = j.at("heads").get<std::vector<std::vector<double>>>();
    const auto channels = j.at("channels").get<std::vector<std::vector<double>>>();
    const auto fits = [](const auto& v, const auto& like) {
      if (v.size() != like.size()) return false;
      for (std::size_t i = 0; i < v.size(); ++i)
        if (v[i].size() != like[i].size()) return false;
      return true;
    };
    BONSAI_CHECK(fits(heads, m_head_scores) && fits(channels, m_channel_scores),
                 "SAT: the saved scores do not fit this model (", heads.size(), " layers of head "
                 "scores, ", channels.size(), " of channel scores; the model has ", m_layers, ")");
    m_measured = j.at("measured").get<bool>();
    m_head_scores = heads;
    m_channel_scores = channels;
  }

 private:
  /// Starts step `step`: no micro-batch sparse yet, nothing measured.
  void begin_step(index_t step) {
    m_step = step;
    m_sparse_step = false;
    std::fill(m_writer.begin(), m_writer.end(), -1);
    m_measuring = false;
  }

  // Measurements are indexed flat: every layer's head scores, then every layer's channel scores.
  index_t head_offset(index_t l) const { return l * index_t(m_head_scores[0].size()); }
  index_t channel_offset(index_t l) const {
    return m_layers * index_t(m_head_scores[0].size()) + l * m_channels;
  }
  double& score(index_t i) {
    const index_t per_layer = index_t(m_head_scores[0].size());
    if (i < m_layers * per_layer) return m_head_scores[std::size_t(i / per_layer)][std::size_t(i % per_layer)];
    i -= m_layers * per_layer;
    return m_channel_scores[std::size_t(i / m_channels)][std::size_t(i % m_channels)];
  }
  /// Records this micro-batch's measurement of neuron (column) i, unless a later micro-batch
  /// (in global order) has measured it already.
  void measure(index_t i, double value) {
    if (m_micro < m_writer[std::size_t(i)]) return;
    m_measured_now[std::size_t(i)] = value;
    m_writer[std::size_t(i)] = m_micro;
  }

  static std::vector<index_t> first(index_t k) {
    std::vector<index_t> v(static_cast<std::size_t>(k));
    for (index_t i = 0; i < k; ++i) v[std::size_t(i)] = i;
    return v;
  }
  static std::vector<index_t> all_if_empty(const std::vector<index_t>& kept, index_t n) {
    return kept.empty() ? first(n) : kept;
  }

  /// Calls f(layer, block, block context) for every layer, bottom up.
  template <class F>
  static void for_each_layer(const Model& model, typename Model::Context& ctx, F&& f) {
    index_t l = 0;
    if (model.first_block()) f(l++, *model.first_block(), *ctx.first);
    for (std::size_t i = 0; i < model.blocks().size(); ++i, ++l)
      f(l, model.blocks()[i], ctx.blocks[i]);
  }
  template <class F>
  static void for_each_layer(const Model& model, F&& f) {
    index_t l = 0;
    if (model.first_block()) f(l++, *model.first_block());
    for (const auto& b : model.blocks()) f(l++, b);
  }

  /// The weight norms the scores need now: magnitudes (magnitude) or reader L1 norms (wanda).
  void refresh_weights(const Model& model, index_t step) {
    if (m_config.score == ScoreKind::activation) return;
    const bool magnitude = m_config.score == ScoreKind::magnitude;
    m_head_weight.assign(std::size_t(m_layers), {});
    m_channel_weight.assign(std::size_t(m_layers), {});
    for_each_layer(model, [&](index_t l, const auto& block) {
      auto& h = m_head_weight[std::size_t(l)];
      auto& c = m_channel_weight[std::size_t(l)];
      h.assign(std::size_t(magnitude ? m_heads : m_heads * m_head_dim), 0.0);
      c.assign(std::size_t(m_channels), 0.0);
      block.attention().add_head_norms(model.arena(), magnitude ? std::span<double>(h) : std::span<double>(),
                                       magnitude ? std::span<double>() : std::span<double>(h));
      block.mlp().add_channel_norms(model.arena(), magnitude ? std::span<double>(c) : std::span<double>(),
                                    magnitude ? std::span<double>() : std::span<double>(c));
      if (magnitude) {
        magnitude_from_energy(h);
        magnitude_from_energy(c);
      }
    });
    m_weight_step = step;
  }

  /// Layer l's head scores (H), in `buf` when they are computed.
  std::span<const double> head_scores(index_t l, std::vector<double>& buf) const {
    const auto L = std::size_t(l);
    switch (m_config.score) {
      case ScoreKind::magnitude: return m_head_weight[L];
      case ScoreKind::activation: return m_head_scores[L];
      case ScoreKind::wanda: break;
    }
    buf.assign(std::size_t(m_heads), 0.0);
    for (index_t c = 0; c < m_heads * m_head_dim; ++c)
      buf[std::size_t(c / m_head_dim)] += m_head_weight[L][std::size_t(c)] * m_head_scores[L][std::size_t(c)];
    return buf;
  }
  /// Layer l's channel scores (F), in `buf` when they are computed.
  std::span<const double> channel_scores(index_t l, std::vector<double>& buf) const {
    const auto L = std::size_t(l);
    switch (m_config.score) {
      case ScoreKind::magnitude: return m_channel_weight[L];
      case ScoreKind::activation: return m_channel_scores[L];
      case ScoreKind::wanda: break;
    }
    buf.resize(std::size_t(m_channels));
    for (index_t c = 0; c < m_channels; ++c)
      buf[std::size_t(c)] = m_channel_weight[L][std::size_t(c)] * m_channel_scores[L][std::size_t(c)];
    return buf;
  }

  /// k of the scores, by the configured selection; the sampling is seeded by (seed, step,
  /// micro-batch, which) alone.
  std::vector<index_t> pick(std::span<const double> scores, index_t k, index_t step, index_t micro,
                            index_t which) const {
    std::uint64_t h = m_config.seed ^ 0x5341545f73656c65ULL;  // "SAT_sele"
    for (const index_t x : {step, micro, which}) h = (h ^ std::uint64_t(x)) * 0x100000001b3ULL;
    Rng rng(h);
    return select_neurons(m_config.select, scores, k, rng);
  }

  SatConfig m_config;
  index_t m_layers = 0, m_heads = 0, m_channels = 0, m_head_dim = 0;
  // Measured activation statistics per layer: heads (H; wanda: per column, H hd) and channels
  // (F), and whether a dense step has measured them all.
  std::vector<std::vector<double>> m_head_scores, m_channel_scores;
  bool m_measured = false;
  // Weight norms of the current step (magnitude or wanda's reader L1), per layer.
  std::vector<std::vector<double>> m_head_weight, m_channel_weight;
  index_t m_weight_step = -1;
  std::vector<LayerKept> m_kept;          // (layers): the last select()'s
  std::vector<std::uint8_t> m_template;   // (params): 1 outside attention and MLP
  std::vector<std::uint8_t> m_update;     // (params): computed by some micro-batch of the step
  bool m_sparse_step = false;             // whether a micro-batch of this step was sparse
  index_t m_step = -1;                    // the step being run
  index_t m_micro = 0;                    // global index of the micro-batch being run
  // This step's measurements (flat, see head_offset) and the global micro-batch index that
  // made each (-1: none); whether a dense micro-batch measured everything.
  std::vector<double> m_measured_now;
  std::vector<std::int64_t> m_writer;
  bool m_measuring = false;
};

}  // namespace bonsai
