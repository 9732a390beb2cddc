// bonsai/nn/block.hpp — Block<Up, Down, Space>: one pre-norm transformer layer on the residual stream,
//   r = x + Attention(Norm_1(x)),   y = r + Ffn(Norm_2(r)),
// where Ffn is an Mlp<Up, Down> or a Mixture-of-Experts layer Moe<Up, Down> (whose
// load-balancing loss the block keeps), with parameters "<prefix>ln_1.*", "attn.*", "ln_2.*" and
// "mlp.*" or "moe.*". Backward runs on the residual
// gradient in place: given dL/dy it leaves dL/dx in the same buffer. A BlockMask (MSG's growth
// masks, nn/growth_mask.hpp) scales the norms, q/k/v, the FFN units and both branch outputs; a
// LayerKept (sparsity-accelerated training, sparse/selection.hpp) limits attention and MLP to
// their kept heads and channels, forward and backward. Mixture-of-Experts layers run on the host
// only (supports<Space> refuses them elsewhere).
#pragma once

#include <string>
#include <type_traits>
#include <variant>

#include "attention.hpp"
#include "mlp.hpp"
#include "moe.hpp"
#include "norm.hpp"
#include "../sparse/selection.hpp"

namespace bonsai {

/// Stands in for the Mixture-of-Experts layer in a memory space that has none.
struct NoExperts {
  struct Context {};
};

template <class Up, class Down, class Space = Host>
class Block {
 public:
  using T = scalar_of<Up>;
  using Arena = ParamArena<T, Space>;
  using MlpType = Mlp<Up, Down, Space>;
  static constexpr bool has_experts = std::is_same_v<Space, Host>;
  using MoeType = std::conditional_t<has_experts, Moe<Up, Down>, NoExperts>;

  struct Context {
    typename Norm<T, Space>::Context ln_1, ln_2;
    typename Attention<T, Space>::Context attn;
    typename MlpType::Context mlp;
    typename MoeType::Context moe;
    T aux_weight = T(0);        // backward's weight of the MoE load-balancing loss
    Workspace<T, Space> a, r, m, tmp;  // (N, d): Norm_1(x), the mid residual, Norm_2(r), a branch
    Workspace<T, Space> dbranch;       // (N, d): d(branch) = c dres under a branch mask
    BlockMask<T> mask;                 // the forward's masks
  };

  /// A layer whose FFN is `ffn`: an MlpType or a MoeType.
  template <class Ffn>
  Block(const GptConfig& c, Ffn ffn)
      : m_ln_1(c.norm, c.d_model, c.norm_eps), m_ln_2(c.norm, c.d_model, c.norm_eps),
        m_attn(c), m_ffn(std::move(ffn)) {}

  void declare(Arena& arena, const std::string& prefix) {
    m_ln_1.declare(arena, prefix + "ln_1.");
    m_attn.declare(arena, prefix + "attn.");
    m_ln_2.declare(arena, prefix + "ln_2.");
    if constexpr (has_experts)
      if (MoeType* moe = std::get_if<MoeType>(&m_ffn)) return moe->declare(arena, prefix + "moe.");
    mlp().declare(arena, prefix + "mlp.");
  }
  void init(Arena& arena, Rng& rng, double stddev, double proj_std) const {
    m_ln_1.init(arena);
    m_attn.init(arena, rng, stddev, proj_std);
    m_ln_2.init(arena);
    std::visit([&](const auto& ffn) { ffn.init(arena, rng, stddev, proj_std); }, m_ffn);
  }

  /// y = block(x): x, y (B*T, d); x must stay unchanged until backward. The mask's vectors
  /// must stay unchanged until backward too; the kept sets are copied.
  void forward(Arena& arena, Context& ctx, const MatrixView<const T, Space>& x,
               const MatrixView<T, Space>& y, index_t batch, index_t seq,
               const BlockMask<T>& mask = {}, const LayerKept& kept = {}) const {
    const index_t n = x.rows(), d = x.cols();
    const auto a = ctx.a.matrix(n, d), r = ctx.r.matrix(n, d), m = ctx.m.matrix(n, d);
    const auto branch = ctx.tmp.matrix(n, d);  // (N, d)
    ctx.mask = mask;
    m_ln_1.forward(arena, ctx.ln_1, x, a, mask.residual);
    m_attn.forward(arena, ctx.attn, MatrixView<const T, Space>(a), branch, batch, seq, mask.qkv,
                   kept.heads);
    add_branch(x, branch, r, mask.branch);
    m_ln_2.forward(arena, ctx.ln_2, MatrixView<const T, Space>(r), m, mask.residual);
    if (const MoeType* experts = this->moe()) {
      BONSAI_CHECK(!mask.ffn && kept.channels.empty(), "Block: a Mixture-of-Experts layer takes "
                   "no FFN growth mask and no kept channels");
      if constexpr (has_experts) experts->forward(arena, ctx.moe, MatrixView<const T, Space>(m), branch);
    } else {
      mlp().forward(arena, ctx.mlp, MatrixView<const T, Space>(m), branch, mask.ffn, kept.channels);
    }
    add_branch(MatrixView<const T, Space>(r), branch, y, mask.branch);
  }

