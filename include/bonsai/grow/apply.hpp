// bonsai/grow/apply.hpp — applies a GrowthPlan to a GPT model's parameter arena. Every weight
// W (out, in) of a layer that maps space s to space t becomes W' = P_t W Q_s + N: rows follow
// the output space's map (copies, avg or zero fills, fresh random rows), columns split the
// source column over its copies (share 1/c) plus noise N centred over each group of copies
// (N P_s = 0), and columns that read zero-filled units are free. Norm gains take the LEMON
// rule gamma' = sqrt(s) gamma[src] (and the final norm, before the tied head, divides by the
// copy count), so with a function-preserving plan the grown model's logits equal the source's.
// grow_state maps an optimizer moment (exp_avg or exp_avg_sq) in the same layout.
//
// Gradients of a function-preserving growth map differently from weights (spec growth.md §10):
// if W' = P_t W Q_s, the grown model's gradient is G' = Q_t^T G P_s^T, so an entry whose output
// unit copies source unit g with share a (1 / copy count) has gradient a G[g, .], and a column
// that reads a copy has its source column's gradient unsplit. StateGrowth::gradient maps the
// first moment by a and the second by a^2, so the moments are those the grown model's own
// gradients would have built and Adam's direction m / sqrt(v) is unchanged at every copy.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/rng.hpp"
#include "../nn/arena.hpp"
#include "plan.hpp"

