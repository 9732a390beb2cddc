// bonsai/backend/cuda/gpt.cuh — cuda::Gpt<Map, T>: the decoder-only model of nn/gpt.hpp on one
// GPU, computing in T (bf16, or float for checks against the CPU) with the same equations,
//   logits = Norm_f(Block_L(... Block_1(Embedding(tokens)))) wte^T,
//   Block: r = x + Attention(Norm_1(x)),  y = r + Ffn(Norm_2(r)),
// and the same parameter layout: it owns a host bonsai::Gpt<Map, Map> whose float arena names
// and places every parameter, so checkpoints, Hugging Face exports, growth and sampling go
// through the host model after download(), and a CPU checkpoint trains on the GPU after
// upload(). On the device the arena lives three times over: fp32 master weights (what the
// optimizer updates and checkpoints hold), their T working copy the GEMMs read (the master
// itself when T is float), and T gradients accumulated (+=) by backward.
//
// Supported: GPT-2 and Llama-style layers (LayerNorm or RMSNorm, learned or rotary positions,
// GELU or SwiGLU, grouped-query attention of head width 32, 64 or 128) with any FFN structure
// (Dense, LowRank, BlockDense, BlockShuffle; layer 0 dense when config.dense_first_ffn). Not yet:
// Mixture-of-Experts layers, MSG growth masks, sparsity-accelerated training's kept sets and
// frozen layers; the constructor rejects a config with experts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "../../nn/gpt.hpp"
#include "../../nn/supports.hpp"
#include "attention.cuh"
#include "cross_entropy.cuh"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "linear.cuh"
#include "memory.cuh"
#include "norm.cuh"
#include "rope.cuh"
#include "runtime.cuh"
#include "shuffle.cuh"

namespace bonsai::cuda {

template <class Map, class T = bf16>
class Gpt {
  static_assert(std::is_same_v<scalar_of<Map>, float>,
                "cuda::Gpt<Map, T>: Map is the host (float) FFN map; T is the device precision");
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>, "cuda::Gpt: T is float or bf16");

 public:
  using HostModel = bonsai::Gpt<Map, Map>;
  using FfnMap = rebind_scalar_t<Map, T>;  // the structured FFN map on the device
  using DenseMap = Dense<T>;               // attention projections, a dense layer 0's FFN
  static constexpr bool has_master_copy = !std::is_same_v<T, float>;

  /// What one layer's forward keeps for its backward.
  struct LayerContext {
    NormState<T> ln_1, ln_2;
    bonsai::Context<DenseMap, Device, T> qkv, proj, up_dense, gate_dense, down_dense;
    bonsai::Context<FfnMap, Device, T> up, gate, down;
    AttentionState<T> attn;
    Workspace<T, Device> a, qkv_out, attn_out, r, m;  // (N, d), (N, A + 2KV), (N, A), (N, d) x 2
    Workspace<T, Device> u, g, h;                      // (N, F): up, gate (SwiGLU), activation
  };
  struct Context {
    std::vector<LayerContext> layers;
    std::vector<Workspace<T, Device>> res;  // L + 1 residual streams (N, d)
    NormState<T> ln_f;
    Workspace<T, Device> xf, logits;          // (N, d), (N, V): d(loss)/d(logits) after training
    Workspace<T, Device> dres, dxf, dbranch, dgate_in;  // (N, d)
    Workspace<T, Device> dqkv, dattn, dh, du, dg;  // (N, A + 2KV), (N, A), (N, F) x 3
    Workspace<std::int32_t, Device> inputs, targets;  // (B, T)
    EmbeddingState embed;
    CrossEntropyState loss;
    index_t batch = 0, seq = 0;
    bool has_grad = false;
  };

  /// A model of `config` initialised on the host as bonsai::Gpt::init does with `rng`, then
  /// uploaded.
  Gpt(const GptConfig& config, Rng& rng) : m_host(checked(config)) {
    m_host.init(rng);
    allocate();
    upload();
  }
  /// A model of `config` with the host model's parameters as they are (zero until set; call
  /// upload() after writing them).
  explicit Gpt(const GptConfig& config) : m_host(checked(config)) { allocate(); }

