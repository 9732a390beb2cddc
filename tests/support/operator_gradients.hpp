// Test helper for learned growth operators (LiGO, Mango): moves every operator parameter by
// N(0, 0.05^2) away from its special initial point, then checks the gradient that backward maps
// from the grown model's loss against central differences, slot by slot (so a failure names
// the parameter), to 1e-6 of the largest gradient entry.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include <doctest/doctest.h>

#include <bonsai/core/rng.hpp>
#include <bonsai/nn/gpt.hpp>

#include "finite_diff.hpp"

namespace bonsai::test {

template <class Operator, class Model>
void check_operator_gradients(Operator& op, Model& big, const TokenBatch& batch) {
  Rng rng(29);
  auto& params = op.arena();
  for (index_t i = 0; i < params.size(); ++i) params.values()[i] += 0.05 * rng.normal();
  typename Model::Context ctx;
  op.materialize(big.arena());
  big.arena().zero_grads();
  big.forward(ctx, batch, 1.0);
  big.backward(ctx);
  params.zero_grads();
  op.backward(big.arena());
  const std::vector<double> grad(params.grads(), params.grads() + params.size());
  double scale = 0;
  for (double g : grad) scale = std::max(scale, std::abs(g));
  REQUIRE(scale > 1e-3);
  auto loss = [&] {
    op.materialize(big.arena());
    return big.forward(ctx, batch);
  };
  for (const ParamSlot& s : params.slots()) {
    CAPTURE(s.name);
    const double worst = worst_central_difference(params.values() + s.offset, s.size(), 1,
                                                  grad.data() + s.offset, loss, 1e-6);
    CHECK(worst <= 1e-6 * scale);
  }
}

}  // namespace bonsai::test
