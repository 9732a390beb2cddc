// bonsai/instances.hpp — lists of bonsai's costliest instantiations, so that a program can
// compile each once instead of in every translation unit that uses it (docs/compile_times.md).
// In a header that every source of the program includes:
//     BONSAI_KERNEL_INSTANCES(extern)              // the SVD of the initialisers, Eigen's GEMM
//     BONSAI_GPT_INSTANCES(extern, bonsai::LowRank<float>)   // one line per model type used
// and in exactly one .cpp file each, after that header:
//     BONSAI_KERNEL_INSTANCES()             // or its parts, in several files that build in parallel
//     BONSAI_GPT_INSTANCES(, bonsai::LowRank<float>)
// An explicit instantiation declaration (`extern template`) tells the compiler that another
// translation unit defines the instantiation, so this one neither compiles nor optimises it;
// nothing about the templates themselves changes, and a program that uses neither macro
// compiles everything where it is used, as any header-only library does.
#pragma once

#include "backend/cpu/gemm.hpp"
#include "core/eigen.hpp"
#include "structured/init.hpp"

/// Both SVD initialisers (structured/init.hpp) for scalar type T: Eigen's BDCSVD, about 30 s
/// and 1.3 GB of compilation per scalar type.
#define BONSAI_SVD_INSTANCES(EXTERN, T)                                                           \
  EXTERN template void ::bonsai::detail::to_polar_factor<T>(                                      \
      const ::bonsai::MatrixView<T, ::bonsai::Host>&);                                            \
  EXTERN template void ::bonsai::detail::balanced_svd_factors<T>(                                 \
      const ::bonsai::MatrixView<const T, ::bonsai::Host>&,                                       \
      const ::bonsai::MatrixView<T, ::bonsai::Host>&,                                             \
      const ::bonsai::MatrixView<T, ::bonsai::Host>&);

/// Eigen's GEMM behind cpu::gemm (backend/cpu/gemm.hpp) for scalar type T.
#define BONSAI_GEMM_INSTANCES(EXTERN, T)                                                          \
  EXTERN template void ::bonsai::cpu::detail::gemm_eigen<T>(                                      \
      T, const ::bonsai::MatrixView<const T, ::bonsai::Host>&, ::bonsai::Op,                 \
      const ::bonsai::MatrixView<const T, ::bonsai::Host>&, ::bonsai::Op, T,                 \
      const ::bonsai::MatrixView<T, ::bonsai::Host>&);

/// The scalar kernels, float and double: the SVD initialisers and Eigen's GEMM.
#define BONSAI_KERNEL_INSTANCES(EXTERN)                                                           \
  BONSAI_SVD_INSTANCES(EXTERN, float)                                                             \
  BONSAI_SVD_INSTANCES(EXTERN, double)                                                            \
  BONSAI_GEMM_INSTANCES(EXTERN, float)                                                            \
  BONSAI_GEMM_INSTANCES(EXTERN, double)

/// The model Gpt<Map, Map> (include nn/gpt.hpp first): its constructor, init, forward, backward and decode,
/// with every layer they run (about 8 s of compilation each). Map may be any trainable FFN map,
/// e.g. bonsai::LowRank<float> or bonsai::SelfGuided<bonsai::LowRank<float>> (SGT's model).
#define BONSAI_GPT_INSTANCES(EXTERN, Map) EXTERN template class ::bonsai::Gpt<Map, Map>;

/// The decoding members of a model that is not trained, such as the pre-merged
/// Gpt<PreMerged<S>, PreMerged<S>> (include nn/premerge.hpp first), which has no init or backward:
/// its constructor, forward and decode.
#define BONSAI_DECODER_INSTANCES(EXTERN, Map)                                                     \
  EXTERN template ::bonsai::Gpt<Map, Map>::Gpt(const ::bonsai::GptConfig&);                       \
  EXTERN template double ::bonsai::Gpt<Map, Map>::forward(                                        \
      ::bonsai::Gpt<Map, Map>::Context&, const ::bonsai::TokenBatch&, ::bonsai::scalar_of<Map>,   \
      std::span<const ::bonsai::LayerKept>);                                                      \
  EXTERN template auto ::bonsai::Gpt<Map, Map>::make_decode_state(::bonsai::index_t) const        \
      -> DecodeState;                                                                             \
  EXTERN template auto ::bonsai::Gpt<Map, Map>::decode(DecodeState&, const std::int32_t*,         \
                                                       ::bonsai::index_t, ::bonsai::index_t)      \
      -> ::bonsai::MatrixView<::bonsai::scalar_of<Map>, ::bonsai::Host>;

/// The model on the GPU, Gpt<Map, Map, Device> (include bonsai/cuda.hpp first; Map in the device
/// precision, e.g. bonsai::LowRank<bonsai::bf16>): every member, compiled by nvcc. Its init
/// draws with the host model Gpt<rebind_scalar_t<Map, float>, ..., Host>, so declare that one
/// extern too (BONSAI_GPT_INSTANCES).
#define BONSAI_DEVICE_GPT_INSTANCES(EXTERN, Map) \
  EXTERN template class ::bonsai::Gpt<Map, Map, ::bonsai::Device>;