  /// Host arena values -> device master weights and their working copy.
  void upload() {
    synchronize();
    const auto host = VectorView<const float>(m_host.arena().values(), {size()});
    copy(m_params.view(), host);
    if constexpr (has_master_copy) copy(m_master.view(), host);
  }
  /// Device master weights -> host arena values (for checkpoints, exports and sampling).
  void download() {
    synchronize();
    copy(m_host.arena().values_view(), VectorView<const float, Device>(master().data(), {size()}));
  }

  /// Runs the model on a micro-batch (host token ids) and returns the mean cross-entropy over its
  /// targets (NaN when there are none). With grad_scale > 0 it prepares backward for the loss
  /// grad_scale * mean loss and already adds the head's share of d(wte), as bonsai::Gpt does.
  double forward(Context& ctx, const TokenBatch& b, float grad_scale = 0.0f) {
    const GptConfig& c = config();
    const index_t n = b.tokens(), d = c.d_model, v = c.vocab_size;
    BONSAI_CHECK(b.batch > 0 && b.seq > 0 && b.seq <= c.max_seq_len, "cuda::Gpt: a batch of ", b.batch,
                 " x ", b.seq, " tokens does not fit the model's max_seq_len ", c.max_seq_len);
    ctx.batch = b.batch, ctx.seq = b.seq, ctx.has_grad = false;
    ctx.layers.resize(std::size_t(c.n_layer));
    ctx.res.resize(std::size_t(c.n_layer + 1));
    const cudaStream_t stream = runtime().stream();
    std::int32_t* inputs = ctx.inputs.reserve(n);
    BONSAI_CUDA_CHECK(cudaMemcpyAsync(inputs, b.inputs, sizeof(std::int32_t) * n, cudaMemcpyHostToDevice, stream));

    const auto x0 = ctx.res[0].matrix(n, d);  // (N, d)
    embedding_forward<T>(inputs, b.batch, b.seq, 0, cview(wte()), cview(wpe()), x0, ctx.embed);
    for (index_t l = 0; l < c.n_layer; ++l)
      layer_forward(l, ctx.layers[std::size_t(l)], cview(ctx.res[std::size_t(l)].matrix(n, d)),
                    ctx.res[std::size_t(l + 1)].matrix(n, d), b.batch, b.seq);
    const auto top = cview(ctx.res[std::size_t(c.n_layer)].matrix(n, d));
    const auto xf = ctx.xf.matrix(n, d);
    norm_forward(m_final, top, xf, ctx.ln_f);
    const auto logits = ctx.logits.matrix(n, v);  // (N, V)
    gemm<T>(1.0f, cview(xf), Op::N, cview(wte()), Op::T, 0.0f, logits);
    BONSAI_CHECK(b.targets || grad_scale <= 0.0f, "cuda::Gpt::forward: gradients need targets, and the "
                 "batch has none");
    if (!b.targets) return std::nan("");

    index_t valid = 0;
    for (index_t i = 0; i < n; ++i) valid += b.targets[i] >= 0;
    std::int32_t* targets = ctx.targets.reserve(n);
    BONSAI_CUDA_CHECK(cudaMemcpyAsync(targets, b.targets, sizeof(std::int32_t) * n, cudaMemcpyHostToDevice, stream));
    const bool grad = grad_scale > 0.0f;
    const float scale = valid ? grad_scale / float(valid) : 0.0f;
    const double sum = softmax_cross_entropy(logits, targets, grad, scale, ctx.loss);
    if (grad) {
      // d(wte) += dlogits^T xf (V, d); d(xf) = dlogits wte (N, d).
      gemm<T>(1.0f, cview(logits), Op::T, cview(xf), Op::N, 1.0f, grad_of(wte()));
      gemm<T>(1.0f, cview(logits), Op::N, cview(wte()), Op::N, 0.0f, ctx.dxf.matrix(n, d));
      ctx.has_grad = true;
    }
    return valid ? sum / double(valid) : std::nan("");
  }

