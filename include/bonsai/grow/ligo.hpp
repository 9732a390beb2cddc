// bonsai/grow/ligo.hpp — LiGO, the learned linear growth operator (Wang et al., ICLR 2023; spec
// growth.md §5, §13.6): the grown model's parameters are a learned linear function of the frozen
// source parameters, trained for a few steps (the paper: 100) on the ordinary language-model loss
// of the grown model, then written out once and discarded.
//
// Every target tensor is a depth blend of the source layers' tensors followed by width maps:
//
//   M_l = sum_j w_m[l, j] S_j                 S_j (n_out, n_in) module m of source layer j,
//                                             w_m (L', L) one blend per module type m
//   W'_l = B_out M_l A_in^T                   B_out (n_out', n_out): new rows are linear
//                                             combinations of old rows; A_in (n_in', n_in) the
//                                             same for columns
//   b'_l = B_out (sum_j w_m[l, j] b_j)        biases share their weight's w_m and out map
//
// (depth blend first, then width: the official code's order). The maps of each space:
//
//   residual (D' x D)      one pair (B_res, A_res) for every layer and the embeddings (the paper's
//                          B_emb): wte' = wte B_res^T, wpe' = wpe B_res^T, norm gains and biases
//                          B_res gamma; qkv, up and gate read the norm output through A_res;
//                          attn.proj and mlp.down write it through B_res
//   heads, per layer l     B^Q_l (H' hd x H hd), B^K_l, B^V_l (Hkv' hd x Hkv hd) on the rows of
//                          the fused q;k;v projection; A^O_l (H' hd x H hd) on attn.proj's columns
//   FFN, per layer l       B^fc1_l (F' x F) on mlp.up's rows (and SwiGLU's mlp.gate's);
//                          A^fc2_l (F' x F) on mlp.down's columns
//   depth                  w_m (L' x L) for m in ln_1, attn.qkv, attn.proj, ln_2, mlp.up,
//                          mlp.gate (SwiGLU), mlp.down
//
// The final norm reads the tied head, so its gain and bias are further divided by a fixed
// per-coordinate factor c_i, the copy count of the source unit coordinate i copies (spec §0.1
// item 4): gamma_f' = diag(1/c) B_res gamma_f.
//
// Initialisation keeps the function: with a GrowthPlan of copy maps (expansion P_s, split
// Q_s = P_s^T diag(1/count), Q_s P_s = I), B_s = P_s, A_s = Q_s^T (head maps at coordinate
// granularity) and w_m = the plan's one-hot layer sources, with the rows of w_proj and w_down
// zero for the plan's identity (zero_out) layers. Then materialize() writes exactly what
// grow_parameters(plan) writes for a plan without split noise (Net2Net + StackBERT / Net2Net's
// deeper net). The official code instead starts A as plain copies (W' = [W, W C^T], no 1/count
// on the input side), which multiplies every fan-in by the copy count and is not function
// preserving; LigoOptions::normalize_inputs = false reproduces it.
//
// The operator's parameters live in their own ParamArena (arena()), so the ordinary AdamW trains
// them; backward() maps the target model's gradients G (target.grads()) onto them, the exact
// transpose of the linear map:
//
//   dB_out += G A_in M_l^T      dA_in += G^T B_out M_l      dM_l = B_out^T G A_in
//   dw_m[l, j] += <dM_l, S_j>   (vectors: dB += g m^T, dm = B^T g; wte: dB_res += G_wte^T wte)
//
// train_learned_growth() (grow/learned.hpp) runs the loop: materialize into the target model,
// forward and backward it, map the gradient back, step AdamW on the operator; at the end
// materialize once more.
//
// Supported: dense FFNs (GELU and SwiGLU), LayerNorm and RMSNorm, learned and rotary positions,
// grouped-query attention. Plans must be copy maps the operator can start from exactly: a
// residual map whose units are all copied equally often, head and FFN maps of copies, copy and
// zero_out layers, no split noise, no AKI, no MSG masks, no structured FFN. plan.frozen_layers
// (MSLT) plays no part: it concerns the training after growth.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/eigen.hpp"
#include "../core/error.hpp"
#include "../nn/arena.hpp"
#include "../nn/gpt.hpp"
#include "learned.hpp"
#include "plan.hpp"

