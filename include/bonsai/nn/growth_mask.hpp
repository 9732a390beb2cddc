// bonsai/nn/growth_mask.hpp — MSG's growth masks (Yao et al., ICLR 2024): after a model grows,
// every new part is multiplied by a mask value m in [0, 1] that the trainer ramps from 0 to 1.
//   residual units  c_D = [1 or m per unit]: the embedding output, every norm output (with
//                   c_D-weighted statistics) and both branch outputs of every block;
//   head groups     q, k and v of a new key/value head group (and its query heads) times m;
//   FFN units       the activation's input times m (GELU: gelu(m u); SwiGLU: the gate's);
//   layers          a new layer's branches times m:  h <- h + m Attn(.),  h <- h + m Mlp(.).
// At m = 0 the grown model computes exactly the source model's function and every new
// parameter whose output is masked gets a zero gradient; at m = 1 it is the plain grown model
// (up to rounding), so the masks are then dropped.
#pragma once

#include <algorithm>
#include <vector>

#include "../core/tensor.hpp"

namespace bonsai {

/// Which units and layers of a grown model are new (masked), and the mask value m.
struct GrowthMask {
  std::vector<bool> residual;  // (d_model): unit is new; empty when the residual did not grow
  std::vector<bool> heads;     // (n_kv_head groups); empty when no head group is new
  std::vector<bool> ffn;       // (FFN units); empty when the FFN did not grow
  std::vector<bool> layers;    // (n_layer); empty when no layer is new
  double value = 0.0;          // m

  static bool any(const std::vector<bool>& v) { return std::find(v.begin(), v.end(), true) != v.end(); }
  /// Whether anything is masked.
  bool masks_anything() const { return any(residual) || any(heads) || any(ffn) || any(layers); }
};

/// The mask vectors one block applies (each null when that part is not masked).
template <class T>
struct BlockMask {
  const T* residual = nullptr;  // (d): norm statistics and outputs
  const T* branch = nullptr;    // (d): attention and MLP outputs (residual mask times layer mask)
  const T* qkv = nullptr;       // (A + 2 KV): q, k, v columns
  const T* ffn = nullptr;       // (F): the activation's input
};

}  // namespace bonsai