  /// Adds d(grad_scale * loss)/d(parameters) to the device gradients.
  void backward(Context& ctx) {
    BONSAI_CHECK(ctx.has_grad, "cuda::Gpt::backward: the last forward was not asked for gradients "
                               "(pass grad_scale > 0)");
    ctx.has_grad = false;
    const GptConfig& c = config();
    const index_t n = ctx.batch * ctx.seq, d = c.d_model;
    const auto dres = ctx.dres.matrix(n, d);  // (N, d)
    norm_backward(m_final, cview(ctx.dxf.matrix(n, d)), cview(ctx.res[std::size_t(c.n_layer)].matrix(n, d)), dres,
                  /*accumulate=*/false, ctx.ln_f);
    for (index_t l = c.n_layer - 1; l >= 0; --l) layer_backward(l, ctx, dres);
    embedding_backward<T>(ctx.inputs.data(), ctx.batch, ctx.seq, cview(dres), grad_of(wte()), grad_of(wpe()),
                          ctx.embed);
  }

  /// Sets every device gradient to zero.
  void zero_grads() {
    BONSAI_CUDA_CHECK(cudaMemsetAsync(m_grads.data(), 0, sizeof(T) * std::size_t(size()), runtime().stream()));
  }

  /// (size,) device views: fp32 master weights, their T working copy, T gradients.
  VectorView<float, Device> master() noexcept {
    if constexpr (has_master_copy) return m_master.view();
    else return m_params.view();
  }
  VectorView<T, Device> params() noexcept { return m_params.view(); }
  VectorView<T, Device> grads() noexcept { return m_grads.view(); }

  /// The host model: layout, config, FLOP counts, and the values of the last download().
  HostModel& host() noexcept { return m_host; }
  const HostModel& host() const noexcept { return m_host; }
  const GptConfig& config() const noexcept { return m_host.config(); }
  index_t size() const noexcept { return m_host.arena().size(); }
  index_t param_count() const noexcept { return size(); }
  index_t flops(index_t batch, index_t seq) const { return m_host.flops(batch, seq); }
  index_t training_flops(index_t batch, index_t seq) const { return m_host.training_flops(batch, seq); }

 private:
  /// A norm's parameters: weight (and bias for LayerNorm) offsets.
  struct NormParams {
    index_t weight = 0, bias = -1;
  };
  /// A linear map's parameters and bias offsets, the map unbound.
  template <class M>
  struct Linear {
    M map;
    index_t offset = 0, bias = 0;
  };
  template <class M>
  struct Ffn {
    Linear<M> up, down;
    std::optional<Linear<M>> gate;  // SwiGLU only
  };
  struct Layer {
    NormParams ln_1, ln_2;
    Linear<DenseMap> qkv, proj;
    std::optional<Ffn<DenseMap>> dense;  // layer 0 of a structured model with dense_first_ffn
    std::optional<Ffn<FfnMap>> structured;
  };

  static const GptConfig& checked(const GptConfig& c) {
    require_support<Device>(c, "cuda::Gpt");  // before anything is allocated
    return c;
  }

  index_t offset_of(const std::string& name) const { return m_host.arena().slot(name).offset; }
  NormParams norm_params(const std::string& prefix) const {
    NormParams p{offset_of(prefix + "weight"), -1};
    if (config().norm == NormKind::layernorm) p.bias = offset_of(prefix + "bias");
    return p;
  }
  /// The map registered under `prefix` (its first parameter marks where it starts).
  template <class M>
  Linear<M> linear(M map, const std::string& prefix) const {
    const index_t at = offset_of(prefix + map.parameters().front().name);
    return Linear<M>{std::move(map), at, offset_of(prefix + "bias")};
  }
  template <class M>
  Ffn<M> ffn(const std::string& prefix, index_t d, index_t f) const {
    const GptConfig& c = config();
    Ffn<M> out{linear(bonsai::FfnMap<M>::make(d, f, c), prefix + "up."),
               linear(bonsai::FfnMap<M>::make(f, d, c), prefix + "down."), std::nullopt};
    if (c.act == ActKind::swiglu) out.gate = linear(bonsai::FfnMap<M>::make(d, f, c), prefix + "gate.");
    return out;
  }

