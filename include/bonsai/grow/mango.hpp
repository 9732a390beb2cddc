// bonsai/grow/mango.hpp — Mango, the multi-linear growth operator (Pan et al., NeurIPS 2023,
// arXiv 2310.10699; spec growth.md §8, §13.6): every weight of the grown model is a learned
// linear function of every weight of the frozen source model, with the map written as a tensor
// ring of four small cores, trained for a few steps on the grown model's language-model loss,
// then written out once and discarded.
//
// The weight tensor. Per layer, the weight matrices are cut into D x D blocks W (out, in):
//
//   b = 0, 1, 2          q, k, v: row blocks of attn.qkv.weight (3D, D)
//   b = 3                o: attn.proj.weight (D, D)
//   b = 4 ..             up.c, c < m = F / D: rows [c D, (c + 1) D) of mlp.up.weight (F, D);
//                        then gate.c the same of mlp.gate.weight (SwiGLU only);
//                        then down.c: columns [c D, (c + 1) D) of mlp.down.weight (D, F)
//
// so B = 4 + (1 or 2) m + m blocks, and M[b, i, o, l] = W_{b,l}[o, i] (O the out index, I the in
// index) is the 4-way tensor M1 (B1, I1, O1, L1) of the source and M2 (B2, I2, O2, L2) of the
// grown model (I = O = D, B2 = B1 since F' / D' = F / D). The map
//
//   M2[b2,i2,o2,l2] = sum_{b1,i1,o1,l1} S[b1,i1,o1,l1; b2,i2,o2,l2] M1[b1,i1,o1,l1]
//   S[...] = Tr(S_B[:,b1,b2,:] S_I[:,i1,i2,:] S_O[:,o1,o2,:] S_L[:,l1,l2,:])
//          = sum_{r0,r1,r2,r3} S_B[r0,b1,b2,r1] S_I[r1,i1,i2,r2] S_O[r2,o1,o2,r3] S_L[r3,l1,l2,r0]
//
// has four cores S_B (R, B1, B2, R), S_I (R, I1, I2, R), S_O (R, O1, O2, R), S_L (R, L1, L2, R) of
// ring rank R. With R = 1 it is M2 = M1 x_B S_B x_I S_I x_O S_O x_L S_L: one block-mixing, one
// in-dim, one out-dim and one layer-mixing map shared by everything (per block W' = S_O^T W S_I
// when S_B and S_L are one-hot); larger R couples the modes. TensorRing applies it by
// sequential contractions, the closing bond r3 carried as an outer batch index:
//
//   X1[r3][l2,r0, b1,i1,o1] = sum_l1 S_L[r3,l1,l2,r0] M1[b1,i1,o1,l1]            (GEMM)
//   X2[r3][l2,b2,r1, i1,o1] = sum_{r0,b1} S_B[r0,b1,b2,r1] X1[r3][l2,r0,b1,i1,o1]  (per l2)
//   X3[r3][l2,b2,i2,r2, o1] = sum_{r1,i1} S_I[r1,i1,i2,r2] X2[r3][l2,b2,r1,i1,o1]  (per l2, b2)
//   M2[l2,b2,i2,o2]       += sum_{r2,o1} X3[r3][l2,b2,i2,r2,o1] S_O[r2,o1,o2,r3]   (per l2, b2)
//
// and the sum over r3 closes the ring (the trace). backward() runs the transposed contractions
// in reverse order: from G2 = dLoss/dM2 it adds dS_O, dS_I, dS_B, dS_L (each the product of the
// saved chain on one side and the back-propagated gradient on the other) to arena().grads(),
// so the ordinary AdamW trains the cores.
//
// Initialisation keeps the function. The operator starts from a GrowthPlan of copies (Net2Net
// width, StackBERT or Net2Net-deeper depth) that it can represent exactly: the residual map
// copies the D units circularly k times (target unit j copies unit j mod D, D' = k D, every
// unit copied equally often so norms stay exact). The same coordinate map is then head-granular
// for q, k, v, o (head h' copies head h' mod H) and, applied inside every D-unit block, a valid
// FFN unit map (unit c D' + j copies c D + j mod D). With R = 1: S_B = I, S_O[0,o1,o2,0] =
// P[o2,o1] (the expansion, copies), S_I[0,i1,i2,0] = Q[i1,i2] (the split, 1 / k on each copy),
// S_L[0,l1,l2,0] = 1 where target layer l2 comes from source layer l1. Then materialize() writes
// what grow_parameters(plan) writes. For R > 1 these entries sit at bond (0, 0) and every other
// bond entry is drawn N(0, bond_noise^2): a cycle through the ring that leaves bond 0 passes
// at least two such entries, so the function moves by O(bond_noise^2) while the new entries
// get gradients of O(bond_noise) (with bond_noise 0 they would sit at a saddle and never move).
//
// Choices the paper does not settle (it has no public code; all unverified):
//   - block layout and orientation above (I = in, O = out of W (out, in); FFN matrices cut
//     into D x D blocks along F);
//   - aux parameters: fixed plan. Embeddings, positions, biases, norm gains and biases and the
//     final norm are not in M; they are grown once by grow_parameters(plan) (the final norm
//     divided by k for the tied head) and are not trained by the operator;
//   - identity layers (a plan's zero_out layers, Net2Net's deeper net): a fixed 0/1 mask over
//     (b2, l2) keeps their output blocks (o, down.c) at exactly 0, before and during training;
//     their other blocks come from the ring like every layer's. Cancel layers are rejected;
//   - R > 1 starts from the R = 1 cores at bond (0, 0) and MangoOptions::bond_noise elsewhere.
//
// Supported: dense FFNs (GELU and SwiGLU) with F a multiple of D and F' / D' = F / D, attention
// width = d_model, no grouped-query attention, LayerNorm and RMSNorm, learned and rotary
// positions. make_mango_plan() builds a plan the operator starts from.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/eigen.hpp"
#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../nn/arena.hpp"
#include "apply.hpp"
#include "learned.hpp"
#include "plan.hpp"
#include "presets.hpp"