namespace bonsai {

/// How a Ligo operator starts.
struct LigoOptions {
  /// Input maps A start as the plan's split Q^T (each copy's share 1 / count): the grown model
  /// computes the source model's function. false starts A as plain copies like the official
  /// code (no 1 / count), which is not function preserving; the operator training is then
  /// left to compensate.
  bool normalize_inputs = true;
};

template <class T>
class Ligo {
 public:
  using value_type = T;

  /// The operator of `plan` over the source model's parameters `source` (laid out for
  /// plan.from; copied, so `source` may change or go away afterwards), initialised to the
  /// plan's copy maps (see LigoOptions). Throws, with a sentence, for plans it cannot start from
  /// and for a source arena that does not hold plan.from.
  Ligo(const GrowthPlan& plan, const ParamArena<T>& source, LigoOptions options = {})
      : m_plan(plan), m_options(options) {
    check_plan(plan);
    const GptConfig& a = plan.from;
    const GptConfig& b = plan.to;
    detail::check_dense_gpt_arena("LiGO", source, a, "source", "plan's source model");
    m_L = a.n_layer;
    m_L2 = b.n_layer;
    m_q = plan.heads.expand((a.n_head / a.kv_heads()) * a.head_dim());
    m_kv = plan.heads.expand(a.head_dim());

    // Frozen source tensors: embeddings and the final norm as they are, layer tensors stacked
    // per module as columns (row-major flattening) of an (n_out n_in, L) matrix.
    const T* src = source.values();
    auto copy_rows = [&](const std::string& name, RowMat& out) {
      const ParamSlot& s = source.slot(name);
      const index_t cols = s.shape.size() > 1 ? s.shape[1] : 1;
      out = CMap(src + s.offset, s.shape[0], cols);
    };
    copy_rows("wte", m_wte);
    if (a.pos == PosKind::learned) copy_rows("wpe", m_wpe);
    copy_rows("ln_f.weight", m_lnf_w);
    if (a.norm == NormKind::layernorm) copy_rows("ln_f.bias", m_lnf_b);
    m_count.resize(std::size_t(b.d_model));
    for (index_t j = 0; j < b.d_model; ++j)
      m_count[std::size_t(j)] = T(double(plan.residual.count(plan.residual.source(j))));

    const index_t d = a.d_model, d2 = b.d_model, qkv = a.attention_width() + 2 * a.kv_width();
    const index_t qkv2 = b.attention_width() + 2 * b.kv_width();
    const index_t f = a.ffn_width(), f2 = b.ffn_width(), w = a.attention_width();
    const index_t w2 = b.attention_width();
    const bool ln = a.norm == NormKind::layernorm;
    auto module = [&](const char* depth, const char* rest, index_t rows, index_t cols,
                      index_t rows2, index_t cols2, Out out, In in) {
      Module m{depth_index(depth), rest, rows, cols, rows2, cols2, out, in, Mat(rows * cols, m_L)};
      for (index_t j = 0; j < m_L; ++j) {
        const ParamSlot& s = source.slot(layer_param_name(j, rest));
        m.stack.col(j) = Eigen::Map<const Vec>(src + s.offset, rows * cols);
      }
      m_modules.push_back(std::move(m));
    };
    module("ln_1", "ln_1.weight", d, 1, d2, 1, Out::res, In::none);
    if (ln) module("ln_1", "ln_1.bias", d, 1, d2, 1, Out::res, In::none);
    module("attn.qkv", "attn.qkv.weight", qkv, d, qkv2, d2, Out::qkv, In::res);
    module("attn.qkv", "attn.qkv.bias", qkv, 1, qkv2, 1, Out::qkv, In::none);
    module("attn.proj", "attn.proj.weight", d, w, d2, w2, Out::res, In::heads);
    module("attn.proj", "attn.proj.bias", d, 1, d2, 1, Out::res, In::none);
    module("ln_2", "ln_2.weight", d, 1, d2, 1, Out::res, In::none);
    if (ln) module("ln_2", "ln_2.bias", d, 1, d2, 1, Out::res, In::none);
    module("mlp.up", "mlp.up.weight", f, d, f2, d2, Out::ffn, In::res);
    module("mlp.up", "mlp.up.bias", f, 1, f2, 1, Out::ffn, In::none);
    if (a.act == ActKind::swiglu) {
      module("mlp.gate", "mlp.gate.weight", f, d, f2, d2, Out::ffn, In::res);
      module("mlp.gate", "mlp.gate.bias", f, 1, f2, 1, Out::ffn, In::none);
    }
    module("mlp.down", "mlp.down.weight", d, f, d2, f2, Out::res, In::ffn);
    module("mlp.down", "mlp.down.bias", d, 1, d2, 1, Out::res, In::none);

    // The operator's parameters.
    m_res_b = m_arena.add("res.B", {d2, d});
    m_res_a = m_arena.add("res.A", {d2, d});
    for (const std::string& name : m_depth_names)
      m_depth.push_back(m_arena.add("depth." + name, {m_L2, m_L}));
    const index_t kv = a.kv_width(), kv2 = b.kv_width();
    for (index_t l = 0; l < m_L2; ++l) {
      LayerMaps& m = m_layers.emplace_back();
      m.q = m_arena.add(layer_param_name(l, "attn.q.B"), {w2, w});
      m.k = m_arena.add(layer_param_name(l, "attn.k.B"), {kv2, kv});
      m.v = m_arena.add(layer_param_name(l, "attn.v.B"), {kv2, kv});
      m.o = m_arena.add(layer_param_name(l, "attn.proj.A"), {w2, w});
      m.up = m_arena.add(layer_param_name(l, "mlp.up.B"), {f2, f});
      m.down = m_arena.add(layer_param_name(l, "mlp.down.A"), {f2, f});
    }
    m_arena.allocate();
    init();
  }

