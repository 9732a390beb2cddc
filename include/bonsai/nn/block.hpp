// bonsai/nn/block.hpp — Block<Up, Down>: one pre-norm transformer layer on the residual stream,
//   r = x + Attention(Norm_1(x)),   y = r + Ffn(Norm_2(r)),
// where Ffn is an Mlp<Up, Down> or a Mixture-of-Experts layer Moe<Up, Down> (whose
// load-balancing loss the block keeps), with parameters "<prefix>ln_1.*", "attn.*", "ln_2.*" and
// "mlp.*" or "moe.*". Backward runs on the residual
// gradient in place: given dL/dy it leaves dL/dx in the same buffer. A BlockMask (MSG's growth
// masks, nn/growth_mask.hpp) scales the norms, q/k/v, the FFN units and both branch outputs; a
// LayerKept (sparsity-accelerated training, sparse/selection.hpp) limits attention and MLP to
// their kept heads and channels, forward and backward.
#pragma once

#include <string>
#include <variant>

#include "attention.hpp"
#include "mlp.hpp"
#include "moe.hpp"
#include "norm.hpp"
#include "../sparse/selection.hpp"

namespace bonsai {

template <class Up, class Down>
class Block {
 public:
  using T = scalar_of<Up>;
  using MlpType = Mlp<Up, Down>;
  using MoeType = Moe<Up, Down>;

  struct Context {
    typename Norm<T>::Context ln_1, ln_2;
    typename Attention<T>::Context attn;
    typename MlpType::Context mlp;
    typename MoeType::Context moe;
    T aux_weight = T(0);        // backward's weight of the MoE load-balancing loss
    Workspace<T> a, r, m, tmp;  // (N, d): Norm_1(x), the mid residual, Norm_2(r), a branch
    Workspace<T> dbranch;       // (N, d): d(branch) = c dres under a branch mask
    BlockMask<T> mask;          // the forward's masks
  };

  /// A layer whose FFN is `ffn`: an MlpType or a MoeType.
  template <class Ffn>
  Block(const GptConfig& c, Ffn ffn)
      : m_ln_1(c.norm, c.d_model, c.norm_eps), m_ln_2(c.norm, c.d_model, c.norm_eps),
        m_attn(c), m_ffn(std::move(ffn)) {}

  void declare(ParamArena<T>& arena, const std::string& prefix) {
    m_ln_1.declare(arena, prefix + "ln_1.");
    m_attn.declare(arena, prefix + "attn.");
    m_ln_2.declare(arena, prefix + "ln_2.");
    if (MoeType* moe = std::get_if<MoeType>(&m_ffn)) moe->declare(arena, prefix + "moe.");
    else mlp().declare(arena, prefix + "mlp.");
  }
  void init(ParamArena<T>& arena, Rng& rng, double stddev, double proj_std) const {
    m_ln_1.init(arena);
    m_attn.init(arena, rng, stddev, proj_std);
    m_ln_2.init(arena);
    std::visit([&](const auto& ffn) { ffn.init(arena, rng, stddev, proj_std); }, m_ffn);
  }

  /// y = block(x): x, y (B*T, d); x must stay unchanged until backward. The mask's vectors
  /// must stay unchanged until backward too; the kept sets are copied.
  void forward(ParamArena<T>& arena, Context& ctx, const MatrixView<const T, Host>& x,
               const MatrixView<T, Host>& y, index_t batch, index_t seq,
               const BlockMask<T>& mask = {}, const LayerKept& kept = {}) const {
    const index_t n = x.rows(), d = x.cols();
    const auto a = ctx.a.matrix(n, d), r = ctx.r.matrix(n, d), m = ctx.m.matrix(n, d);
    const auto branch = ctx.tmp.matrix(n, d);  // (N, d)
    ctx.mask = mask;
    m_ln_1.forward(arena, ctx.ln_1, x, a, mask.residual);
    m_attn.forward(arena, ctx.attn, MatrixView<const T, Host>(a), branch, batch, seq, mask.qkv,
                   kept.heads);
    add_branch(x, branch, r, mask.branch);
    m_ln_2.forward(arena, ctx.ln_2, MatrixView<const T, Host>(r), m, mask.residual);
    if (const MoeType* experts = this->moe()) {
      BONSAI_CHECK(!mask.ffn && kept.channels.empty(), "Block: a Mixture-of-Experts layer takes "
                   "no FFN growth mask and no kept channels");
      experts->forward(arena, ctx.moe, MatrixView<const T, Host>(m), branch);
    } else {
      mlp().forward(arena, ctx.mlp, MatrixView<const T, Host>(m), branch, mask.ffn, kept.channels);
    }
    add_branch(MatrixView<const T, Host>(r), branch, y, mask.branch);
  }