namespace bonsai {

/// The four cores of a tensor ring (or their gradients): pointers to row-major (R, n1, n2, R)
/// arrays.
template <class P>
struct TensorRingCores {
  P* b = nullptr;  // S_B (R, B1, B2, R)
  P* i = nullptr;  // S_I (R, I1, I2, R)
  P* o = nullptr;  // S_O (R, O1, O2, R)
  P* l = nullptr;  // S_L (R, L1, L2, R)
};

/// A linear map from 4-way tensors M1 (B1, I1, O1, L1) to M2 (B2, I2, O2, L2) whose coefficients
/// form a tensor ring of rank R (see the top of this file). Tensors are stored layer-major:
/// m1[((l1 B1 + b1) I1 + i1) O1 + o1] = M1[b1, i1, o1, l1], and m2 likewise (L2, B2, I2, O2).
template <class T>
class TensorRing {
 public:
  /// One mode's extent in the source and in the target.
  struct Mode {
    index_t from = 0, to = 0;
  };

  TensorRing() = default;
  TensorRing(index_t rank, Mode b, Mode i, Mode o, Mode l)
      : m_rank(rank), m_b(b), m_i(i), m_o(o), m_l(l) {
    BONSAI_CHECK(rank >= 1, "TensorRing: the ring rank is ", rank, " but must be at least 1");
    for (const auto& [name, m] :
         {std::pair<const char*, Mode>{"B", b}, {"I", i}, {"O", o}, {"L", l}})
      BONSAI_CHECK(m.from > 0 && m.to > 0, "TensorRing: mode ", name, " has extents ", m.from,
                   " -> ", m.to, "; both must be positive");
  }

  /// The ring rank R.
  index_t rank() const noexcept { return m_rank; }
  /// The extents of the block, in, out and layer modes.
  const Mode& b() const noexcept { return m_b; }
  const Mode& i() const noexcept { return m_i; }
  const Mode& o() const noexcept { return m_o; }
  const Mode& l() const noexcept { return m_l; }
  /// Elements of the core of mode m: R m.from m.to R.
  index_t core_size(const Mode& m) const noexcept { return m_rank * m.from * m.to * m_rank; }
  /// Elements of M1 (B1 I1 O1 L1) and of M2 (B2 I2 O2 L2).
  index_t source_size() const noexcept { return m_b.from * m_i.from * m_o.from * m_l.from; }
  index_t target_size() const noexcept { return m_b.to * m_i.to * m_o.to * m_l.to; }