  /// Resets the operator to the plan's copy maps (the state right after construction).
  void init() {
    std::fill_n(m_arena.values(), m_arena.size(), T(0));
    const bool split = m_options.normalize_inputs;
    auto expand = [&](index_t offset, const WidthMap& m, bool input) {
      MapR x = param(offset, m.to(), m.from());
      for (index_t j = 0; j < m.to(); ++j)
        x(j, m.source(j)) = input && split ? T(m.share(j)) : T(1);
    };
    expand(m_res_b, m_plan.residual, false);
    expand(m_res_a, m_plan.residual, true);
    for (const LayerMaps& m : m_layers) {
      expand(m.q, m_q, false);
      expand(m.k, m_kv, false);
      expand(m.v, m_kv, false);
      expand(m.o, m_q, true);
      expand(m.up, m_plan.ffn, false);
      expand(m.down, m_plan.ffn, true);
    }
    for (std::size_t i = 0; i < m_depth_names.size(); ++i) {
      MapR w = param(m_depth[i], m_L2, m_L);
      const bool output = m_depth_names[i] == "attn.proj" || m_depth_names[i] == "mlp.down";
      for (index_t l = 0; l < m_L2; ++l) {
        const LayerSource& s = m_plan.depth[l];
        if (!(output && s.init == LayerInit::zero_out)) w(l, s.src) = T(1);
      }
    }
  }

  /// Writes every parameter of the grown model into `target` (laid out for config(): build the
  /// target model with it, e.g. Gpt<Dense<T>, Dense<T>>(ligo.config())).
  void materialize(ParamArena<T>& target) const {
    detail::check_dense_gpt_arena("LiGO", target, m_plan.to, "target", "plan's grown model");
    T* out = target.values();
    const CMapR b_res = cparam(m_res_b, m_plan.to.d_model, m_plan.from.d_model);
    auto embedding = [&](const char* name, const RowMat& e) {  // (rows, D) -> (rows, D')
      const ParamSlot& s = target.slot(name);
      MapR(out + s.offset, s.shape[0], s.shape[1]).noalias() = e * b_res.transpose();
    };
    embedding("wte", m_wte);
    if (m_wpe.size()) embedding("wpe", m_wpe);
    auto final_norm = [&](const char* name, const RowMat& g) {  // (D) -> (D'), / copy count
      const ParamSlot& s = target.slot(name);
      Eigen::Map<Vec> y(out + s.offset, s.shape[0]);
      y.noalias() = b_res * g;
      for (index_t j = 0; j < y.size(); ++j) y[j] /= m_count[std::size_t(j)];
    };
    final_norm("ln_f.weight", m_lnf_w);
    if (m_lnf_b.size()) final_norm("ln_f.bias", m_lnf_b);

    Mat blended;
    for (const Module& m : m_modules) {
      blend(m, blended);
      for (index_t l = 0; l < m_L2; ++l) {
        const ParamSlot& s = target.slot(layer_param_name(l, m.rest));
        MapR y(out + s.offset, m.rows2, m.cols2);  // W'_l (n_out', n_in')
        const CMapR ml(blended.col(l).data(), m.rows, m.cols);  // M_l (n_out, n_in)
        for (const Piece& p : pieces(m.out, l)) {
          const CMapR bp = cparam(p.b, p.rows2, p.rows);  // B (n_out', n_out) of the piece
          auto yp = y.middleRows(p.row2, p.rows2);
          if (m.in == In::none) {
            yp.noalias() = bp * ml.middleRows(p.row, p.rows);
          } else {
            const RowMat bm = bp * ml.middleRows(p.row, p.rows);  // (n_out', n_in)
            yp.noalias() = bm * in_map(m.in, l).transpose();
          }
        }
      }
    }
  }