  /// Decoding step: y = block(x) for n new tokens per sequence at positions [pos, pos + n).
  void decode(ParamArena<T>& arena, Context& ctx, const MatrixView<const T, Host>& x,
              const MatrixView<T, Host>& y, index_t batch, index_t n, index_t pos,
              KvCache<T>& cache, const BlockMask<T>& mask = {}) const {
    const index_t rows = x.rows(), d = x.cols();
    const auto a = ctx.a.matrix(rows, d), r = ctx.r.matrix(rows, d), m = ctx.m.matrix(rows, d);
    const auto branch = ctx.tmp.matrix(rows, d);  // (B*n, d)
    m_ln_1.forward(arena, ctx.ln_1, x, a, mask.residual);
    m_attn.decode(arena, ctx.attn, MatrixView<const T, Host>(a), branch, batch, n, pos, cache,
                  mask.qkv);
    add_branch(x, branch, r, mask.branch);
    m_ln_2.forward(arena, ctx.ln_2, MatrixView<const T, Host>(r), m, mask.residual);
    if (const MoeType* experts = this->moe())
      experts->forward(arena, ctx.moe, MatrixView<const T, Host>(m), branch);
    else
      mlp().forward(arena, ctx.mlp, MatrixView<const T, Host>(m), branch, mask.ffn);
    add_branch(MatrixView<const T, Host>(r), branch, y, mask.branch);
  }

  /// dres (B*T, d): dL/dy on entry, dL/dx on return; parameter gradients +=. A MoE layer's
  /// loss also holds ctx.aux_weight times its load-balancing loss.
  void backward(ParamArena<T>& arena, Context& ctx, const MatrixView<T, Host>& dres) const {
    const index_t n = dres.rows(), d = dres.cols();
    const auto branch = ctx.tmp.matrix(n, d);  // (N, d)
    if (const MoeType* experts = this->moe())
      experts->backward(arena, ctx.moe, branch_grad(ctx, dres), branch, ctx.aux_weight);
    else
      mlp().backward(arena, ctx.mlp, branch_grad(ctx, dres), branch);
    m_ln_2.backward(arena, ctx.ln_2, MatrixView<const T, Host>(branch), dres, /*accumulate=*/true);
    m_attn.backward(arena, ctx.attn, branch_grad(ctx, dres), branch);
    m_ln_1.backward(arena, ctx.ln_1, MatrixView<const T, Host>(branch), dres, /*accumulate=*/true);
  }

  /// Forward FLOPs, computing only the kept heads and channels.
  index_t flops(index_t batch, index_t seq, const LayerKept& kept = {}) const {
    const index_t attn = m_attn.flops(batch, seq, index_t(kept.heads.size()));
    if (const MoeType* experts = this->moe()) return attn + experts->flops(batch * seq);
    return attn + mlp().flops(batch * seq, index_t(kept.channels.size()));
  }
  /// The FFN of a layer without experts; throws for a MoE layer.
  const MlpType& mlp() const {
    BONSAI_CHECK(!moe(), "Block: this layer's FFN is a Mixture-of-Experts layer, not an Mlp");
    return std::get<MlpType>(m_ffn);
  }
  MlpType& mlp() {
    BONSAI_CHECK(!moe(), "Block: this layer's FFN is a Mixture-of-Experts layer, not an Mlp");
    return std::get<MlpType>(m_ffn);
  }
  /// The MoE layer, or null for a plain FFN.
  const MoeType* moe() const noexcept { return std::get_if<MoeType>(&m_ffn); }
  /// The load-balancing loss of the last forward (0 without experts).
  T aux_loss(const Context& ctx) const { return moe() ? ctx.moe.aux : T(0); }
  const Attention<T>& attention() const noexcept { return m_attn; }

 private:
  /// y = x + c branch (c null: 1), in one pass.
  static void add_branch(const MatrixView<const T, Host>& x, const MatrixView<T, Host>& branch,
                         const MatrixView<T, Host>& y, const T* c) {
    if (c) Ops<Host>::add_scaled<T>(x, branch, c, y);
    else Ops<Host>::add<T>(x, branch, y);
  }
  /// d(branch) = c dres (dres itself without a branch mask).
  static MatrixView<const T, Host> branch_grad(Context& ctx, const MatrixView<T, Host>& dres) {
    if (!ctx.mask.branch) return MatrixView<const T, Host>(dres);
    const auto g = ctx.dbranch.matrix(dres.rows(), dres.cols());  // (N, d)
    Ops<Host>::scaled_columns<T>(dres, ctx.mask.branch, g);
    return MatrixView<const T, Host>(g);
  }

  Norm<T> m_ln_1, m_ln_2;
  Attention<T> m_attn;
  std::variant<MlpType, MoeType> m_ffn;
};

}  // namespace bonsai