  /// m2 = S m1 (m2 is overwritten).
  void apply(const TensorRingCores<const T>& s, const T* m1, T* m2) const {
    const index_t R = m_rank, O1 = m_o.from, I2 = m_i.to, O2 = m_o.to;
    const index_t slices = m_l.to * m_b.to;  // (l2, b2) pairs
    std::fill_n(m2, target_size(), T(0));
    RowMat x1, x2, x3;
    for (index_t a = 0; a < R; ++a) {  // the closing bond r3
      chain(s, m1, a, x1, x2, x3);
      const RowMat so = out_core(s.o, a);  // (R O1, O2): S_O[r2, o1, o2, a]
      for (index_t p = 0; p < slices; ++p) {
        const CMapR x3p(x3.data() + p * I2 * R * O1, I2, R * O1);  // (I2, R O1)
        MapR(m2 + p * I2 * O2, I2, O2).noalias() += x3p * so;
      }
    }
  }

  /// Adds the gradients of the cores to `ds`, given g2 = dLoss/dM2 (laid out like m2) at the
  /// cores `s` and the source m1: the transpose of apply() with respect to each core.
  void backward(const TensorRingCores<const T>& s, const T* m1, const T* g2,
                const TensorRingCores<T>& ds) const {
    const index_t R = m_rank, B1 = m_b.from, B2 = m_b.to, I1 = m_i.from, I2 = m_i.to;
    const index_t O1 = m_o.from, O2 = m_o.to, L1 = m_l.from, L2 = m_l.to;
    const index_t n1 = B1 * I1 * O1, slices = L2 * B2;
    const CMapR sb(s.b, R * B1, B2 * R), si(s.i, R * I1, I2 * R);
    MapR dsb(ds.b, R * B1, B2 * R), dsi(ds.i, R * I1, I2 * R);
    RowMat x1, x2, x3, dx1, dx2, dx3;
    for (index_t a = 0; a < R; ++a) {
      chain(s, m1, a, x1, x2, x3);
      // Step 4 (O): M2p (I2, O2) += X3p (I2, R O1) S_Oa (R O1, O2).
      const RowMat so = out_core(s.o, a);
      RowMat dso = RowMat::Zero(R * O1, O2);
      dx3.resize(x3.rows(), x3.cols());
      for (index_t p = 0; p < slices; ++p) {
        const CMapR g(g2 + p * I2 * O2, I2, O2);
        const CMapR x3p(x3.data() + p * I2 * R * O1, I2, R * O1);
        dso.noalias() += x3p.transpose() * g;
        MapR(dx3.data() + p * I2 * R * O1, I2, R * O1).noalias() = g * so.transpose();
      }
      for (index_t q = 0; q < R * O1; ++q)  // scatter into S_O[r2, o1, o2, a]
        for (index_t o = 0; o < O2; ++o) ds.o[(q * O2 + o) * R + a] += dso(q, o);
      // Step 3 (I): X3p (I2 R, O1) = S_I^T (I2 R, R I1) X2p (R I1, O1).
      dx2.resize(x2.rows(), x2.cols());
      for (index_t p = 0; p < slices; ++p) {
        const CMapR x2p(x2.data() + p * R * I1 * O1, R * I1, O1);
        const CMapR dx3p(dx3.data() + p * I2 * R * O1, I2 * R, O1);
        dsi.noalias() += x2p * dx3p.transpose();
        MapR(dx2.data() + p * R * I1 * O1, R * I1, O1).noalias() = si * dx3p;
      }
      // Step 2 (B): X2l (B2 R, I1 O1) = S_B^T (B2 R, R B1) X1l (R B1, I1 O1).
      dx1.resize(x1.rows(), x1.cols());
      for (index_t l2 = 0; l2 < L2; ++l2) {
        const CMapR x1l(x1.data() + l2 * R * n1, R * B1, I1 * O1);
        const CMapR dx2l(dx2.data() + l2 * B2 * R * I1 * O1, B2 * R, I1 * O1);
        dsb.noalias() += x1l * dx2l.transpose();
        MapR(dx1.data() + l2 * R * n1, R * B1, I1 * O1).noalias() = sb * dx2l;
      }
      // Step 1 (L): X1 (L2 R, n1) = S_La^T (L2 R, L1) M1 (L1, n1).
      MapR(ds.l + a * L1 * L2 * R, L1, L2 * R).noalias() += CMapR(m1, L1, n1) * dx1.transpose();
    }
  }