  /// Adds the gradient of the target model's loss with respect to the operator's parameters to
  /// arena().grads(), from the target's parameter gradients target.grads() (laid out for
  /// config()). Call arena().zero_grads() first unless accumulating.
  void backward(const ParamArena<T>& target) {
    detail::check_dense_gpt_arena("LiGO", target, m_plan.to, "target", "plan's grown model");
    const T* g = target.grads();
    const index_t d = m_plan.from.d_model, d2 = m_plan.to.d_model;
    MapR db_res = grad(m_res_b, d2, d);
    auto embedding = [&](const char* name, const RowMat& e) {
      const ParamSlot& s = target.slot(name);
      db_res.noalias() += CMapR(g + s.offset, s.shape[0], s.shape[1]).transpose() * e;
    };
    embedding("wte", m_wte);
    if (m_wpe.size()) embedding("wpe", m_wpe);
    auto final_norm = [&](const char* name, const RowMat& gamma) {
      const ParamSlot& s = target.slot(name);
      Vec gs = Eigen::Map<const Vec>(g + s.offset, s.shape[0]);  // (D')
      for (index_t j = 0; j < gs.size(); ++j) gs[j] /= m_count[std::size_t(j)];
      db_res.noalias() += gs * gamma.transpose();
    };
    final_norm("ln_f.weight", m_lnf_w);
    if (m_lnf_b.size()) final_norm("ln_f.bias", m_lnf_b);

    Mat blended, dblended;
    for (const Module& m : m_modules) {
      blend(m, blended);
      dblended.setZero(m.rows * m.cols, m_L2);  // dM_l as columns
      for (index_t l = 0; l < m_L2; ++l) {
        const ParamSlot& s = target.slot(layer_param_name(l, m.rest));
        const CMapR gy(g + s.offset, m.rows2, m.cols2);  // G (n_out', n_in')
        const CMapR ml(blended.col(l).data(), m.rows, m.cols);
        MapR dml(dblended.col(l).data(), m.rows, m.cols);
        for (const Piece& p : pieces(m.out, l)) {
          const CMapR bp = cparam(p.b, p.rows2, p.rows);
          MapR dbp = grad(p.b, p.rows2, p.rows);
          const auto gp = gy.middleRows(p.row2, p.rows2);
          const auto mp = ml.middleRows(p.row, p.rows);
          if (m.in == In::none) {
            dbp.noalias() += gp * mp.transpose();
            dml.middleRows(p.row, p.rows).noalias() += bp.transpose() * gp;
          } else {
            const CMapR a = in_map(m.in, l);
            const RowMat ga = gp * a;  // G A (n_out', n_in)
            dbp.noalias() += ga * mp.transpose();
            dml.middleRows(p.row, p.rows).noalias() += bp.transpose() * ga;
            const RowMat bm = bp * mp;  // B M (n_out', n_in)
            in_grad(m.in, l).noalias() += gp.transpose() * bm;
          }
        }
      }
      // dw (L', L) += dM^T S: <dM_l, S_j> for every pair.
      grad(m_depth[std::size_t(m.depth)], m_L2, m_L).noalias() += dblended.transpose() * m.stack;
    }
  }