  void allocate() {
    const GptConfig& c = config();
    const index_t d = c.d_model, f = c.ffn_width(), qkv = c.attention_width() + 2 * c.kv_width();
    m_params = Vector<T, Device>(size());
    m_grads = Vector<T, Device>(size());
    if constexpr (has_master_copy) m_master = Vector<float, Device>(size());
    m_wte = offset_of("wte");
    if (c.pos == PosKind::learned) m_wpe = offset_of("wpe");
    else m_rope = RopeTable(c.max_seq_len, c.head_dim(), c.rope_base);
    for (index_t l = 0; l < c.n_layer; ++l) {
      const std::string p = layer_param_name(l, "");
      Layer layer{norm_params(p + "ln_1."), norm_params(p + "ln_2."),
                  linear(DenseMap(d, qkv), p + "attn.qkv."), linear(DenseMap(c.attention_width(), d), p + "attn.proj."),
                  {}, {}};
      if (c.structured_ffn(l) || std::is_same_v<FfnMap, DenseMap>) layer.structured = ffn<FfnMap>(p + "mlp.", d, f);
      else layer.dense = ffn<DenseMap>(p + "mlp.", d, f);
      m_layers.push_back(std::move(layer));
    }
    m_final = norm_params("ln_f.");
  }

  // ---- views into the device arena ------------------------------------------------------------
  template <class U>
  static MatrixView<const U, Device> cview(const MatrixView<U, Device>& m) { return MatrixView<const U, Device>(m); }
  MatrixView<T, Device> wte() { return matrix_view<Device>(m_params.data() + m_wte, config().vocab_size, config().d_model); }
  MatrixView<T, Device> wpe() {
    if (m_wpe < 0) return {};
    return matrix_view<Device>(m_params.data() + m_wpe, config().max_seq_len, config().d_model);
  }
  /// The gradient of a parameter matrix given as a view of the working copy.
  MatrixView<T, Device> grad_of(const MatrixView<T, Device>& p) {
    if (p.empty()) return {};
    return matrix_view<Device>(m_grads.data() + (p.data() - m_params.data()), p.rows(), p.cols());
  }
  template <class M>
  M bound(const Linear<M>& lin, Vector<T, Device>& base) {
    return bind(lin.map, VectorView<T, Device>(base.data() + lin.offset, {lin.map.param_count()}));
  }
  template <class M>
  index_t out_of(const Linear<M>& lin) const { return lin.map.out_features(); }
  template <template <class, class> class E, class M>
  E<T, Device> epi(const Linear<M>& lin, bool with_grad) {
    const index_t n = lin.map.out_features();
    return E<T, Device>{VectorView<const T, Device>(m_params.data() + lin.bias, {n}),
                        with_grad ? VectorView<T, Device>(m_grads.data() + lin.bias, {n}) : VectorView<T, Device>()};
  }

  // ---- norms ------------------------------------------------------------------------------------
  void norm_forward(const NormParams& p, const MatrixView<const T, Device>& x, const MatrixView<T, Device>& y,
                    NormState<T>& st) {
    const float eps = float(config().norm_eps);
    if (p.bias >= 0) layernorm_forward<T>(x, m_params.data() + p.weight, m_params.data() + p.bias, y, eps, st);
    else rmsnorm_forward<T>(x, m_params.data() + p.weight, y, eps, st);
  }
  void norm_backward(const NormParams& p, const MatrixView<const T, Device>& dy, const MatrixView<const T, Device>& x,
                     const MatrixView<T, Device>& dx, bool accumulate, NormState<T>& st) {
    if (p.bias >= 0)
      layernorm_backward<T>(dy, x, m_params.data() + p.weight, dx, m_grads.data() + p.weight, m_grads.data() + p.bias,
                            accumulate, st);
    else
      rmsnorm_backward<T>(dy, x, m_params.data() + p.weight, dx, m_grads.data() + p.weight, accumulate, st);
  }

