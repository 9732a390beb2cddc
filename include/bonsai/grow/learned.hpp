// bonsai/grow/learned.hpp — what the learned growth operators (LiGO: grow/ligo.hpp; Mango:
// grow/mango.hpp) share; train/learned_growth.hpp trains them. The operator's parameters theta
// live in their own ParamArena and the grown model's parameters are a linear function of them, W = G(theta) (materialize); backward maps
// the grown model's gradient dL/dW onto dL/dtheta. A few steps (the LiGO paper: 100) of AdamW
// on theta minimise the grown model's language-model loss, then W is written once and the
// operator discarded. Both operators read and write dense GPT arenas, whose layout is checked
// here.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../nn/arena.hpp"
#include "../nn/config.hpp"
#include "../nn/gpt.hpp"
#include "../backend/adamw.hpp"

namespace bonsai {

namespace detail {

/// The parameters a dense GPT of config `c` has, in arena order, with their shapes.
inline std::vector<std::pair<std::string, std::vector<index_t>>> dense_gpt_layout(
    const GptConfig& c) {
  std::vector<std::pair<std::string, std::vector<index_t>>> out;
  const index_t d = c.d_model, f = c.ffn_width(), w = c.attention_width();
  const index_t qkv = w + 2 * c.kv_width();
  const bool ln = c.norm == NormKind::layernorm;
  out.push_back({"wte", {c.vocab_size, d}});
  if (c.pos == PosKind::learned) out.push_back({"wpe", {c.max_seq_len, d}});
  for (index_t l = 0; l < c.n_layer; ++l) {
    auto add = [&](const char* rest, std::vector<index_t> shape) {
      out.push_back({layer_param_name(l, rest), std::move(shape)});
    };
    add("ln_1.weight", {d});
    if (ln) add("ln_1.bias", {d});
    add("attn.qkv.weight", {qkv, d});
    add("attn.qkv.bias", {qkv});
    add("attn.proj.weight", {d, w});
    add("attn.proj.bias", {d});
    add("ln_2.weight", {d});
    if (ln) add("ln_2.bias", {d});
    add("mlp.up.weight", {f, d});
    add("mlp.up.bias", {f});
    if (c.act == ActKind::swiglu) {
      add("mlp.gate.weight", {f, d});
      add("mlp.gate.bias", {f});
    }
    add("mlp.down.weight", {d, f});
    add("mlp.down.bias", {d});
  }
  out.push_back({"ln_f.weight", {d}});
  if (c.norm == NormKind::layernorm) out.push_back({"ln_f.bias", {d}});
  return out;
}

/// Throws unless `arena` (allocated) holds exactly the parameters of a dense GPT of config `c`.
template <class T>
void check_dense_gpt_arena(const char* who, const ParamArena<T>& arena, const GptConfig& c,
                           const char* which, const char* model) {
  BONSAI_CHECK(arena.allocated(), who, ": the ", which, " arena is not allocated");
  const auto want = dense_gpt_layout(c);
  for (const auto& [name, shape] : want) {
    const ParamSlot* s = arena.find(name);
    BONSAI_CHECK(s != nullptr, who, ": the ", which, " arena has no '", name, "', which the ",
                 model, " has");
    BONSAI_CHECK(s->shape == shape, who, ": the ", which, " arena's '", name, "' is ",
                 shape_string(s->shape), " but the ", model, " makes it ", shape_string(shape));
  }
  BONSAI_CHECK(arena.slots().size() == want.size(), who, ": the ", which, " arena has ",
               arena.slots().size(), " parameters but the ", model, " has ", want.size());
}

}  // namespace detail

/// How train_learned_growth trains an operator. The official code trains it for 100 steps with
/// AdamW at learning rate 2e-4 (its warmup of 10000 steps left it at 1% of that, spec growth.md
/// §5); here the rate is constant and weight decay off by default (decay would pull the maps
/// towards 0).
struct LearnedGrowthConfig {
  index_t steps = 100;
  double lr = 2e-4;
  AdamWConfig adamw{.weight_decay = 0.0};
};

/// train_learned_growth's default observer: does nothing.
struct NoGrowthObserver {
  void operator()(index_t, double) const noexcept {}
};

}  // namespace bonsai