  /// The operator's parameters (and gradients): "res.B", "res.A" (D', D); "depth.<module>"
  /// (L', L) for ln_1, attn.qkv, attn.proj, ln_2, mlp.up, [mlp.gate,] mlp.down; per target layer
  /// "h.<l>.attn.q.B" (H' hd, H hd), "h.<l>.attn.k.B" and "h.<l>.attn.v.B" (Hkv' hd, Hkv hd),
  /// "h.<l>.attn.proj.A" (H' hd, H hd), "h.<l>.mlp.up.B" and "h.<l>.mlp.down.A" (F', F).
  ParamArena<T>& arena() noexcept { return m_arena; }
  const ParamArena<T>& arena() const noexcept { return m_arena; }
  const GrowthPlan& plan() const noexcept { return m_plan; }
  /// The grown model's configuration (plan.to, whose norm epsilon the target model must use).
  const GptConfig& config() const noexcept { return m_plan.to; }
  const LigoOptions& options() const noexcept { return m_options; }

  /// Throws, with a sentence, unless the operator can start from `plan` (checked again by the
  /// constructor; call it to reject a plan before any work).
  static void check_plan(const GrowthPlan& p) {
    BONSAI_CHECK(!p.options.masked, "LiGO: an MSG plan (masked growth) has fresh units that no "
                 "linear map of the source produces; use copy maps (e.g. net2net, stackbert)");
    BONSAI_CHECK(p.from.moe_experts == 0 && p.to.moe_experts == 0, "LiGO: grows models without "
                 "Mixture-of-Experts layers (upcycle after growing)");
    BONSAI_CHECK(p.from.ffn == FfnKind::dense, "LiGO: learns dense FFN maps only, but the plan's "
                 "model has ", to_string(p.from.ffn), " FFNs (grow them with grow_parameters)");
    BONSAI_CHECK(!p.options.aki, "LiGO: bert2BERT's AKI (new units from the next layer) is not a "
                 "depth blend followed by width maps; use a plan without aki");
    BONSAI_CHECK(p.options.split_noise == 0.0, "LiGO: the operator starts from the plan's equal "
                 "split, but the plan adds split noise ", p.options.split_noise,
                 " (set GrowthOptions::split_noise = 0)");
    for (index_t j = 0; j < p.residual.to(); ++j)
      BONSAI_CHECK(p.residual.fill(j) == Fill::copy, "LiGO: residual unit ", j, " is ",
                   to_string(p.residual.fill(j)), "-filled, but the operator starts from copy "
                   "maps only (every residual unit a copy, e.g. WidthMap::tiled(D, kD, copy))");
    BONSAI_CHECK(p.residual.uniform(), "LiGO: the residual map copies its units unequally often "
                 "(", p.residual.from(), " -> ", p.residual.to(), "), which changes every norm's "
                 "statistics; grow d_model by a whole multiple");
    auto copies = [](const WidthMap& m, const char* what) {
      for (index_t j = 0; j < m.to(); ++j)
        BONSAI_CHECK(m.fill(j) == Fill::copy, "LiGO: ", what, " unit ", j, " is ",
                     to_string(m.fill(j)), "-filled, but the operator starts from copy maps only");
    };
    copies(p.heads, "head group");
    copies(p.ffn, "FFN");
    for (index_t l = 0; l < p.depth.to(); ++l)
      BONSAI_CHECK(p.depth[l].init != LayerInit::cancel, "LiGO: layer ", l, " is a cancel layer "
                   "(random fan-outs that sum to 0), which no depth blend produces; use zero_out");
    BONSAI_CHECK(p.to.head_dim() == p.from.head_dim(), "LiGO: head_dim changes from ",
                 p.from.head_dim(), " to ", p.to.head_dim());
  }

 private:
  using RowMat = EigenRowMajor<T>;
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  using MapR = Eigen::Map<RowMat>;
  using CMapR = Eigen::Map<const RowMat>;
  using CMap = CMapR;

  enum class Out : std::uint8_t { res, qkv, ffn };         // which B maps the rows
  enum class In : std::uint8_t { none, res, heads, ffn };  // which A maps the columns