 private:
  using RowMat = EigenRowMajor<T>;
  using MapR = Eigen::Map<RowMat>;
  using CMapR = Eigen::Map<const RowMat>;

  /// The contractions with S_L, S_B and S_I for closing bond a:
  /// x1 (L2 R, B1 I1 O1) rows (l2, r0); x2 (L2 B2 R, I1 O1) rows (l2, b2, r1);
  /// x3 (L2 B2 I2 R, O1) rows (l2, b2, i2, r2).
  void chain(const TensorRingCores<const T>& s, const T* m1, index_t a, RowMat& x1, RowMat& x2,
             RowMat& x3) const {
    const index_t R = m_rank, B1 = m_b.from, B2 = m_b.to, I1 = m_i.from, I2 = m_i.to;
    const index_t O1 = m_o.from, L1 = m_l.from, L2 = m_l.to;
    const index_t n1 = B1 * I1 * O1;
    // Step 1 (L): S_L[a] is (L1, L2 R) with columns (l2, r0).
    x1.noalias() = CMapR(s.l + a * L1 * L2 * R, L1, L2 * R).transpose() * CMapR(m1, L1, n1);
    // Step 2 (B): for each l2, X1 rows (l2, r0) are an (R B1, I1 O1) matrix.
    const CMapR sb(s.b, R * B1, B2 * R);
    x2.resize(L2 * B2 * R, I1 * O1);
    for (index_t l2 = 0; l2 < L2; ++l2)
      MapR(x2.data() + l2 * B2 * R * I1 * O1, B2 * R, I1 * O1).noalias() =
          sb.transpose() * CMapR(x1.data() + l2 * R * n1, R * B1, I1 * O1);
    // Step 3 (I): for each (l2, b2), X2 rows (l2, b2, r1) are an (R I1, O1) matrix.
    const CMapR si(s.i, R * I1, I2 * R);
    x3.resize(L2 * B2 * I2 * R, O1);
    for (index_t p = 0; p < L2 * B2; ++p)
      MapR(x3.data() + p * I2 * R * O1, I2 * R, O1).noalias() =
          si.transpose() * CMapR(x2.data() + p * R * I1 * O1, R * I1, O1);
  }

  /// S_O[r2, o1, o2, a] as a contiguous (R O1, O2) matrix.
  RowMat out_core(const T* so, index_t a) const {
    const index_t R = m_rank, O1 = m_o.from, O2 = m_o.to;
    using Strided =
        Eigen::Map<const RowMat, Eigen::Unaligned, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
    return Strided(so + a, R * O1, O2, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(O2 * R, R));
  }

  index_t m_rank = 1;
  Mode m_b, m_i, m_o, m_l;
};

/// How a Mango operator starts.
struct MangoOptions {
  /// Ring rank R of the cores (1: four separable mode maps).
  index_t rank = 1;
  /// Std of the bond entries outside (0, 0) when rank > 1 (unverified default). The function
  /// moves by O(bond_noise^2); 0 keeps it exactly but leaves those entries without gradient.
  double bond_noise = 1e-3;
  /// Seed of the bond noise.
  std::uint64_t seed = 1;
};

template <class T>
class Mango {
 public:
  using value_type = T;