namespace bonsai {

/// What an optimizer moment becomes when its model grows.
///  reset:     zero everywhere (with the step count reset: a fresh optimizer; StackBERT's
///             --reset-optimizer, LiGO, LEMON).
///  carry:     the source moments in the old slice (original units of layers kept in place),
///             zero for every new entry and new layer (MSG).
///  duplicate: every copied entry takes its source's moments, fills and identity layers 0
///             (StackBERT's --double-optimizer, generalised to width).
///  gradient:  like duplicate, with each entry scaled as the grown model's gradient is: by the
///             share a of its output unit (exp_avg) or a^2 (exp_avg_sq); Staged Training's
///             exp_avg / 2, exp_avg_sq / 4 for doubling. Exact for copy-only maps without split
///             noise (and zero-filled RMSNorm residuals); stacked layers, which do not keep the
///             function, are scaled like their source.
enum class StateGrowth : std::uint8_t { reset, carry, duplicate, gradient };

/// Which Adam moment grow_state maps (they differ under StateGrowth::gradient only).
enum class Moment : std::uint8_t { first, second };

inline const char* to_string(StateGrowth s) {
  switch (s) {
    case StateGrowth::reset: return "reset";
    case StateGrowth::carry: return "carry";
    case StateGrowth::duplicate: return "duplicate";
    case StateGrowth::gradient: return "gradient";
  }
  return "?";
}

namespace detail {

enum class GrowMode : std::uint8_t { values, carry, duplicate, gradient };

/// Target row r' of a grown matrix.
struct GrowRow {
  enum Kind : std::uint8_t { copy, avg, zero, random } kind = zero;
  index_t src = -1;    // source row (copy)
  bool alt = false;    // read from the AKI layer's tensor
  double scale = 1.0;  // of the copy (StateGrowth::gradient)
};
/// Target column c' of a grown matrix.
struct GrowCol {
  enum Kind : std::uint8_t { copy, free, none } kind = none;  // free: random; none: 0
  index_t src = -1;    // source column (copy)
  double share = 1.0;  // of the source column
  bool alt = false;
};

inline std::uint64_t name_hash(std::string_view s, std::uint64_t seed) {
  std::uint64_t h = 1469598103934665603ull ^ (seed * 0x9E3779B97F4A7C15ull);
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

template <class T>
class Grower {
 public:
  Grower(const GrowthPlan& plan, GrowMode mode, const ParamArena<T>& from, const T* src,
         const ParamArena<T>& to, T* dst, Moment moment = Moment::first)
      : m_plan(plan),
        m_mode(mode),
        m_moment(moment),
        m_from(from),
        m_src(src),
        m_to(to),
        m_dst(dst) {
    const GptConfig& a = plan.from;
    const GptConfig& b = plan.to;
    const auto holds = [](const ParamArena<T>& arena, const GptConfig& c) {
      const ParamSlot* wte = arena.find("wte");
      return wte && wte->shape == std::vector<index_t>{c.vocab_size, c.d_model};
    };
    BONSAI_CHECK(holds(from, a), "grow: the source arena does not hold the plan's source model (wte should be ",
                 a.vocab_size, " x ", a.d_model, ")");
    BONSAI_CHECK(holds(to, b), "grow: the target arena does not hold the plan's grown model (wte should be ",
                 b.vocab_size, " x ", b.d_model, ")");
    {  // norm outputs: the residual's copies; filled units read as 0
      std::vector<index_t> s;
      std::vector<Fill> f;
      for (index_t j = 0; j < plan.residual.to(); ++j) {
        s.push_back(plan.residual.source(j));
        f.push_back(plan.residual.fill(j) == Fill::copy ? Fill::copy : Fill::zero);
      }
      m_norm_out = WidthMap(plan.residual.from(), std::move(s), std::move(f));
    }
    const index_t hd = a.head_dim(), group = a.n_head / a.kv_heads();
    m_q = plan.heads.expand(group * hd);
    m_kv = plan.heads.expand(hd);
  }

  void run() {
    for (const ParamSlot& t : m_to.slots()) {
      Rng rng(name_hash(t.name, m_plan.options.seed));
      T* out = m_dst + t.offset;
      std::fill_n(out, t.size(), T(0));
      grow_slot(t, out, rng);
    }
  }

 private:
  // ---- the rules of each axis ---------------------------------------------------------------

  /// Rows that follow an output space's map; `zero_as` is what a zero-filled unit's producer
  /// row holds (zero, or random where another factor already makes the unit 0).
  std::vector<GrowRow> rows(const WidthMap& m, GrowRow::Kind zero_as = GrowRow::zero,
                            bool aki = false) const {
    std::vector<GrowRow> r(std::size_t(m.to()));
    for (index_t j = 0; j < m.to(); ++j) {
      GrowRow& x = r[std::size_t(j)];
      switch (m.fill(j)) {
        case Fill::copy:
          if (m_mode == GrowMode::carry && !m.original(j)) break;
          x = {GrowRow::copy, m.source(j), aki && !m.original(j), gradient_scale(m.share(j))};
          break;
        case Fill::avg:
          if (m_mode == GrowMode::values) x.kind = GrowRow::avg;
          break;
        case Fill::zero:
          if (m_mode == GrowMode::values) x.kind = zero_as;
          break;
        case Fill::fresh:
          if (m_mode == GrowMode::values) x.kind = GrowRow::random;
          break;
      }
    }
    return r;
  }
  /// Columns that read an input space: copies split by share * factor (factor 0: cancel);
  /// columns on fresh units are 0, or free under MSG's masks (`masked`).
  std::vector<GrowCol> cols(const WidthMap& m, double factor = 1.0, bool aki = false,
                            bool masked = false) const {
    std::vector<GrowCol> c(std::size_t(m.to()));
    for (index_t j = 0; j < m.to(); ++j) {
      GrowCol& x = c[std::size_t(j)];
      switch (m.fill(j)) {
        case Fill::copy:
          if (m_mode == GrowMode::carry && !m.original(j)) break;
          x = {GrowCol::copy, m.source(j), m_mode == GrowMode::values ? factor * m.share(j) : 1.0,
               aki && !m.original(j)};
          break;
        case Fill::zero:
          if (m_mode == GrowMode::values && factor != 0.0) x.kind = GrowCol::free;
          break;
        case Fill::avg:
          fail("grow: an avg-filled space cannot be read by a linear layer");
        case Fill::fresh:
          if (m_mode == GrowMode::values && masked) x.kind = GrowCol::free;
          break;
      }
    }
    return c;
  }
  /// What a moment entry is multiplied by when its output unit has share a: a for the first
  /// moment, a^2 for the second under StateGrowth::gradient; 1 otherwise.
  double gradient_scale(double share) const {
    if (m_mode != GrowMode::gradient) return 1.0;
    return m_moment == Moment::first ? share : share * share;
  }

  static std::vector<GrowCol> identity_cols(index_t n) {
    std::vector<GrowCol> c(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) c[std::size_t(i)] = {GrowCol::copy, i, 1.0, false};
    return c;
  }

  // ---- the one kernel: W' (rows', cols') from W (., src_cols) ----------------------------------

  void apply(T* dst, const T* main, const T* alt, index_t src_cols, const std::vector<GrowRow>& rows,
             const std::vector<GrowCol>& cols, double noise, Rng& rng, index_t src_rows) const {
    const index_t nc = index_t(cols.size());
    const double fill = m_plan.options.fill_std;
    auto value = [&](const T* base, index_t r, const GrowCol& c) -> T {
      switch (c.kind) {
        case GrowCol::copy: return T(c.share * double(base[r * src_cols + c.src]));
        case GrowCol::free: return T(rng.normal(0.0, fill));
        case GrowCol::none: return T(0);
      }
      return T(0);
    };
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const GrowRow& r = rows[i];
      T* out = dst + index_t(i) * nc;
      switch (r.kind) {
        case GrowRow::copy:
          for (index_t j = 0; j < nc; ++j) {
            const GrowCol& c = cols[std::size_t(j)];
            out[j] = T(r.scale * double(value(r.alt || c.alt ? alt : main, r.src, c)));
          }
          break;
        case GrowRow::avg:
          for (index_t j = 0; j < nc; ++j) {
            const GrowCol& c = cols[std::size_t(j)];
            if (c.kind != GrowCol::copy) {
              out[j] = value(main, 0, c);
              continue;
            }
            double sum = 0;
            for (index_t k = 0; k < src_rows; ++k) sum += double(main[k * src_cols + c.src]);
            out[j] = T(c.share * sum / double(src_rows));
          }
          break;
        case GrowRow::zero: break;
        case GrowRow::random:
          for (index_t j = 0; j < nc; ++j) out[j] = T(rng.normal(0.0, fill));
          break;
      }
    }
    if (noise <= 0) return;
    // Centred noise over each group of copied columns: the group's sum is unchanged.
    std::vector<std::vector<index_t>> groups(static_cast<std::size_t>(src_cols));
    for (index_t j = 0; j < nc; ++j)
      if (cols[std::size_t(j)].kind == GrowCol::copy) groups[std::size_t(cols[std::size_t(j)].src)].push_back(j);
    std::vector<double> draw;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].kind != GrowRow::copy && rows[i].kind != GrowRow::avg) continue;
      T* out = dst + index_t(i) * nc;
      for (const auto& g : groups) {
        if (g.size() < 2) continue;
        draw.resize(g.size());
        double mean = 0;
        for (double& d : draw) mean += (d = rng.normal(0.0, noise));
        mean /= double(g.size());
        for (std::size_t k = 0; k < g.size(); ++k) out[g[k]] += T(draw[k] - mean);
      }
    }
  }

  // ---- slots ------------------------------------------------------------------------------------

  struct Source {
    const T* main = nullptr;
    const T* alt = nullptr;
    const ParamSlot* slot = nullptr;
  };
  Source source(const std::string& name, index_t layer, std::string_view rest, index_t alt_layer) const {
    const std::string n = layer < 0 ? std::string(rest) : layer_param_name(layer, rest);
    const ParamSlot* s = m_from.find(n);
    BONSAI_CHECK(s != nullptr, "grow: the grown parameter '", name, "' needs '", n,
                 "', which the source model does not have");
    Source out{m_src + s->offset, m_src + s->offset, s};
    if (alt_layer >= 0 && alt_layer != layer) {
      const ParamSlot* a = m_from.find(layer_param_name(alt_layer, rest));
      BONSAI_CHECK(a && a->shape == s->shape, "grow: AKI needs '", rest, "' of layer ", alt_layer,
                   " shaped like layer ", layer, "'s");
      out.alt = m_src + a->offset;
    }
    return out;
  }

  void check_shape(const ParamSlot& t, std::vector<index_t> want) const {
    BONSAI_CHECK(t.shape == want, "grow: '", t.name, "' is ", bonsai::detail::shape_string(t.shape),
                 " in the grown model but the plan makes it ", bonsai::detail::shape_string(want));
  }

  void grow_slot(const ParamSlot& t, T* out, Rng& rng) {
    const std::string& name = t.name;
    if (name == "wte" || name == "wpe") return embedding(t, out, rng);
    if (name == "ln_f.weight" || name == "ln_f.bias") return norm(t, out, source(name, -1, name, -1), true);
    const auto layer = split_layer_param_name(name);
    BONSAI_CHECK(layer && layer->layer < m_plan.depth.to(), "grow: no rule for parameter '", name, "'");
    const index_t l = layer->layer;
    const std::string rest(layer->rest);
    const LayerSource& ls = m_plan.depth[l];
    if (m_mode != GrowMode::values) {
      if (ls.init != LayerInit::copy) return;  // identity layers start with zero state
      if (m_mode == GrowMode::carry && m_plan.depth.is_new(l)) return;
    }
    const bool aki = m_plan.options.aki && m_mode != GrowMode::carry;
    const index_t alt_layer = aki ? std::min(ls.src + 1, m_plan.from.n_layer - 1) : -1;
    const Source s = source(name, ls.src, rest, alt_layer);
    const bool use_alt = aki && s.alt != s.main;
    if (rest.starts_with("ln_")) return norm(t, out, s, false);

    const LayerInit init = m_mode == GrowMode::values ? ls.init : LayerInit::copy;
    const GptConfig& a = m_plan.from;
    const GptConfig& b = m_plan.to;
    if (rest == "attn.qkv.weight" || rest == "attn.qkv.bias") {
      // Rows: [q heads (A) | k heads (KV) | v heads (KV)]; a zero-filled head group has v = 0
      // (its output is 0) and free q, k.
      std::vector<GrowRow> r;
      auto part = [&](const WidthMap& m, index_t offset, GrowRow::Kind zero_as) {
        for (GrowRow x : rows(m, zero_as, use_alt)) {
          if (x.kind == GrowRow::copy) x.src += offset;
          r.push_back(x);
        }
      };
      part(m_q, 0, GrowRow::random);
      part(m_kv, a.attention_width(), GrowRow::random);
      part(m_kv, a.attention_width() + a.kv_width(), GrowRow::zero);
      const bool bias = rest.ends_with("bias");
      check_shape(t, bias ? std::vector<index_t>{index_t(r.size())}
                          : std::vector<index_t>{index_t(r.size()), b.d_model});
      if (bias) return apply(out, s.main, s.alt, 1, r, identity_cols(1), 0, rng, s.slot->shape[0]);
      return apply(out, s.main, s.alt, a.d_model, r, cols(m_norm_out), split_noise(), rng,
                   s.slot->shape[0]);
    }
    if (rest == "attn.proj.weight") {
      check_shape(t, {b.d_model, b.attention_width()});
      if (init == LayerInit::zero_out) return;
      const bool cancel = init == LayerInit::cancel;
      return apply(out, s.main, s.alt, a.attention_width(), rows(m_plan.residual),
                   cols(m_q, cancel ? 0.0 : 1.0, use_alt, masked()),
                   cancel ? m_plan.options.fill_std : split_noise(), rng, a.d_model);
    }
    if (rest == "attn.proj.bias" || rest == "mlp.down.bias") {
      check_shape(t, {b.d_model});
      if (init != LayerInit::copy) return;
      return apply(out, s.main, s.alt, 1, rows(m_plan.residual), identity_cols(1), 0, rng, a.d_model);
    }
    const FfnKind kind = b.structured_ffn(l) ? b.ffn : FfnKind::dense;
    if (rest == "mlp.up.bias" || rest == "mlp.gate.bias") {
      check_shape(t, {b.ffn_width()});
      return apply(out, s.main, s.alt, 1, rows(m_plan.ffn, up_zero(rest), use_alt), identity_cols(1),
                   0, rng, a.ffn_width());
    }
    if (rest.starts_with("mlp.up.") || rest.starts_with("mlp.gate.")) {
      const std::string param = rest.substr(rest.find('.', 4) + 1);
      return ffn_param(t, out, s, kind, param, m_norm_out, rows(m_plan.ffn, up_zero(rest), use_alt),
                       m_plan.ffn, /*down=*/false, init, use_alt, rng);
    }
    if (rest.starts_with("mlp.down.")) {
      const std::string param = rest.substr(9);
      return ffn_param(t, out, s, kind, param, m_plan.ffn, rows(m_plan.residual), m_plan.residual,
                       /*down=*/true, init, use_alt, rng);
    }
    fail("grow: no rule for parameter '", name, "'");
  }

  /// What a zero-filled FFN unit's up/gate row holds: the gate (SwiGLU) or the GELU up row is
  /// 0 so the unit is 0; SwiGLU's up row is then free.
  GrowRow::Kind up_zero(const std::string& rest) const {
    return m_plan.from.act == ActKind::swiglu && rest.starts_with("mlp.up.") ? GrowRow::random
                                                                          : GrowRow::zero;
  }

  bool masked() const { return m_plan.options.masked; }

  double split_noise() const { return m_mode == GrowMode::values ? m_plan.options.split_noise : 0.0; }

  /// One parameter of an FFN map in -> out: `in` the input space (norm output or FFN units),
  /// `out_rows` the output rows, `out_map` the output space's map.
  void ffn_param(const ParamSlot& t, T* out, const Source& s, FfnKind kind, const std::string& param,
                 const WidthMap& in, const std::vector<GrowRow>& out_rows, const WidthMap& out_map,
                 bool down, LayerInit init, bool aki, Rng& rng) {
    const bool cancel = down && init == LayerInit::cancel, zero_out = down && init == LayerInit::zero_out;
    const double noise = cancel ? m_plan.options.fill_std : split_noise();
    const double factor = cancel ? 0.0 : 1.0;
    const index_t n_in = in.from(), n_out = out_map.from();
    const bool in_aki = down && aki;  // the down map reads the FFN units AKI replaced
    switch (kind) {
      case FfnKind::dense:
        BONSAI_CHECK(param == "weight", "grow: no rule for '", t.name, "'");
        check_shape(t, {out_map.to(), in.to()});
        if (zero_out) return;
        return apply(out, s.main, s.alt, n_in, out_rows, cols(in, factor, in_aki, masked()), noise, rng,
                     n_out);
      case FfnKind::lowrank: {
        const WidthMap& rk = m_plan.rank;
        if (param == "V") {  // (R, in): rank rows, input columns
          check_shape(t, {rk.to(), in.to()});
          return apply(out, s.main, s.alt, n_in, rows(rk), cols(in, factor, in_aki, masked()), noise, rng,
                       rk.from());
        }
        BONSAI_CHECK(param == "U", "grow: no rule for '", t.name, "'");
        check_shape(t, {out_map.to(), rk.to()});  // (out, R)
        if (zero_out) return;
        return apply(out, s.main, s.alt, rk.from(), out_rows, cols(rk), 0, rng, n_out);
      }
      case FfnKind::blockdense: {
        const WidthMap& rk = m_plan.rank;
        if (param == "1.weight") {  // (out, R) dense, applied second
          check_shape(t, {out_map.to(), rk.to()});
          if (zero_out) return;
          return apply(out, s.main, s.alt, rk.from(), out_rows, cols(rk), 0, rng, n_out);
        }
        BONSAI_CHECK(param == "0.blocks", "grow: no rule for '", t.name, "'");
        // (B, R/B, in/B): block b maps inputs [b in/B, ...) to rank units [b R/B, ...).
        return block_diag(t, out, s, rows(rk), BlockLayout::contiguous, rk.from(),
                          cols(in, factor, in_aki, masked()), BlockLayout::contiguous, n_in, noise,
                          rng);
      }
      case FfnKind::blockshuffle: {
        // in -> m = min(in, out) -> out: the first factor maps contiguous input blocks to
        // contiguous blocks of the inner space, the second reads the inner space and writes the
        // output interleaved (block c holds units c, c + B, ...).
        const WidthMap& inner = m_plan.inner;
        if (param == "0.blocks")
          return block_diag(t, out, s, rows(inner), BlockLayout::contiguous, inner.from(),
                            cols(in, factor, in_aki, masked()), BlockLayout::contiguous, n_in,
                            noise, rng);
        BONSAI_CHECK(param == "2.blocks", "grow: no rule for '", t.name, "'");
        if (zero_out) {
          check_shape(t, {m_plan.from.blocks, out_map.to() / m_plan.from.blocks,
                          inner.to() / m_plan.from.blocks});
          return;
        }
        return block_diag(t, out, s, out_rows, BlockLayout::interleaved, n_out, cols(inner),
                          BlockLayout::interleaved, inner.from(), 0, rng);
      }
    }
    fail("grow: no rule for '", t.name, "'");
  }

  /// A block-diagonal factor (B, rows' / B, cols' / B) from (B, rows / B, cols / B): block b
  /// takes the target rows and columns of its block under each space's layout. The plan's maps
  /// are block-aligned (every copy stays in its block), so each block grows on its own.
  void block_diag(const ParamSlot& t, T* out, const Source& s, std::vector<GrowRow> rows,
                  BlockLayout row_layout, index_t src_rows, std::vector<GrowCol> cols,
                  BlockLayout col_layout, index_t src_cols, double noise, Rng& rng) const {
    const index_t nb = m_plan.from.blocks, rows2 = index_t(rows.size()),
                  cols2 = index_t(cols.size());
    const index_t br = src_rows / nb, bc = src_cols / nb, br2 = rows2 / nb, bc2 = cols2 / nb;
    check_shape(t, {nb, br2, bc2});
    for (index_t blk = 0; blk < nb; ++blk) {
      std::vector<GrowRow> local_rows(static_cast<std::size_t>(br2));
      for (index_t o = 0; o < br2; ++o) {
        GrowRow r = rows[std::size_t(unit_of(row_layout, blk, o, rows2, nb))];
        if (r.kind == GrowRow::copy) r.src = block_of(row_layout, r.src, src_rows, nb).second;
        local_rows[std::size_t(o)] = r;
      }
      std::vector<GrowCol> local_cols(static_cast<std::size_t>(bc2));
      for (index_t o = 0; o < bc2; ++o) {
        GrowCol c = cols[std::size_t(unit_of(col_layout, blk, o, cols2, nb))];
        if (c.kind == GrowCol::copy) c.src = block_of(col_layout, c.src, src_cols, nb).second;
        local_cols[std::size_t(o)] = c;
      }
      apply(out + blk * br2 * bc2, s.main + blk * br * bc, s.alt + blk * br * bc, bc, local_rows,
            local_cols, noise, rng, br);
    }
  }

  /// Token and position tables (rows, D): each row grows along the residual map; fresh units
  /// (MSG) are drawn N(0, fill_std^2).
  void embedding(const ParamSlot& t, T* out, Rng& rng) const {
    const Source s = source(t.name, -1, t.name, -1);
    const index_t rows = s.slot->shape[0], d = m_plan.residual.from(), d2 = m_plan.residual.to();
    check_shape(t, {rows, d2});
    const WidthMap& m = m_plan.residual;
    for (index_t r = 0; r < rows; ++r) {
      const T* x = s.main + r * d;
      T* y = out + r * d2;
      double mean = 0;
      for (index_t i = 0; i < d; ++i) mean += double(x[i]);
      mean /= double(d);
      for (index_t j = 0; j < d2; ++j) {
        switch (m.fill(j)) {
          case Fill::copy:
            if (m_mode != GrowMode::carry || m.original(j))
              y[j] = T(gradient_scale(m.share(j)) * double(x[m.source(j)]));
            break;
          case Fill::avg:
            if (m_mode == GrowMode::values) y[j] = T(mean);
            break;
          case Fill::fresh:
            if (m_mode == GrowMode::values) y[j] = T(rng.normal(0.0, m_plan.options.fill_std));
            break;
          case Fill::zero: break;
        }
      }
    }
  }

  /// Norm gain and bias: copies scaled by sqrt(s) (gain) and, before the tied head, divided
  /// by the copy count; fills get gain 1 and bias 0. Their gradients: the normalised input of
  /// a copy is x_hat / sqrt(s) and its readers take the share a (the tied head reads the final
  /// norm whole), so a gain's gradient scales by a / sqrt(s) (final: 1 / sqrt(s)) and a bias's
  /// by a (final: 1).
  void norm(const ParamSlot& t, T* out, const Source& s, bool final) const {
    const WidthMap& m = m_plan.residual;
    check_shape(t, {m.to()});
    const bool gain = t.name.ends_with("weight");
    const double scale = gain ? std::sqrt(m_plan.norm_scale()) : 1.0;
    for (index_t j = 0; j < m.to(); ++j) {
      if (m.fill(j) != Fill::copy) {
        if (m_mode == GrowMode::values && gain) out[j] = T(1);
        continue;
      }
      if (m_mode == GrowMode::carry && !m.original(j)) continue;
      const double x = double(s.main[m.source(j)]);
      if (m_mode == GrowMode::values) {
        out[j] = T(x * scale / (final ? double(m.count(m.source(j))) : 1.0));
      } else {
        const double a = (final ? 1.0 : m.share(j)) / (gain ? std::sqrt(m_plan.norm_scale()) : 1.0);
        out[j] = T(gradient_scale(a) * x);
      }
    }
  }

  const GrowthPlan& m_plan;
  GrowMode m_mode;
  Moment m_moment;
  const ParamArena<T>& m_from;
  const T* m_src;
  const ParamArena<T>& m_to;
  T* m_dst;
  WidthMap m_norm_out, m_q, m_kv;
};

}  // namespace detail