  /// One kind of layer tensor ("attn.qkv.weight"), its source layers stacked.
  struct Module {
    index_t depth;  // index of its w_m
    std::string rest;
    index_t rows, cols, rows2, cols2;  // source and target shapes (vectors: cols 1)
    Out out;
    In in;
    Mat stack;  // (rows cols, L): column j = source layer j, row-major flattened
  };
  /// The offsets of one target layer's width maps in the operator arena.
  struct LayerMaps {
    index_t q = 0, k = 0, v = 0, o = 0, up = 0, down = 0;
  };
  /// A block of rows with its own out map: target rows [row2, row2 + rows2) are B (rows2, rows)
  /// times source rows [row, row + rows).
  struct Piece {
    index_t row2, rows2, row, rows, b;
  };


  index_t depth_index(const char* name) {
    for (std::size_t i = 0; i < m_depth_names.size(); ++i)
      if (m_depth_names[i] == name) return index_t(i);
    m_depth_names.emplace_back(name);
    return index_t(m_depth_names.size()) - 1;
  }

  MapR param(index_t offset, index_t rows, index_t cols) {
    return MapR(m_arena.values() + offset, rows, cols);
  }
  CMapR cparam(index_t offset, index_t rows, index_t cols) const {
    return CMapR(m_arena.values() + offset, rows, cols);
  }
  MapR grad(index_t offset, index_t rows, index_t cols) {
    return MapR(m_arena.grads() + offset, rows, cols);
  }

  /// M (rows cols, L') = S w^T: the depth blend of every target layer of module m.
  void blend(const Module& m, Mat& out) const {
    out.noalias() = m.stack * cparam(m_depth[std::size_t(m.depth)], m_L2, m_L).transpose();
  }

  /// The row blocks of an out map at target layer l.
  std::vector<Piece> pieces(Out out, index_t l) const {
    const GptConfig& a = m_plan.from;
    const GptConfig& b = m_plan.to;
    const LayerMaps& m = m_layers[std::size_t(l)];
    switch (out) {
      case Out::res: return {{0, b.d_model, 0, a.d_model, m_res_b}};
      case Out::ffn: return {{0, b.ffn_width(), 0, a.ffn_width(), m.up}};
      case Out::qkv: {
        const index_t w = a.attention_width(), w2 = b.attention_width();
        const index_t kv = a.kv_width(), kv2 = b.kv_width();
        return {{0, w2, 0, w, m.q}, {w2, kv2, w, kv, m.k}, {w2 + kv2, kv2, w + kv, kv, m.v}};
      }
    }
    return {};
  }

  /// The offset and shape of in map `in` at target layer l.
  std::pair<index_t, std::pair<index_t, index_t>> in_slot(In in, index_t l) const {
    const GptConfig& a = m_plan.from;
    const GptConfig& b = m_plan.to;
    const LayerMaps& m = m_layers[std::size_t(l)];
    switch (in) {
      case In::res: return {m_res_a, {b.d_model, a.d_model}};
      case In::heads: return {m.o, {b.attention_width(), a.attention_width()}};
      case In::ffn: return {m.down, {b.ffn_width(), a.ffn_width()}};
      case In::none: break;
    }
    detail::fail("LiGO: no input map");
  }
  CMapR in_map(In in, index_t l) const {
    const auto [offset, shape] = in_slot(in, l);
    return cparam(offset, shape.first, shape.second);
  }
  MapR in_grad(In in, index_t l) {
    const auto [offset, shape] = in_slot(in, l);
    return grad(offset, shape.first, shape.second);
  }

  GrowthPlan m_plan;
  LigoOptions m_options;
  index_t m_L = 0, m_L2 = 0;  // source and target layers
  WidthMap m_q, m_kv;         // the head map at coordinate granularity (query, key/value)
  RowMat m_wte, m_wpe;        // (V, D), (T, D) (empty with RoPE)
  RowMat m_lnf_w, m_lnf_b;    // (D, 1) final norm gain and bias (bias empty for RMSNorm)
  std::vector<T> m_count;     // (D') copy count of the source unit each residual unit copies
  std::vector<Module> m_modules;
  std::vector<std::string> m_depth_names;  // module types with a depth blend
  ParamArena<T> m_arena;
  index_t m_res_b = 0, m_res_a = 0;
  std::vector<index_t> m_depth;  // offsets of w_m, in m_depth_names' order
  std::vector<LayerMaps> m_layers;
};

}  // namespace bonsai