  /// The operator of `plan` over the source model's parameters `source` (laid out for
  /// plan.from; copied, so `source` may change or go away afterwards), initialised to the plan
  /// (see the top of this file). Throws, with a sentence, for plans and models it cannot handle
  /// and for a source arena that does not hold plan.from.
  Mango(const GrowthPlan& plan, const ParamArena<T>& source, MangoOptions options = {})
      : m_plan(plan), m_options(options) {
    check_plan(plan);
    BONSAI_CHECK(options.rank >= 1, "Mango: the ring rank is ", options.rank,
                 " but must be at least 1");
    BONSAI_CHECK(std::isfinite(options.bond_noise) && options.bond_noise >= 0,
                 "Mango: bond_noise is ", options.bond_noise, " but must be finite and >= 0");
    detail::check_dense_gpt_arena("Mango", source, plan.from, "source", "plan's source model");
    const GptConfig& a = plan.from;
    const GptConfig& b = plan.to;
    m_from_blocks = blocks(a);
    m_to_blocks = blocks(b);
    const index_t nb = index_t(m_from_blocks.size());
    m_ring = TensorRing<T>(options.rank, {nb, nb}, {a.d_model, b.d_model}, {a.d_model, b.d_model},
                           {a.n_layer, b.n_layer});

    // M1 (L1, B1, I1, O1): block b of layer l transposed.
    m_m1.resize(std::size_t(m_ring.source_size()));
    const index_t d = a.d_model;
    for (index_t l = 0; l < a.n_layer; ++l)
      for (index_t k = 0; k < nb; ++k)
        MapR(m_m1.data() + (l * nb + k) * d * d, d, d) =
            block(source.values(), source, l, m_from_blocks[std::size_t(k)], d).transpose();

    // Output blocks of identity layers stay 0.
    m_live.assign(std::size_t(b.n_layer * nb), 1);
    for (index_t l = 0; l < b.n_layer; ++l)
      if (plan.depth[l].init == LayerInit::zero_out)
        for (index_t k = 0; k < nb; ++k)
          if (m_to_blocks[std::size_t(k)].output) m_live[std::size_t(l * nb + k)] = 0;

    // Aux parameters: grown once by the plan.
    for (const auto& [name, shape] : detail::dense_gpt_layout(b))
      if (!is_block_weight(name)) m_aux.add(name, shape);
    m_aux.allocate();
    grow_parameters(plan, source, m_aux);

    const index_t r = options.rank, l1 = a.n_layer, l2 = b.n_layer, d2 = b.d_model;
    m_sb = m_params.add("S_B", {r, nb, nb, r});
    m_si = m_params.add("S_I", {r, d, d2, r});
    m_so = m_params.add("S_O", {r, d, d2, r});
    m_sl = m_params.add("S_L", {r, l1, l2, r});
    m_params.allocate();
    init();
  }

  /// Resets the cores to the plan (the state right after construction, bond noise included).
  void init() {
    T* v = m_params.values();
    std::fill_n(v, m_params.size(), T(0));
    const TensorRingCores<T> s = cores(v);
    const index_t r = rank(), nb = index_t(m_to_blocks.size());
    const index_t d = m_plan.from.d_model, d2 = m_plan.to.d_model;
    const index_t l1 = m_plan.from.n_layer, l2 = m_plan.to.n_layer;
    const WidthMap& res = m_plan.residual;
    // Entry [0, x, y, 0] of a core (R, n1, n2, R).
    auto at = [r](T* core, index_t n2, index_t x, index_t y) -> T& {
      return core[(x * n2 + y) * r];
    };
    for (index_t k = 0; k < nb; ++k) at(s.b, nb, k, k) = T(1);
    for (index_t j = 0; j < d2; ++j) {
      at(s.i, d2, res.source(j), j) = T(res.share(j));  // Q[i1, i2]: the split
      at(s.o, d2, res.source(j), j) = T(1);             // P[o2, o1]: the copies
    }
    for (index_t l = 0; l < l2; ++l) at(s.l, l2, m_plan.depth[l].src, l) = T(1);
    if (r == 1 || m_options.bond_noise == 0.0) return;
    Rng rng(m_options.seed);
    for (const auto& [core, n] :
         {std::pair<T*, index_t>{s.b, nb * nb}, {s.i, d * d2}, {s.o, d * d2}, {s.l, l1 * l2}})
      for (index_t r0 = 0; r0 < r; ++r0)
        for (index_t x = 0; x < n; ++x)
          for (index_t r1 = 0; r1 < r; ++r1)
            if (r0 != 0 || r1 != 0)
              core[(r0 * n + x) * r + r1] = T(rng.normal(0.0, m_options.bond_noise));
  }

