// bonsai/nn/gpt.hpp — Gpt<Up, Down, Space>: a decoder-only language model assembled from bonsai's
// layers, in the memory space Space (Host: the CPU backend; Device: CUDA, in the scalar of the
// maps, float or bf16 through rebind_scalar_t), logits = Norm_f(Block_L(... Block_1(Embedding(tokens)))) wte^T (the head is tied to
// the token table), trained with the mean softmax cross-entropy of next-token targets. Layers
// use FFN maps Up / Down, except layer 0, which stays dense when config.dense_first_ffn is set.
// All parameters live in one ParamArena; forward(ctx, ...) saves what backward(ctx) needs.
// After MSG growth, set_growth_mask masks the new units and layers (nn/growth_mask.hpp). A
// training forward may keep only some heads and FFN channels per layer (sparsity-accelerated
// training): then only those are computed, in the forward and in its backward. With
// config.moe_experts > 0, every moe_every-th layer's FFN is a Mixture-of-Experts layer of
// experts with the same maps; the loss that backward differentiates then adds
// config.moe_aux_loss times their load-balancing losses (moe_aux_loss(ctx)); forward returns
// the cross-entropy alone. What a space cannot run yet (nn/supports.hpp: MoE, and on the device
// growth masks, kept sets and decoding) is refused with a sentence.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "../backend/cpu.hpp"
#include "block.hpp"
#include "embedding.hpp"
#include "supports.hpp"

namespace bonsai {

/// One micro-batch of token ids: inputs and next-token targets, both (batch, seq) row-major.
/// A target of -1 is ignored by the loss.
struct TokenBatch {
  const std::int32_t* inputs = nullptr;   // (B, T)
  const std::int32_t* targets = nullptr;  // (B, T), or null for logits only
  index_t batch = 0, seq = 0;
  index_t tokens() const noexcept { return batch * seq; }
};

template <class Up, class Down, class Space = Host>
class Gpt {
 public:
  using T = scalar_of<Up>;
  using Real = real_t<T>;  // the scalar of grad_scale and the loss scale
  using Arena = ParamArena<T, Space>;
  using DenseBlock = Block<Dense<T>, Dense<T>, Space>;
  using FfnBlock = Block<Up, Down, Space>;
  static constexpr bool on_host = std::is_same_v<Space, Host>;

  struct Context {
    std::optional<typename DenseBlock::Context> first;  // layer 0 when it stays dense
    std::vector<typename FfnBlock::Context> blocks;
    std::vector<Workspace<T, Space>> res;  // L + 1 residual streams (N, d)
    typename Norm<T, Space>::Context ln_f;
    Workspace<T, Space> xf;      // (N, d) Norm_f output; d(xf) after a training forward
    Workspace<T, Space> logits;  // (N, V), overwritten by d(loss)/d(logits) when training
    Workspace<T, Space> dres;    // (N, d)
    Workspace<std::int32_t, Space> inputs;   // (B, T), kept for the embedding's backward
    Workspace<std::int32_t, Space> targets;  // (B, T)
    EmbeddingState<Space> embed;
    LossState<Space> loss;
    const T* embed_mask = nullptr;     // (d) or null: the residual mask the forward applied
    index_t batch = 0, seq = 0;
    bool has_grad = false;
  };

  /// The model of `config`, its parameters zero; throws first if Space cannot run it.
  explicit Gpt(const GptConfig& config);

  /// GPT-2's initialisation: weights and embeddings N(0, std^2), residual projections
  /// (attn.proj, a dense mlp.down) N(0, std^2 / (2 L)), biases 0, norm gains 1; structured FFN
  /// maps use the paper's default (SVD for LowRank, orthogonal factors otherwise). Off the host
  /// the values are drawn by the host model of the same layout (the same draws as Host for the
  /// same rng) and copied over.
  void init(Rng& rng);

