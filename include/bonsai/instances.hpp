// bonsai/instances.hpp — lists of bonsai's costliest instantiations, so that a program can
// compile each once instead of in every translation unit that uses it (docs/compile_times.md).
// In a header that every source of the program includes:
//     BONSAI_KERNEL_INSTANCES(extern)              // the SVD of the initialisers, Eigen's GEMM
//     BONSAI_GPT_INSTANCES(extern, bonsai::LowRank<float>)   // one line per FFN structure used
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
      T, const ::bonsai::MatrixView<const T, ::bonsai::Host>&, ::bonsai::cpu::Op,                 \
      const ::bonsai::MatrixView<const T, ::bonsai::Host>&, ::bonsai::cpu::Op, T,                 \
      const ::bonsai::MatrixView<T, ::bonsai::Host>&);

/// The scalar kernels, float and double: the SVD initialisers and Eigen's GEMM.
#define BONSAI_KERNEL_INSTANCES(EXTERN)                                                           \
  BONSAI_SVD_INSTANCES(EXTERN, float)                                                             \
  BONSAI_SVD_INSTANCES(EXTERN, double)                                                            \
  BONSAI_GEMM_INSTANCES(EXTERN, float)                                                            \
  BONSAI_GEMM_INSTANCES(EXTERN, double)