  // ---- one layer --------------------------------------------------------------------------------
  AttentionShape attention_shape(index_t batch, index_t seq) const {
    const GptConfig& c = config();
    return AttentionShape{batch, seq, c.n_head, c.kv_heads(), c.head_dim()};
  }

  void layer_forward(index_t l, LayerContext& ctx, const MatrixView<const T, Device>& x, const MatrixView<T, Device>& y,
                     index_t batch, index_t seq) {
    const GptConfig& c = config();
    const Layer& L = m_layers[std::size_t(l)];
    const index_t n = x.rows(), d = c.d_model;
    const AttentionShape shape = attention_shape(batch, seq);
    // r = x + proj(attention(rope(qkv(Norm_1(x)))))
    const auto a = ctx.a.matrix(n, d);
    norm_forward(L.ln_1, x, a, ctx.ln_1);
    const auto qkv = ctx.qkv_out.matrix(n, out_of(L.qkv));
    bonsai::forward(bound(L.qkv, m_params), cview(a), qkv, ctx.qkv, epi<epilogue::Bias>(L.qkv, false));
    if (c.pos == PosKind::rope) rope_forward<T>(qkv, shape, m_rope);
    const auto out = ctx.attn_out.matrix(n, c.attention_width());
    attention_forward<T>(shape, cview(qkv), out, ctx.attn);
    const auto r = ctx.r.matrix(n, d);
    bonsai::forward(bound(L.proj, m_params), cview(out), r, ctx.proj, epi<epilogue::Bias>(L.proj, false));
    add<T>(x, cview(r), r);
    // y = r + Ffn(Norm_2(r))
    const auto m = ctx.m.matrix(n, d);
    norm_forward(L.ln_2, cview(r), m, ctx.ln_2);
    if (L.dense) ffn_forward(*L.dense, ctx, ctx.up_dense, ctx.gate_dense, ctx.down_dense, cview(m), y);
    else ffn_forward(*L.structured, ctx, ctx.up, ctx.gate, ctx.down, cview(m), y);
    add<T>(cview(r), cview(y), y);
  }

  /// dres (N, d): dL/dy on entry, dL/dx on return.
  void layer_backward(index_t l, Context& model_ctx, const MatrixView<T, Device>& dres) {
    const GptConfig& c = config();
    const Layer& L = m_layers[std::size_t(l)];
    LayerContext& ctx = model_ctx.layers[std::size_t(l)];
    const index_t n = dres.rows(), d = c.d_model;
    const AttentionShape shape = attention_shape(model_ctx.batch, model_ctx.seq);
    const auto branch = model_ctx.dbranch.matrix(n, d);  // (N, d): d(Norm_2 out), then d(Norm_1 out)
    if (L.dense) ffn_backward(*L.dense, ctx, model_ctx, ctx.up_dense, ctx.gate_dense, ctx.down_dense, cview(dres), branch);
    else ffn_backward(*L.structured, ctx, model_ctx, ctx.up, ctx.gate, ctx.down, cview(dres), branch);
    norm_backward(L.ln_2, cview(branch), cview(ctx.r.matrix(n, d)), dres, /*accumulate=*/true, ctx.ln_2);
    const auto dattn = model_ctx.dattn.matrix(n, c.attention_width());
    bonsai::backward(bound(L.proj, m_params), ctx.proj, cview(dres), dattn, bound(L.proj, m_grads),
                     epi<epilogue::Bias>(L.proj, true));
    const auto qkv = cview(ctx.qkv_out.matrix(n, out_of(L.qkv)));
    const auto dqkv = model_ctx.dqkv.matrix(n, out_of(L.qkv));
    attention_backward<T>(shape, qkv, ctx.attn, cview(dattn), dqkv);
    if (c.pos == PosKind::rope) rope_backward<T>(dqkv, shape, m_rope);
    bonsai::backward(bound(L.qkv, m_params), ctx.qkv, cview(dqkv), branch, bound(L.qkv, m_grads),
                     epi<epilogue::Bias>(L.qkv, true));
    const auto x = cview(model_ctx.res[std::size_t(l)].matrix(n, d));
    norm_backward(L.ln_1, cview(branch), x, dres, /*accumulate=*/true, ctx.ln_1);
  }

