// bonsai/backend/ops.hpp — the op seam: everything a model computes besides its linear maps
// (those go through Lowering<Map, Space>, backend/lowering.hpp). Ops<Space> is specialised once
// per memory space by its backend (backend/cpu/ops.hpp for Host); nn/ calls these and nothing
// of a backend directly. Each specialisation provides, as static member templates over the
// scalar T (x, y (N, C); qkv (B*T, A + 2KV) packed as backend/cpu/attention.hpp describes):
//   zero(v), copy(dst, src)                                 v = 0; dst = src, converting the
//                                                           scalar, either side Host or Space
//   embedding_forward(tok, B, T, pos0, wte, wpe, y, st)    y = wte[tok] + wpe[pos0 + t]
//   embedding_backward(tok, B, T, dy, dwte, dwpe, st)      dwte, dwpe += scatter of dy
//   layernorm_forward(x, w, b, y, eps, state, mask)         y = (x - mean) rstd w + b
//   layernorm_backward(dy, x, w, dx, dw, db, acc, state, mask)
//   rmsnorm_forward(x, w, y, eps, state, mask)              y = x rstd w
//   rmsnorm_backward(dy, x, w, dx, dw, acc, state, mask)    (acc: dx += instead of =)
//   rope_forward(qkv, shape, table, pos), rope_backward(dqkv, shape, table, pos)
//   attention_forward(shape, qkv, out, state)               out = softmax(QK^T/sqrt(hd) + causal) V
//   attention_backward(shape, qkv, state, dout, dqkv)       dqkv = (from the forward's state)
//   attention_decode(shape, qkv_new, pos, cache, out)       n new tokens against a KV cache
//   softmax_cross_entropy(logits, targets, grad, scale, st) summed loss; logits <- scale dL/dlogits
//   gemm(alpha, a, opa, b, opb, beta, c)                    c = alpha op(a) op(b) + beta c
//   add(x, b, y), add_scaled(x, b, c, y)                    y = x + b, y = x + b diag(c)
//   scaled_columns(x, c, y), scale_columns(y, c)            y = x diag(c), y <- y diag(c)
//   gelu_forward(u, h), gelu_backward(dh, u, du)            h = gelu(u), du = dh gelu'(u)
//   swiglu_forward(g, u, h), swiglu_backward(dh, g, u, dg, du)   h = silu(g) u
//   gather_rows(src, rows, dst), scatter_add_rows(src, rows, dst)          SAT's kept rows
//   gather_column_blocks(src, blocks, w, dst), scatter_add_column_blocks(...)  and column blocks
// and the state types below. Token ids and targets are in the space's memory; the embedding's
// ids must lie in [0, V) (a caller checks them where they come from: Gpt, on the host). A mask argument (the growth masks of nn/growth_mask.hpp) may be
// null; a space whose kernels take no mask refuses a non-null one with a sentence.
#pragma once

#include <type_traits>

#include "../core/error.hpp"
#include "../core/memory.hpp"
#include "attention_shape.hpp"

namespace bonsai {

template <class Space>
struct Ops {
  static_assert(detail::dependent_false<Space>,
                "no ops for this memory space: include <bonsai/bonsai.hpp> for Host tensors or "
                "<bonsai/cuda.hpp> for Device tensors");
};

/// Whether a GEMM operand is transposed: op(A) = A (N) or A^T (T).
enum class Op { N, T };

/// What a norm's forward saves for its backward (the per-row statistics).
template <class T, class Space = Host>
using NormState = typename Ops<Space>::template NormState<T>;
/// The cos and sin of every rotary angle, (max_T, hd/2).
template <class T, class Space = Host>
using RopeTable = typename Ops<Space>::template RopeTable<T>;
/// What attention_forward saves for attention_backward.
template <class T, class Space = Host>
using AttentionState = typename Ops<Space>::template AttentionState<T>;
/// The keys and values of past positions, for decoding.
template <class T, class Space = Host>
using KvCache = typename Ops<Space>::template KvCache<T>;
/// The embedding's scratch (an id check, the backward's sort keys).
template <class Space = Host>
using EmbeddingState = typename Ops<Space>::EmbeddingState;
/// The cross-entropy's scratch (per-row losses, the result's read-back).
template <class Space = Host>
using LossState = typename Ops<Space>::LossState;

/// The scalar type a model with parameters in T computes its step scalars in (grad_scale, the
/// loss scale, epsilons): T itself for float and double, float for narrower types (bf16).
template <class T>
using real_t = std::conditional_t<std::is_floating_point_v<T>, T, float>;

}  // namespace bonsai