  /// Writes every parameter of the grown model into `target` (laid out for config(): build the
  /// target model with it, e.g. Gpt<Dense<T>, Dense<T>>(mango.config())): the weight blocks by
  /// the tensor ring (identity layers' output blocks 0), the rest from the fixed plan.
  void materialize(ParamArena<T>& target) const {
    detail::check_dense_gpt_arena("Mango", target, m_plan.to, "target", "plan's grown model");
    std::vector<T> m2(std::size_t(m_ring.target_size()));  // (L2, B2, D', D')
    m_ring.apply(ccores(m_params.values()), m_m1.data(), m2.data());
    const index_t nb = index_t(m_to_blocks.size()), d2 = m_plan.to.d_model;
    for (index_t l = 0; l < m_plan.to.n_layer; ++l)
      for (index_t k = 0; k < nb; ++k) {
        auto w = block(target.values(), target, l, m_to_blocks[std::size_t(k)], d2);
        if (m_live[std::size_t(l * nb + k)])
          w = CMapR(m2.data() + (l * nb + k) * d2 * d2, d2, d2).transpose();
        else
          w.setZero();
      }
    for (const ParamSlot& s : m_aux.slots())
      std::copy_n(m_aux.values() + s.offset, s.size(),
                  target.values() + target.slot(s.name).offset);
  }

  /// Adds the gradient of the grown model's loss with respect to the four cores to
  /// arena().grads(), from the target's parameter gradients target.grads() (laid out for
  /// config()). Gradients of the aux parameters and of identity layers' output blocks are not
  /// used (those are fixed). Call arena().zero_grads() first unless accumulating.
  void backward(const ParamArena<T>& target) {
    detail::check_dense_gpt_arena("Mango", target, m_plan.to, "target", "plan's grown model");
    std::vector<T> g2(std::size_t(m_ring.target_size()));  // dLoss/dM2 (L2, B2, D', D')
    const index_t nb = index_t(m_to_blocks.size()), d2 = m_plan.to.d_model;
    for (index_t l = 0; l < m_plan.to.n_layer; ++l)
      for (index_t k = 0; k < nb; ++k) {
        MapR g(g2.data() + (l * nb + k) * d2 * d2, d2, d2);
        if (m_live[std::size_t(l * nb + k)])
          g = block(target.grads(), target, l, m_to_blocks[std::size_t(k)], d2).transpose();
        else
          g.setZero();
      }
    m_ring.backward(ccores(m_params.values()), m_m1.data(), g2.data(), cores(m_params.grads()));
  }

  /// The cores (and their gradients): "S_B" (R, B, B, R), "S_I" and "S_O" (R, D, D', R),
  /// "S_L" (R, L, L', R), row-major.
  ParamArena<T>& arena() noexcept { return m_params; }
  const ParamArena<T>& arena() const noexcept { return m_params; }
  /// The ring rank R.
  index_t rank() const noexcept { return m_options.rank; }
  /// Weight blocks per layer, B = 4 + (1 or 2) F / D + F / D.
  index_t blocks() const noexcept { return index_t(m_to_blocks.size()); }
  /// The name of block b: "q", "k", "v", "o", "up.c", "gate.c" (SwiGLU) or "down.c".
  const std::string& block_name(index_t b) const {
    BONSAI_CHECK(b >= 0 && b < blocks(), "Mango: block ", b, " of ", blocks());
    return m_to_blocks[std::size_t(b)].name;
  }
  /// The contraction the cores define.
  const TensorRing<T>& ring() const noexcept { return m_ring; }
  /// The plan the operator started from.
  const GrowthPlan& plan() const noexcept { return m_plan; }
  /// The grown model's configuration (plan.to).
  const GptConfig& config() const noexcept { return m_plan.to; }
  /// The options it was built with.
  const MangoOptions& options() const noexcept { return m_options; }

