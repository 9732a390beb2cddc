// bonsai/core/parallel.hpp — OpenMP helpers: the thread count and a static parallel loop that
// degrades to a plain loop when OpenMP is off or the work is too small to share.
#pragma once

#include "../config.hpp"

#if defined(_OPENMP)
#  include <omp.h>
#endif

namespace bonsai {

/// Threads a parallel region will use (1 without OpenMP).
inline int max_threads() noexcept {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the thread count for later parallel regions (Eigen's and oneDNN's GEMMs included).
inline void set_threads(int n) noexcept {
#if defined(_OPENMP)
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

/// Runs f(i) for i in [0, n), statically split across threads; serial when `n * work_per_item`
/// is below `min_work` (a parallel region costs a few microseconds).
template <class F>
void parallel_for(index_t n, F&& f, index_t work_per_item = 1, index_t min_work = 1 << 15) {
#if defined(_OPENMP)
  if (n > 1 && n * work_per_item >= min_work) {
#  pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) f(i);
    return;
  }
#endif
  for (index_t i = 0; i < n; ++i) f(i);
}

}  // namespace bonsai