  /// Runs the model on a micro-batch and returns the mean cross-entropy over its targets (NaN
  /// when there are none). With `grad_scale` > 0 it also prepares backward for the loss
  /// grad_scale * mean loss (grad_scale = 1 / accumulation steps averages micro-batches) and
  /// already adds the head's share of d(wte). `kept` (one LayerKept per layer, or empty for
  /// all) limits every layer to its kept heads and channels, here and in the backward.
  double forward(Context& ctx, const TokenBatch& b, Real grad_scale = Real(0),
                 std::span<const LayerKept> kept = {});

  /// Key/value caches of every layer for incremental decoding.
  struct DecodeState {
    std::vector<KvCache<T, Space>> caches;  // one per layer
    index_t length = 0;                   // positions decoded so far
    Context ctx;                          // scratch
  };
  DecodeState make_decode_state(index_t batch) const;

  /// Feeds n new tokens per sequence (tokens (B, n), positions [st.length, st.length + n)) and
  /// returns the logits of each sequence's last new token, (B, V).
  /// Host only: a device model is downloaded into its host twin to sample.
  MatrixView<T, Space> decode(DecodeState& st, const std::int32_t* tokens, index_t batch, index_t n);

  /// Adds d(grad_scale * loss)/d(parameters) to the arena's gradients.
  void backward(Context& ctx);

  /// Freezes the embeddings and the bottom `layers` layers (MSLT; 0 trains everything):
  /// backward stops above them, so their gradients are left as they are. The head is tied to
  /// wte, so it is frozen with the embeddings. The optimizer must skip the same slots
  /// (AdamW::set_frozen with is_frozen).
  void set_frozen_layers(index_t layers) {
    BONSAI_CHECK(layers >= 0 && layers < m_config.n_layer, "Gpt: cannot freeze ", layers,
                 " of ", m_config.n_layer, " layers (at least the top layer trains)");
    m_frozen = layers;
  }
  index_t frozen_layers() const noexcept { return m_frozen; }
  /// Whether parameter `s` is frozen: wte, wpe and layers below frozen_layers().
  bool is_frozen(const ParamSlot& s) const {
    if (m_frozen == 0) return false;
    const auto layer = split_layer_param_name(s.name);
    return layer ? layer->layer < m_frozen : !s.name.starts_with("ln_f.");
  }

  /// MSG: masks the new units and layers of a grown model (nn/growth_mask.hpp) with
  /// mask.value until the next call or clear_growth_mask(); throws when a vector does not match
  /// the model. Call between a backward and the next forward.
  void set_growth_mask(GrowthMask mask) {
    BONSAI_CHECK(on_host, "Gpt::set_growth_mask: MSG's growth masks have no ", Space::name,
                 " kernels yet; ramp them in on the host");
    const index_t d = m_config.d_model, kv = m_config.kv_heads(), f = m_config.ffn_width();
    auto check = [](const std::vector<bool>& v, index_t n, const char* what) {
      BONSAI_CHECK(v.empty() || index_t(v.size()) == n, "Gpt::set_growth_mask: the ", what,
                   " mask has ", v.size(), " entries but the model has ", n);
    };
    check(mask.residual, d, "residual");
    check(mask.heads, kv, "head-group");
    check(mask.ffn, f, "FFN");
    check(mask.layers, m_config.n_layer, "layer");
    BONSAI_CHECK(mask.value >= 0.0 && mask.value <= 1.0, "Gpt::set_growth_mask: the mask value ",
                 mask.value, " is outside [0, 1]");
    clear_growth_mask();
    if (!mask.masks_anything()) return;
    const T m = T(mask.value);
    auto fill = [m](std::vector<T>& out, const std::vector<bool>& is_new, index_t unit) {
      if (!GrowthMask::any(is_new)) return;
      for (bool x : is_new) out.insert(out.end(), std::size_t(unit), x ? m : T(1));
    };
    fill(m_mask_res, mask.residual, 1);
    fill(m_mask_ffn, mask.ffn, 1);
    if (GrowthMask::any(mask.heads)) {
      const index_t hd = m_config.head_dim(), group = m_config.n_head / kv;
      fill(m_mask_qkv, mask.heads, group * hd);  // q: the group's query heads side by side
      fill(m_mask_qkv, mask.heads, hd);          // k
      fill(m_mask_qkv, mask.heads, hd);          // v
    }
    if (GrowthMask::any(mask.layers)) {
      m_mask_new.assign(std::size_t(d), m);
      for (index_t j = 0; j < index_t(m_mask_res.size()); ++j) m_mask_new[std::size_t(j)] *= m_mask_res[std::size_t(j)];
    }
    m_mask = std::move(mask);
  }
  void clear_growth_mask() {
    m_mask.reset();
    m_mask_res.clear();
    m_mask_new.clear();
    m_mask_qkv.clear();
    m_mask_ffn.clear();
  }
  const std::optional<GrowthMask>& growth_mask() const noexcept { return m_mask; }