/// Writes the grown model's parameters into `to` (laid out for plan.to) from `from` (plan.from).
template <class T>
void grow_parameters(const GrowthPlan& plan, const ParamArena<T>& from, ParamArena<T>& to) {
  BONSAI_CHECK(!plan.upcycle, "grow_parameters: an upcycling plan needs the models; call "
               "upcycle(dense, moe, options) (grow/upcycle.hpp)");
  detail::Grower<T>(plan, detail::GrowMode::values, from, from.values(), to, to.values()).run();
}

/// Maps one optimizer moment `src` (in `from`'s layout) to `dst` (in `to`'s layout). After an
/// upcycling every policy but reset carries the moments of the parameters the models share and
/// starts the experts and routers at 0.
template <class T>
void grow_state(const GrowthPlan& plan, StateGrowth policy, Moment moment,
                const ParamArena<T>& from, const T* src, const ParamArena<T>& to, T* dst) {
  using detail::GrowMode;
  if (plan.upcycle) {
    std::fill_n(dst, to.size(), T(0));
    if (policy != StateGrowth::reset) copy_by_name(from, src, to, dst);
    return;
  }
  GrowMode mode = GrowMode::duplicate;
  switch (policy) {
    case StateGrowth::reset:
      std::fill_n(dst, to.size(), T(0));
      return;
    case StateGrowth::carry:
      mode = GrowMode::carry;
      break;
    case StateGrowth::duplicate:
      mode = GrowMode::duplicate;
      break;
    case StateGrowth::gradient:
      mode = GrowMode::gradient;
      break;
  }
  detail::Grower<T>(plan, mode, from, src, to, dst, moment).run();
}

}  // namespace bonsai