  /// Decoding step: y = block(x) for n new tokens per sequence at positions [pos, pos + n).
  void decode(Arena& arena, Context& ctx, const MatrixView<const T, Space>& x,
              const MatrixView<T, Space>& y, index_t batch, index_t n, index_t pos,
              KvCache<T, Space>& cache, const BlockMask<T>& mask = {}) const {
    const index_t rows = x.rows(), d = x.cols();
    const auto a = ctx.a.matrix(rows, d), r = ctx.r.matrix(rows, d), m = ctx.m.matrix(rows, d);
    const auto branch = ctx.tmp.matrix(rows, d);  // (B*n, d)
    m_ln_1.forward(arena, ctx.ln_1, x, a, mask.residual);
    m_attn.decode(arena, ctx.attn, MatrixView<const T, Space>(a), branch, batch, n, pos, cache,
                  mask.qkv);
    add_branch(x, branch, r, mask.branch);
    m_ln_2.forward(arena, ctx.ln_2, MatrixView<const T, Space>(r), m, mask.residual);
    if (const MoeType* experts = this->moe()) {
      if constexpr (has_experts) experts->forward(arena, ctx.moe, MatrixView<const T, Space>(m), branch);
    } else {
      mlp().forward(arena, ctx.mlp, MatrixView<const T, Space>(m), branch, mask.ffn);
    }
    add_branch(MatrixView<const T, Space>(r), branch, y, mask.branch);
  }

  /// dres (B*T, d): dL/dy on entry, dL/dx on return; parameter gradients +=. A MoE layer's
  /// loss also holds ctx.aux_weight times its load-balancing loss.
  void backward(Arena& arena, Context& ctx, const MatrixView<T, Space>& dres) const {
    const index_t n = dres.rows(), d = dres.cols();
    const auto branch = ctx.tmp.matrix(n, d);  // (N, d)
    if (const MoeType* experts = this->moe()) {
      if constexpr (has_experts)
        experts->backward(arena, ctx.moe, branch_grad(ctx, dres), branch, ctx.aux_weight);
    } else {
      mlp().backward(arena, ctx.mlp, branch_grad(ctx, dres), branch);
    }
    m_ln_2.backward(arena, ctx.ln_2, MatrixView<const T, Space>(branch), dres, /*accumulate=*/true);
    m_attn.backward(arena, ctx.attn, branch_grad(ctx, dres), branch);
    m_ln_1.backward(arena, ctx.ln_1, MatrixView<const T, Space>(branch), dres, /*accumulate=*/true);
  }

  /// Forward FLOPs, computing only the kept heads and channels.
  index_t flops(index_t batch, index_t seq, const LayerKept& kept = {}) const {
    const index_t attn = m_attn.flops(batch, seq, index_t(kept.heads.size()));
    if constexpr (has_experts)
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
  /// The MoE layer, or null for a plain FFN (always null where experts do not run).
  const MoeType* moe() const noexcept {
    if constexpr (has_experts) return std::get_if<MoeType>(&m_ffn);
    else return nullptr;
  }
  /// The load-balancing loss of the last forward (0 without experts).
  T aux_loss(const Context& ctx) const {
    if constexpr (has_experts) return moe() ? ctx.moe.aux : T(0);
    else return T(0);
  }
  const Attention<T, Space>& attention() const noexcept { return m_attn; }

 private:
  /// y = x + c branch (c null: 1), in one pass.
  static void add_branch(const MatrixView<const T, Space>& x, const MatrixView<T, Space>& branch,
                         const MatrixView<T, Space>& y, const T* c) {
    if (c) Ops<Space>::template add_scaled<T>(x, branch, c, y);
    else Ops<Space>::template add<T>(x, branch, y);
  }
  /// d(branch) = c dres (dres itself without a branch mask).
  static MatrixView<const T, Space> branch_grad(Context& ctx, const MatrixView<T, Space>& dres) {
    if (!ctx.mask.branch) return MatrixView<const T, Space>(dres);
    const auto g = ctx.dbranch.matrix(dres.rows(), dres.cols());  // (N, d)
    Ops<Space>::template scaled_columns<T>(dres, ctx.mask.branch, g);
    return MatrixView<const T, Space>(g);
  }

  Norm<T, Space> m_ln_1, m_ln_2;
  Attention<T, Space> m_attn;
  std::variant<MlpType, MoeType> m_ffn;
};

}  // namespace bonsai
