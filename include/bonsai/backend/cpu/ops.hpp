// bonsai/backend/cpu/ops.hpp — Ops<Host>: the op seam (backend/ops.hpp) on the CPU, each op one
// call of this backend's kernel (norm.hpp, embedding.hpp, rope.hpp, attention.hpp,
// cross_entropy.hpp, gemm.hpp, elementwise.hpp, gather.hpp), with the same arguments and results.
#pragma once

#include <algorithm>
#include <cstring>

#include "../ops.hpp"
#include "attention.hpp"
#include "cross_entropy.hpp"
#include "elementwise.hpp"
#include "embedding.hpp"
#include "gather.hpp"
#include "gemm.hpp"
#include "norm.hpp"
#include "rope.hpp"

namespace bonsai {

template <>
struct Ops<Host> {
  template <class T>
  using NormState = cpu::NormState<T>;
  template <class T>
  using RopeTable = cpu::RopeTable<T>;
  /// The softmax probabilities (B, Hq, T, T), kept for backward.
  template <class T>
  using AttentionState = Workspace<T, Host>;
  template <class T>
  using KvCache = cpu::KvCache<T>;
  /// The CPU embedding and cross-entropy need no scratch.
  struct EmbeddingState {};
  struct LossState {};

  template <class T>
  static void zero(const VectorView<T, Host>& v) {
    if (v.size()) std::memset(v.data(), 0, sizeof(T) * std::size_t(v.size()));
  }
  template <class U, class T>
  static void copy(const VectorView<U, Host>& dst, const VectorView<T, Host>& src) {
    BONSAI_CHECK(dst.size() == src.size(), "Ops<Host>::copy: ", src.size(), " elements into ",
                 dst.size());
    std::copy_n(src.data(), src.size(), dst.data());
  }

  template <class T>
  static void embedding_forward(const std::int32_t* tok, index_t batch, index_t seq, index_t pos0,
                                const MatrixView<const T, Host>& wte,
                                const MatrixView<const T, Host>& wpe, const MatrixView<T, Host>& y,
                                EmbeddingState&) {
    cpu::embedding_forward<T>(tok, batch, seq, pos0, wte, wpe, y);
  }
  template <class T>
  static void embedding_backward(const std::int32_t* tok, index_t batch, index_t seq,
                                 const MatrixView<const T, Host>& dy, const MatrixView<T, Host>& dwte,
                                 const MatrixView<T, Host>& dwpe, EmbeddingState&) {
    cpu::embedding_backward<T>(tok, batch, seq, dy, dwte, dwpe);
  }

  template <class T>
  static void layernorm_forward(const MatrixView<const T, Host>& x, const T* w, const T* b,
                                const MatrixView<T, Host>& y, T eps, NormState<T>& st,
                                const T* mask) {
    cpu::layernorm_forward(x, w, b, y, eps, st, mask);
  }
  template <class T>
  static void layernorm_backward(const MatrixView<const T, Host>& dy,
                                 const MatrixView<const T, Host>& x, const T* w,
                                 const MatrixView<T, Host>& dx, T* dw, T* db, bool accumulate_dx,
                                 NormState<T>& st, const T* mask) {
    cpu::layernorm_backward(dy, x, w, dx, dw, db, accumulate_dx, st, mask);
  }
  template <class T>
  static void rmsnorm_forward(const MatrixView<const T, Host>& x, const T* w,
                              const MatrixView<T, Host>& y, T eps, NormState<T>& st, const T* mask) {
    cpu::rmsnorm_forward(x, w, y, eps, st, mask);
  }
  template <class T>
  static void rmsnorm_backward(const MatrixView<const T, Host>& dy, const MatrixView<const T, Host>& x,
                               const T* w, const MatrixView<T, Host>& dx, T* dw, bool accumulate_dx,
                               NormState<T>& st, const T* mask) {
    cpu::rmsnorm_backward(dy, x, w, dx, dw, accumulate_dx, st, mask);
  }

  template <class T>
  static void rope_forward(const MatrixView<T, Host>& qkv, const AttentionShape& shape,
                           const RopeTable<T>& table, index_t pos) {
    cpu::rope_forward(qkv, shape, table, pos);
  }
  template <class T>
  static void rope_backward(const MatrixView<T, Host>& dqkv, const AttentionShape& shape,
                            const RopeTable<T>& table, index_t pos) {
    cpu::rope_backward(dqkv, shape, table, pos);
  }