  /// Throws, with a sentence, unless the operator can start from `plan` (checked again by the
  /// constructor; call it to reject a plan before any work).
  static void check_plan(const GrowthPlan& p) {
    const GptConfig& a = p.from;
    const GptConfig& b = p.to;
    BONSAI_CHECK(a.moe_experts == 0 && b.moe_experts == 0, "Mango: grows models without "
                 "Mixture-of-Experts layers (upcycle after growing)");
    BONSAI_CHECK(!p.options.masked,
                 "Mango: an MSG plan (masked growth) has fresh units that no linear map of the "
                 "source produces; use make_mango_plan");
    BONSAI_CHECK(a.ffn == FfnKind::dense,
                 "Mango: stacks dense FFN matrices only, but the plan's model has ",
                 to_string(a.ffn), " FFNs (grow them with grow_parameters)");
    BONSAI_CHECK(a.n_kv_head == 0 || a.n_kv_head == a.n_head,
                 "Mango: grouped-query attention (n_head = ", a.n_head,
                 ", n_kv_head = ", a.n_kv_head,
                 ") is not supported; the q, k and v blocks must each be d_model x d_model");
    BONSAI_CHECK(a.attention_width() == a.d_model, "Mango: the attention width ",
                 a.attention_width(), " differs from d_model = ", a.d_model,
                 "; every weight block must be d_model x d_model");
    BONSAI_CHECK(a.ffn_width() % a.d_model == 0, "Mango: the FFN width ", a.ffn_width(),
                 " is not a multiple of d_model = ", a.d_model,
                 " (the FFN matrices are cut into d_model x d_model blocks)");
    BONSAI_CHECK(!p.options.aki,
                 "Mango: bert2BERT's AKI (new units from the next layer) is not a map the "
                 "operator starts from; use a plan without aki");
    BONSAI_CHECK(p.options.split_noise == 0.0,
                 "Mango: the operator starts from the plan's equal split, but the plan adds "
                 "split noise ",
                 p.options.split_noise, " (set GrowthOptions::split_noise = 0)");
    const WidthMap& res = p.residual;
    const index_t d = a.d_model, k = res.to() / d;
    BONSAI_CHECK(res.to() % d == 0, "Mango: the residual map grows d_model ", d, " -> ", res.to(),
                 ", not by a whole multiple; the operator starts from uniform circular k-fold "
                 "copies (WidthMap::tiled(D, k D, copy))");
    auto unit = [](const WidthMap& map, index_t j, const char* what) {
      return map.fill(j) == Fill::copy
                 ? std::string("a copy of ") + what + " " + std::to_string(map.source(j))
                 : std::string(to_string(map.fill(j))) + "-filled";
    };
    for (index_t j = 0; j < res.to(); ++j)
      BONSAI_CHECK(res.fill(j) == Fill::copy && res.source(j) == j % d, "Mango: residual unit ", j,
                   " is ", unit(res, j, "unit"),
                   " but the operator starts from uniform circular k-fold copies (unit ", j,
                   " copies unit ", j % d, ", WidthMap::tiled(", d, ", ", res.to(), ", copy))");
    const WidthMap& heads = p.heads;
    const index_t h = heads.from();
    BONSAI_CHECK(heads.to() == k * h, "Mango: the head map grows ", h, " -> ", heads.to(),
                 " heads while d_model grows ", d, " -> ", res.to(), "; the heads must be copied ",
                 k, " times like the residual stream (WidthMap::tiled(", h, ", ", k * h,
                 ", copy))");
    for (index_t j = 0; j < heads.to(); ++j)
      BONSAI_CHECK(heads.fill(j) == Fill::copy && heads.source(j) == j % h, "Mango: head ", j,
                   " is ", unit(heads, j, "head"),
                   ", but the operator copies the heads circularly like the residual stream (head ",
                   j, " copies head ", j % h, ", WidthMap::tiled(", h, ", ", k * h, ", copy))");
    const index_t f = a.ffn_width(), m = f / d, f2 = b.ffn_width(), d2 = b.d_model;
    BONSAI_CHECK(f2 == m * d2, "Mango: the FFN grows ", f, " -> ", f2,
                 " units while d_model grows ", d, " -> ", d2,
                 "; the number of d_model-blocks F / D = ", m, " must stay (F' = ", m * d2, ")");
    for (index_t u = 0; u < f2; ++u) {
      const index_t want = (u / d2) * d + (u % d2) % d;
      BONSAI_CHECK(p.ffn.fill(u) == Fill::copy && p.ffn.source(u) == want, "Mango: FFN unit ", u,
                   " is ", unit(p.ffn, u, "unit"),
                   ", but the operator copies every d_model-block of the FFN like the residual "
                   "stream (unit ",
                   u, " copies unit ", want, ", WidthMap::tiled(", f, ", ", f2, ", copy, ", m,
                   "))");
    }
    for (index_t l = 0; l < p.depth.to(); ++l)
      BONSAI_CHECK(p.depth[l].init != LayerInit::cancel, "Mango: layer ", l,
                   " is a cancel layer (random fan-outs that sum to 0), which no layer map "
                   "produces; use zero_out");
  }