  /// The sum of the MoE layers' load-balancing losses in the last forward (0 without experts);
  /// the trained loss adds config().moe_aux_loss times it.
  double moe_aux_loss(const Context& ctx) const {
    double sum = m_first ? double(m_first->aux_loss(*ctx.first)) : 0.0;
    for (std::size_t i = 0; i < m_blocks.size(); ++i)
      sum += double(m_blocks[i].aux_loss(ctx.blocks[i]));
    return sum;
  }

  /// The logits (N, V) of the last forward (before a training forward turned them into
  /// gradients).
  MatrixView<T, Space> logits(Context& ctx) const { return logits_view(ctx, ctx.batch * ctx.seq); }

  Arena& arena() noexcept { return m_arena; }
  const Arena& arena() const noexcept { return m_arena; }
  const GptConfig& config() const noexcept { return m_config; }
  index_t param_count() const noexcept { return m_arena.size(); }

  /// Forward FLOPs of one micro-batch (GEMMs and attention products; training is ~3x),
  /// computing only the kept heads and channels of each layer when `kept` is given.
  index_t flops(index_t batch, index_t seq, std::span<const LayerKept> kept = {}) const {
    check_kept(kept);
    index_t total = 2 * batch * seq * m_config.d_model * m_config.vocab_size;  // head
    for (index_t l = 0; l < m_config.n_layer; ++l) total += layer_flops(l, batch, seq, kept);
    return total;
  }
  /// Training FLOPs of one micro-batch: the forward plus the backward, twice the forward of
  /// what it runs through (everything; or, with frozen layers, the layers above them and the
  /// head's d(xf), one GEMM).
  index_t training_flops(index_t batch, index_t seq, std::span<const LayerKept> kept = {}) const {
    if (m_frozen == 0) return 3 * flops(batch, seq, kept);
    index_t back = 2 * batch * seq * m_config.d_model * m_config.vocab_size;  // d(xf) = dlogits wte
    for (index_t l = m_frozen; l < m_config.n_layer; ++l) back += 2 * layer_flops(l, batch, seq, kept);
    return flops(batch, seq, kept) + back;
  }

  const std::optional<DenseBlock>& first_block() const noexcept { return m_first; }
  const std::vector<FfnBlock>& blocks() const noexcept { return m_blocks; }
  std::vector<FfnBlock>& blocks() noexcept { return m_blocks; }
  const Embedding<T, Space>& embedding() const noexcept { return m_embed; }
  const Norm<T, Space>& final_norm() const noexcept { return m_ln_f; }

 private:
  bool has_dense_first() const {
    return !std::is_same_v<FfnBlock, DenseBlock> && m_config.dense_first_ffn;
  }