  template <class M, class C>
  void ffn_forward(const Ffn<M>& f, LayerContext& ctx, C& up, C& gate, C& down, const MatrixView<const T, Device>& m,
                   const MatrixView<T, Device>& y) {
    const index_t n = m.rows(), width = out_of(f.up);
    const auto h = ctx.h.matrix(n, width);
    if (config().act == ActKind::gelu) {
      bonsai::forward(bound(f.up, m_params), m, h, up, epi<epilogue::BiasGelu>(f.up, false));
    } else {
      const auto u = ctx.u.matrix(n, width), g = ctx.g.matrix(n, width);
      bonsai::forward(bound(f.up, m_params), m, u, up, epi<epilogue::Bias>(f.up, false));
      bonsai::forward(bound(*f.gate, m_params), m, g, gate, epi<epilogue::Bias>(*f.gate, false));
      swiglu_forward<T>(cview(g), cview(u), h);
    }
    bonsai::forward(bound(f.down, m_params), cview(h), y, down, epi<epilogue::Bias>(f.down, false));
  }

  /// dm (N, d) = dL/d(Norm_2 out) from dy (N, d); parameter gradients +=.
  template <class M, class C>
  void ffn_backward(const Ffn<M>& f, LayerContext& ctx, Context& model_ctx, C& up, C& gate, C& down,
                    const MatrixView<const T, Device>& dy, const MatrixView<T, Device>& dm) {
    const index_t n = dy.rows(), width = out_of(f.up);
    const auto dh = model_ctx.dh.matrix(n, width);
    bonsai::backward(bound(f.down, m_params), down, dy, dh, bound(f.down, m_grads), epi<epilogue::Bias>(f.down, true));
    if (config().act == ActKind::gelu) {
      bonsai::backward(bound(f.up, m_params), up, cview(dh), dm, bound(f.up, m_grads),
                       epi<epilogue::BiasGelu>(f.up, true));
      return;
    }
    const auto du = model_ctx.du.matrix(n, width), dg = model_ctx.dg.matrix(n, width);
    swiglu_backward<T>(cview(dh), cview(ctx.g.matrix(n, width)), cview(ctx.u.matrix(n, width)), dg, du);
    bonsai::backward(bound(f.up, m_params), up, cview(du), dm, bound(f.up, m_grads), epi<epilogue::Bias>(f.up, true));
    // The gate's input gradient joins the up map's: dm += dg gate, through a second buffer.
    const auto dm2 = model_ctx.dgate_in.matrix(n, dm.cols());
    bonsai::backward(bound(*f.gate, m_params), gate, cview(dg), dm2, bound(*f.gate, m_grads),
                     epi<epilogue::Bias>(*f.gate, true));
    add<T>(cview(dm), cview(dm2), dm);
  }

  HostModel m_host;
  Vector<float, Device> m_master;    // (P) fp32 master weights (T = bf16 only)
  Vector<T, Device> m_params, m_grads;  // (P) working copy, gradients
  index_t m_wte = 0, m_wpe = -1;
  RopeTable m_rope;
  std::vector<Layer> m_layers;
  NormParams m_final;
};

}  // namespace bonsai::cuda