  template <class T>
  static void attention_forward(const AttentionShape& shape, const MatrixView<const T, Host>& qkv,
                                const MatrixView<T, Host>& out, AttentionState<T>& state) {
    cpu::attention_forward<T>(shape, qkv, out, state);
  }
  template <class T>
  static void attention_backward(const AttentionShape& shape, const MatrixView<const T, Host>& qkv,
                                 AttentionState<T>& state, const MatrixView<const T, Host>& dout,
                                 const MatrixView<T, Host>& dqkv) {
    cpu::attention_backward<T>(shape, qkv, state, dout, dqkv);
  }
  template <class T>
  static void attention_decode(const AttentionShape& shape, const MatrixView<const T, Host>& qkv_new,
                               index_t pos, KvCache<T>& cache, const MatrixView<T, Host>& out) {
    cpu::attention_decode<T>(shape, qkv_new, pos, cache, out);
  }

  template <class T>
  static double softmax_cross_entropy(const MatrixView<T, Host>& logits, const std::int32_t* targets,
                                      bool grad, T scale, LossState&) {
    return cpu::softmax_cross_entropy(logits, targets, grad, scale);
  }

  template <class T>
  static void add(const MatrixView<const T, Host>& x, const MatrixView<const T, Host>& b,
                  const MatrixView<T, Host>& y) {
    cpu::add<T>(x, b, y);
  }
  template <class T>
  static void add_scaled(const MatrixView<const T, Host>& x, const MatrixView<const T, Host>& b,
                         const T* c, const MatrixView<T, Host>& y) {
    cpu::add_scaled<T>(x, b, c, y);
  }
  template <class T>
  static void scaled_columns(const MatrixView<const T, Host>& x, const T* c, const MatrixView<T, Host>& y) {
    cpu::scaled_columns<T>(x, c, y);
  }
  template <class T>
  static void scale_columns(const MatrixView<T, Host>& y, const T* c) {
    cpu::scale_columns<T>(y, c);
  }
  template <class T>
  static void gelu_forward(const MatrixView<const T, Host>& u, const MatrixView<T, Host>& h) {
    cpu::gelu_forward<T>(u, h);
  }
  template <class T>
  static void gelu_backward(const MatrixView<const T, Host>& dh, const MatrixView<const T, Host>& u,
                            const MatrixView<T, Host>& du) {
    cpu::gelu_backward<T>(dh, u, du);
  }
  template <class T>
  static void swiglu_forward(const MatrixView<const T, Host>& g, const MatrixView<const T, Host>& u,
                             const MatrixView<T, Host>& h) {
    cpu::swiglu_forward<T>(g, u, h);
  }
  template <class T>
  static void swiglu_backward(const MatrixView<const T, Host>& dh, const MatrixView<const T, Host>& g,
                              const MatrixView<const T, Host>& u, const MatrixView<T, Host>& dg,
                              const MatrixView<T, Host>& du) {
    cpu::swiglu_backward<T>(dh, g, u, dg, du);
  }

  template <class T>
  static void gather_rows(const MatrixView<const T, Host>& src, std::span<const index_t> rows,
                          const MatrixView<T, Host>& dst) {
    cpu::gather_rows<T>(src, rows, dst);
  }
  template <class T>
  static void scatter_add_rows(const MatrixView<const T, Host>& src, std::span<const index_t> rows,
                               const MatrixView<T, Host>& dst) {
    cpu::scatter_add_rows<T>(src, rows, dst);
  }
  template <class T>
  static void gather_column_blocks(const MatrixView<const T, Host>& src, std::span<const index_t> blocks,
                                   index_t w, const MatrixView<T, Host>& dst) {
    cpu::gather_column_blocks<T>(src, blocks, w, dst);
  }
  template <class T>
  static void scatter_add_column_blocks(const MatrixView<const T, Host>& src,
                                        std::span<const index_t> blocks, index_t w,
                                        const MatrixView<T, Host>& dst) {
    cpu::scatter_add_column_blocks<T>(src, blocks, w, dst);
  }

  template <class T>
  static void gemm(T alpha, const MatrixView<const T, Host>& a, Op opa,
                   const MatrixView<const T, Host>& b, Op opb, T beta, const MatrixView<T, Host>& c) {
    cpu::gemm<T>(alpha, a, opa, b, opb, beta, c);
  }
};

}  // namespace bonsai