  void check_kept(std::span<const LayerKept> kept) const {
    BONSAI_CHECK(kept.empty() || index_t(kept.size()) == m_config.n_layer, "Gpt: kept sets for ",
                 kept.size(), " layers but the model has ", m_config.n_layer);
  }
  static const LayerKept& kept_of(std::span<const LayerKept> kept, index_t l) {
    static const LayerKept all;
    return kept.empty() ? all : kept[std::size_t(l)];
  }
  index_t layer_flops(index_t l, index_t batch, index_t seq, std::span<const LayerKept> kept) const {
    const LayerKept& k = kept_of(kept, l);
    if (m_first && l == 0) return m_first->flops(batch, seq, k);
    return m_blocks[std::size_t(l - (m_first ? 1 : 0))].flops(batch, seq, k);
  }

  void forward_trunk(Context& ctx, const TokenBatch& b, std::span<const LayerKept> kept);

  /// The logits (rows, V) in ctx. Off the host each row is padded to a multiple of 64 elements,
  /// so that every row starts 128-byte aligned for cuBLASLt (with GPT-2's V = 50257 a bf16 row
  /// would start only 2-byte aligned); the padding is never read.
  MatrixView<T, Space> logits_view(Context& ctx, index_t rows) const {
    const index_t v = m_config.vocab_size, ld = on_host ? v : (v + 63) / 64 * 64;
    return matrix_view<Space>(ctx.logits.reserve(rows * ld), rows, v, ld);
  }

  /// Layer l with FFN maps U, D: an Mlp, or E experts of the MoE width.
  template <class U, class D>
  static Block<U, D, Space> make_block(const GptConfig& config, index_t l, U up, D down) {
    using B = Block<U, D, Space>;
    if constexpr (B::has_experts) {
      if (config.moe_layer(l))
        return B(config, typename B::MoeType(std::move(up), std::move(down), config.act,
                                             config.moe_experts, config.moe_top_k,
                                             config.moe_gating));
    }
    return B(config, typename B::MlpType(std::move(up), std::move(down), config.act));
  }

  static const T* data_or_null(const std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }
  const T* residual_mask() const { return data_or_null(m_mask_res); }
  /// The masks of layer l (none without a growth mask).
  BlockMask<T> block_mask(index_t l) const {
    if (!m_mask) return {};
    const bool is_new = !m_mask->layers.empty() && m_mask->layers[std::size_t(l)];
    return {residual_mask(), is_new ? m_mask_new.data() : residual_mask(), data_or_null(m_mask_qkv),
            data_or_null(m_mask_ffn)};
  }