 private:
  using RowMat = EigenRowMajor<T>;
  using MapR = Eigen::Map<RowMat>;
  using CMapR = Eigen::Map<const RowMat>;
  using MapS = Eigen::Map<RowMat, Eigen::Unaligned, Eigen::OuterStride<>>;

  /// Where a D x D block W (out, in) sits: rows [row, row + D), columns [col, col + D) of the
  /// layer parameter `rest`, whose rows are `ld` long.
  struct Block {
    std::string name, rest;
    index_t row = 0, col = 0, ld = 0;
    bool output = false;  // writes the residual stream (o, down.c): 0 in identity layers
  };

  static std::vector<Block> blocks(const GptConfig& c) {
    const index_t d = c.d_model, m = c.ffn_width() / d, f = c.ffn_width();
    std::vector<Block> out{{"q", "attn.qkv.weight", 0, 0, d, false},
                           {"k", "attn.qkv.weight", d, 0, d, false},
                           {"v", "attn.qkv.weight", 2 * d, 0, d, false},
                           {"o", "attn.proj.weight", 0, 0, d, true}};
    for (index_t k = 0; k < m; ++k)
      out.push_back({"up." + std::to_string(k), "mlp.up.weight", k * d, 0, d, false});
    if (c.act == ActKind::swiglu)
      for (index_t k = 0; k < m; ++k)
        out.push_back({"gate." + std::to_string(k), "mlp.gate.weight", k * d, 0, d, false});
    for (index_t k = 0; k < m; ++k)
      out.push_back({"down." + std::to_string(k), "mlp.down.weight", 0, k * d, f, true});
    return out;
  }

  /// Block `blk` of layer l in a buffer laid out like `arena` (values, gradients): (d, d).
  static MapS block(T* base, const ParamArena<T>& arena, index_t l, const Block& blk, index_t d) {
    const ParamSlot& s = arena.slot(layer_param_name(l, blk.rest));
    return MapS(base + s.offset + blk.row * blk.ld + blk.col, d, d, Eigen::OuterStride<>(blk.ld));
  }
  static Eigen::Map<const RowMat, Eigen::Unaligned, Eigen::OuterStride<>> block(
      const T* base, const ParamArena<T>& arena, index_t l, const Block& blk, index_t d) {
    const ParamSlot& s = arena.slot(layer_param_name(l, blk.rest));
    return Eigen::Map<const RowMat, Eigen::Unaligned, Eigen::OuterStride<>>(
        base + s.offset + blk.row * blk.ld + blk.col, d, d, Eigen::OuterStride<>(blk.ld));
  }

  static bool is_block_weight(const std::string& name) {
    const auto p = split_layer_param_name(name);
    if (!p) return false;
    return p->rest == "attn.qkv.weight" || p->rest == "attn.proj.weight" ||
           p->rest == "mlp.up.weight" || p->rest == "mlp.gate.weight" ||
           p->rest == "mlp.down.weight";
  }

  TensorRingCores<T> cores(T* base) const {
    return {base + m_sb, base + m_si, base + m_so, base + m_sl};
  }
  TensorRingCores<const T> ccores(const T* base) const {
    return {base + m_sb, base + m_si, base + m_so, base + m_sl};
  }


  GrowthPlan m_plan;
  MangoOptions m_options;
  std::vector<Block> m_from_blocks, m_to_blocks;  // B blocks of a source / grown layer
  TensorRing<T> m_ring;
  // M1 (L1, B1, D, D): the source blocks, transposed.
  std::vector<T> m_m1;
  // (L2, B2): 0 for the output blocks of identity layers, which stay 0.
  std::vector<std::uint8_t> m_live;
  ParamArena<T> m_aux;                             // the grown model's parameters outside M (fixed)
  ParamArena<T> m_params;                          // the cores
  index_t m_sb = 0, m_si = 0, m_so = 0, m_sl = 0;  // their offsets in m_params
};

}  // namespace bonsai
