// bonsai/backend/cpu/cross_entropy.hpp — fused softmax cross-entropy over logits (N, V):
//   loss_i = logsumexp(z_i) - z_i[y_i],   dz_i = scale * (softmax(z_i) - onehot(y_i)),
// computed row by row in one pass that overwrites the logits with their gradient, so the
// (N, V) probabilities are never stored twice. The row losses are summed in double in row order.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "../../core/parallel.hpp"
#include "../../core/tensor.hpp"
#include "epilogue.hpp"

namespace bonsai::cpu {

/// Returns the summed loss over rows with a target >= 0 (a target of -1 is ignored: no loss, zero
/// gradient). When `grad` is true the logits are replaced by scale * dloss/dlogits.
template <class T>
double softmax_cross_entropy(const MatrixView<T, Host>& logits, const std::int32_t* targets,
                             bool grad, T scale) {
  const index_t n = logits.rows(), v = logits.cols();
  for (index_t i = 0; i < n; ++i)
    BONSAI_CHECK(targets[i] >= -1 && targets[i] < v, "cross entropy: target ", targets[i],
                 " at row ", i, " is outside the vocabulary [0, ", v, ")");
  std::vector<double> row_loss(n, 0.0);
  detail::for_row_ranges(n, v, [&](int, index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      T* z = logits.data() + r * logits.ld();
      auto zr = detail::RowArray<T>(z, v);
      const T mx = zr.maxCoeff();
      const double sum = static_cast<double>((zr - mx).exp().sum());
      const std::int32_t y = targets[r];
      if (y >= 0) row_loss[r] = std::log(sum) + double(mx) - double(z[y]);
      if (grad) {
        if (y < 0) {
          zr.setZero();
          continue;
        }
        const T inv = T(1.0 / sum);
        zr = (zr - mx).exp() * (inv * scale);
        z[y] -= scale;
      }
    }
  });
  double total = 0;
  for (double l : row_loss) total += l;
  return total;
}

}  // namespace bonsai::cpu