  GptConfig m_config;
  Arena m_arena;
  Embedding<T, Space> m_embed;
  std::optional<DenseBlock> m_first;
  std::vector<FfnBlock> m_blocks;
  Norm<T, Space> m_ln_f;
  index_t m_frozen = 0;  // bottom layers (with the embeddings) that backward skips
  std::optional<GrowthMask> m_mask;  // MSG's masks, while a growth ramps in
  std::vector<T> m_mask_res;         // (d): c_D, or empty
  std::vector<T> m_mask_new;         // (d): m c_D, the branch mask of new layers, or empty
  std::vector<T> m_mask_qkv;         // (A + 2KV), or empty
  std::vector<T> m_mask_ffn;         // (F), or empty
};

// ---- the members that run the layers, defined out of the class body: an explicit instantiation
// of a Gpt then compiles them once for a whole program (BONSAI_GPT_INSTANCES in
// bonsai/instances.hpp), which inline members (those defined in the class) would not allow.

template <class Up, class Down, class Space>
Gpt<Up, Down, Space>::Gpt(const GptConfig& config)
    : m_config((config.validate(), require_support<Space>(config, "Gpt"), config)),
      m_embed(config.vocab_size, config.d_model, config.max_seq_len,
              config.pos == PosKind::learned),
      m_ln_f(config.norm, config.d_model, config.norm_eps) {
  const index_t d = config.d_model, f = config.ffn_width();
  m_embed.declare(m_arena);
  for (index_t l = 0; l < config.n_layer; ++l) {
    const std::string prefix = layer_param_name(l, "");
    const index_t h = config.moe_layer(l) ? config.moe_hidden() : f;
    if (l == 0 && has_dense_first()) {
      m_first.emplace(make_block(config, l, Dense<T>(d, h), Dense<T>(h, d)));
      m_first->declare(m_arena, prefix);
    } else {
      m_blocks.push_back(
          make_block(config, l, FfnMap<Up>::make(d, h, config), FfnMap<Down>::make(h, d, config)));
      m_blocks.back().declare(m_arena, prefix);
    }
  }
  m_ln_f.declare(m_arena, "ln_f.");
  m_arena.allocate();
}

template <class Up, class Down, class Space>
void Gpt<Up, Down, Space>::init(Rng& rng) {
  if constexpr (on_host) {
    const double std0 = m_config.init_std;
    const double proj = std0 / std::sqrt(2.0 * double(m_config.n_layer));
    m_embed.init(m_arena, rng, std0);
    if (m_first) m_first->init(m_arena, rng, std0, proj);
    for (const auto& b : m_blocks) b.init(m_arena, rng, std0, proj);
    m_ln_f.init(m_arena);
  } else {
    Gpt<rebind_scalar_t<Up, float>, rebind_scalar_t<Down, float>, Host> host(m_config);
    host.init(rng);
    BONSAI_CHECK(host.arena().size() == m_arena.size(), "Gpt::init: the host model lays out ",
                 host.arena().size(), " parameters but this one ", m_arena.size());
    m_arena.assign(VectorView<const float, Host>(host.arena().values_view()));
  }
}

template <class Up, class Down, class Space>
double Gpt<Up, Down, Space>::forward(Context& ctx, const TokenBatch& b, Real grad_scale,
                                     std::span<const LayerKept> kept) {
  forward_trunk(ctx, b, kept);
  const index_t n = b.tokens();
  const auto xf = ctx.xf.matrix(n, m_config.d_model);
  const auto logits = logits_view(ctx, n);  // (N, V)
  const auto wte = m_embed.wte(m_arena);
  using Ops = bonsai::Ops<Space>;
  Ops::template gemm<T>(Real(1), MatrixView<const T, Space>(xf), Op::N, MatrixView<const T, Space>(wte),
                        Op::T, Real(0), logits);
  BONSAI_CHECK(b.targets || grad_scale <= Real(0), "Gpt::forward: gradients need targets, and the "
               "batch has none");
  if (!b.targets) return std::nan("");
  index_t valid = 0;
  for (index_t i = 0; i < n; ++i) valid += b.targets[i] >= 0;
  const bool grad = grad_scale > Real(0);
  const Real scale = valid ? grad_scale / Real(valid) : Real(0);
  const T aux_weight = grad ? T(grad_scale * Real(m_config.moe_aux_loss)) : T(0);
  if (m_first) ctx.first->aux_weight = aux_weight;
  for (auto& c : ctx.blocks) c.aux_weight = aux_weight;
  std::int32_t* targets = ctx.targets.reserve(n);
  Ops::copy(VectorView<std::int32_t, Space>(targets, {n}), VectorView<const std::int32_t, Host>(b.targets, {n}));
  const double sum = Ops::template softmax_cross_entropy<T>(logits, targets, grad, scale, ctx.loss);
  ctx.has_grad = grad;
  if (grad) {
    // d(wte) += dlogits^T xf (V, d) unless the embeddings are frozen; then d(xf) = dlogits wte
    // (N, d) replaces xf.
    if (m_frozen == 0)
      Ops::template gemm<T>(Real(1), MatrixView<const T, Space>(logits), Op::T,
                            MatrixView<const T, Space>(xf), Op::N, Real(1), m_embed.dwte(m_arena));
    Ops::template gemm<T>(Real(1), MatrixView<const T, Space>(logits), Op::N,
                          MatrixView<const T, Space>(wte), Op::N, Real(0), xf);
  }
  return valid ? sum / double(valid) : std::nan("");
}

template <class Up, class Down, class Space>
auto Gpt<Up, Down, Space>::make_decode_state(index_t batch) const -> DecodeState {
  BONSAI_CHECK(on_host, "Gpt::make_decode_state: decoding runs on the host; copy a ", Space::name,
               " model's weights into its host twin (arena().copy_to) to sample");
  DecodeState st;
  for (index_t l = 0; l < m_config.n_layer; ++l)
    st.caches.emplace_back(batch, m_config.kv_heads(), m_config.max_seq_len, m_config.head_dim());
  return st;
}

template <class Up, class Down, class Space>
auto Gpt<Up, Down, Space>::decode(DecodeState& st, const std::int32_t* tokens, index_t batch,
                                  index_t n) -> MatrixView<T, Space> {
  BONSAI_CHECK(on_host, "Gpt::decode: decoding runs on the host; copy a ", Space::name,
               " model's weights into its host twin (arena().copy_to) to sample");
  const index_t pos = st.length, d = m_config.d_model, rows = batch * n;
  BONSAI_CHECK(n > 0 && pos + n <= m_config.max_seq_len, "Gpt::decode: positions [", pos, ", ",
               pos + n, ") exceed the model's max_seq_len ", m_config.max_seq_len);
  using Ops = bonsai::Ops<Space>;
  Context& ctx = st.ctx;
  if (m_first && !ctx.first) ctx.first.emplace();
  ctx.blocks.resize(m_blocks.size());
  ctx.res.resize(2);
  auto x = ctx.res[0].matrix(rows, d), y = ctx.res[1].matrix(rows, d);  // (B*n, d)
  m_embed.forward(m_arena, tokens, batch, n, pos, x, ctx.embed);
  if (!m_mask_res.empty()) Ops::template scale_columns<T>(x, m_mask_res.data());
  index_t l = 0;
  if (m_first) {
    m_first->decode(m_arena, *ctx.first, MatrixView<const T, Space>(x), y, batch, n, pos,
                    st.caches[0], block_mask(0));
    std::swap(x, y);
    l = 1;
  }
  for (std::size_t i = 0; i < m_blocks.size(); ++i, ++l) {
    m_blocks[i].decode(m_arena, ctx.blocks[i], MatrixView<const T, Space>(x), y, batch, n, pos,
                       st.caches[l], block_mask(l));
    std::swap(x, y);
  }
  st.length = pos + n;
  // The last token of each sequence: rows b*n + n-1.
  const auto last = ctx.dres.matrix(batch, d);  // (B, d)
  for (index_t b = 0; b < batch; ++b)
    std::copy_n(x.data() + (b * n + n - 1) * d, d, last.data() + b * d);
  const auto xf = ctx.xf.matrix(batch, d);
  m_ln_f.forward(m_arena, ctx.ln_f, MatrixView<const T, Space>(last), xf, residual_mask());
  const auto logits = logits_view(ctx, batch);  // (B, V)
  Ops::template gemm<T>(Real(1), MatrixView<const T, Space>(xf), Op::N,
                        MatrixView<const T, Space>(m_embed.wte(m_arena)), Op::T, Real(0), logits);
  return logits;
}

template <class Up, class Down, class Space>
void Gpt<Up, Down, Space>::backward(Context& ctx) {
  BONSAI_CHECK(ctx.has_grad, "Gpt::backward: the last forward was not asked for gradients "
                             "(pass grad_scale > 0)");
  ctx.has_grad = false;
  const index_t n = ctx.batch * ctx.seq, d = m_config.d_model;
  const auto dres = ctx.dres.matrix(n, d);  // (N, d)
  const auto dxf = ctx.xf.matrix(n, d);     // (N, d): forward left d(xf) here
  m_ln_f.backward(m_arena, ctx.ln_f, MatrixView<const T, Space>(dxf), dres, /*accumulate=*/false);
  const index_t first = m_first ? 1 : 0;  // layer index of m_blocks[0]
  for (index_t i = index_t(m_blocks.size()) - 1; i >= 0 && i + first >= m_frozen; --i)
    m_blocks[i].backward(m_arena, ctx.blocks[i], dres);
  if (m_frozen > 0) return;  // the frozen layers and embeddings need no gradient
  if (m_first) m_first->backward(m_arena, *ctx.first, dres);
  if (ctx.embed_mask) Ops<Space>::template scale_columns<T>(dres, ctx.embed_mask);
  m_embed.backward(m_arena, ctx.inputs.data(), ctx.batch, ctx.seq, MatrixView<const T, Space>(dres),
                   ctx.embed);
}

template <class Up, class Down, class Space>
void Gpt<Up, Down, Space>::forward_trunk(Context& ctx, const TokenBatch& b,
                                         std::span<const LayerKept> kept) {
  check_kept(kept);
  BONSAI_CHECK(on_host || kept.empty(), "Gpt::forward: computing only the kept heads and channels "
               "(sparsity-accelerated training) has no ", Space::name, " kernels yet");
  BONSAI_CHECK(b.inputs && b.batch > 0 && b.seq > 0, "Gpt::forward: empty batch");
  BONSAI_CHECK(b.seq <= m_config.max_seq_len, "Gpt::forward: sequence length ", b.seq,
               " exceeds the model's max_seq_len ", m_config.max_seq_len);
  const index_t n = b.tokens(), d = m_config.d_model, layers = m_config.n_layer;
  ctx.batch = b.batch;
  ctx.seq = b.seq;
  ctx.has_grad = false;
  const index_t vocab = m_config.vocab_size;
  for (index_t i = 0; i < n; ++i)  // here, so that no space waits for a check of its own
    BONSAI_CHECK(b.inputs[i] >= 0 && b.inputs[i] < vocab, "embedding: token id ", b.inputs[i],
                 " at position ", i, " is outside the vocabulary [0, ", vocab, ")");
  std::int32_t* inputs = ctx.inputs.reserve(n);
  Ops<Space>::copy(VectorView<std::int32_t, Space>(inputs, {n}), VectorView<const std::int32_t, Host>(b.inputs, {n}));
  if (m_first && !ctx.first) ctx.first.emplace();
  ctx.blocks.resize(m_blocks.size());
  ctx.res.resize(layers + 1);
  m_embed.forward(m_arena, inputs, b.batch, b.seq, 0, ctx.res[0].matrix(n, d), ctx.embed);
  ctx.embed_mask = residual_mask();
  if (ctx.embed_mask) Ops<Space>::template scale_columns<T>(ctx.res[0].matrix(n, d), ctx.embed_mask);
  index_t l = 0;
  if (m_first) {
    m_first->forward(m_arena, *ctx.first, MatrixView<const T, Space>(ctx.res[0].matrix(n, d)),
                     ctx.res[1].matrix(n, d), b.batch, b.seq, block_mask(0), kept_of(kept, 0));
    l = 1;
  }
  for (std::size_t i = 0; i < m_blocks.size(); ++i, ++l)
    m_blocks[i].forward(m_arena, ctx.blocks[i], MatrixView<const T, Space>(ctx.res[l].matrix(n, d)),
                        ctx.res[l + 1].matrix(n, d), b.batch, b.seq, block_mask(l),
                        kept_of(kept, l));
  m_ln_f.forward(m_arena, ctx.ln_f, MatrixView<const T, Space>(ctx.res[layers].matrix(n, d)),
                 ctx.xf.matrix(n, d), residual_mask());
}

}  // namespace bonsai
