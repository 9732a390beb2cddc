// bonsai/train/gpt_config_json.hpp — GptConfig as a Hugging Face GPT-2 config.json: the HF keys
// (model_type "gpt2", n_embd, n_layer, n_head, n_inner, ...) plus a "bonsai" block holding every
// GptConfig field, so that a config survives the round trip exactly and HF tools still load it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../nn/config.hpp"

namespace bonsai {

/// The config.json object of `c`: HF GPT-2 keys plus {"bonsai": {every GptConfig field}}.
inline nlohmann::json gpt_config_to_json(const GptConfig& c) {
  const index_t eot = std::min<index_t>(50256, c.vocab_size - 1);  // GPT-2's <|endoftext|>
  nlohmann::json j = {
      {"model_type", "gpt2"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"vocab_size", c.vocab_size},
      {"n_positions", c.max_seq_len},
      {"n_embd", c.d_model},
      {"n_layer", c.n_layer},
      {"n_head", c.n_head},
      {"n_inner", c.ffn_width()},
      {"activation_function", "gelu_new"},
      {"layer_norm_epsilon", c.norm_eps},
      {"initializer_range", c.init_std},
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"bos_token_id", eot},
      {"eos_token_id", eot},
      {"tie_word_embeddings", true},
      {"torch_dtype", "float32"},
  };
  j["bonsai"] = {
      {"vocab_size", c.vocab_size},
      {"max_seq_len", c.max_seq_len},
      {"n_layer", c.n_layer},
      {"d_model", c.d_model},
      {"n_head", c.n_head},
      {"n_kv_head", c.n_kv_head},
      {"attn_dim", c.attn_dim},
      {"ffn_dim", c.ffn_dim},
      {"norm", to_string(c.norm)},
      {"pos", to_string(c.pos)},
      {"act", to_string(c.act)},
      {"ffn", to_string(c.ffn)},
      {"rank", c.rank},
      {"blocks", c.blocks},
      {"dense_first_ffn", c.dense_first_ffn},
      {"norm_eps", c.norm_eps},
      {"rope_base", c.rope_base},
      {"init_std", c.init_std},
  };
  if (c.moe_experts > 0) {
    j["bonsai"]["moe_experts"] = c.moe_experts;
    j["bonsai"]["moe_top_k"] = c.moe_top_k;
    j["bonsai"]["moe_every"] = c.moe_every;
    j["bonsai"]["moe_ffn_dim"] = c.moe_ffn_dim;
    j["bonsai"]["moe_gating"] = to_string(c.moe_gating);
    j["bonsai"]["moe_aux_loss"] = c.moe_aux_loss;
  }
  return j;
}

namespace detail {

inline index_t json_index(const nlohmann::json& j, std::string_view key) {
  BONSAI_CHECK(j.is_number_integer(), "GPT config: '", key, "' must be an integer, got ", j.dump());
  if (j.is_number_unsigned())
    BONSAI_CHECK(j.get<std::uint64_t>() <= std::uint64_t(std::numeric_limits<index_t>::max()),
                 "GPT config: '", key, "' = ", j.dump(), " is too large");
  return j.get<index_t>();
}
inline double json_double(const nlohmann::json& j, std::string_view key) {
  BONSAI_CHECK(j.is_number(), "GPT config: '", key, "' must be a number, got ", j.dump());
  return j.get<double>();
}
inline std::string json_string(const nlohmann::json& j, std::string_view key) {
  BONSAI_CHECK(j.is_string(), "GPT config: '", key, "' must be a string, got ", j.dump());
  return j.get<std::string>();
}
inline bool json_bool(const nlohmann::json& j, std::string_view key) {
  BONSAI_CHECK(j.is_boolean(), "GPT config: '", key, "' must be true or false, got ", j.dump());
  return j.get<bool>();
}

}  // namespace detail

/// A GptConfig from a config.json object. With a "bonsai" block every field comes from it
/// (unknown keys or wrong types there are errors) and the HF keys present must agree with it;
/// without one, a plain HF GPT-2 config is read (n_inner null means 4 n_embd; the activation
/// must be a tanh GELU). The result is validated.
inline GptConfig gpt_config_from_json(const nlohmann::json& j) {
  using detail::json_bool, detail::json_double, detail::json_index, detail::json_string;
  BONSAI_CHECK(j.is_object(), "GPT config: expected a JSON object, got ", j.dump());
  if (j.contains("model_type")) {
    const std::string type = json_string(j["model_type"], "model_type");
    BONSAI_CHECK(type == "gpt2", "GPT config: model_type '", type, "' is not supported (gpt2 only)");
  }
  GptConfig c;
  // The HF keys.
  if (j.contains("vocab_size")) c.vocab_size = json_index(j["vocab_size"], "vocab_size");
  if (j.contains("n_positions")) c.max_seq_len = json_index(j["n_positions"], "n_positions");
  else if (j.contains("n_ctx")) c.max_seq_len = json_index(j["n_ctx"], "n_ctx");
  if (j.contains("n_embd")) c.d_model = json_index(j["n_embd"], "n_embd");
  if (j.contains("n_layer")) c.n_layer = json_index(j["n_layer"], "n_layer");
  if (j.contains("n_head")) c.n_head = json_index(j["n_head"], "n_head");
  if (j.contains("n_inner") && !j["n_inner"].is_null()) c.ffn_dim = json_index(j["n_inner"], "n_inner");
  if (j.contains("layer_norm_epsilon"))
    c.norm_eps = json_double(j["layer_norm_epsilon"], "layer_norm_epsilon");
  if (j.contains("initializer_range"))
    c.init_std = json_double(j["initializer_range"], "initializer_range");

  if (!j.contains("bonsai")) {
    if (j.contains("activation_function")) {
      const std::string act = json_string(j["activation_function"], "activation_function");
      BONSAI_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast",
                   "GPT config: activation_function '", act,
                   "' is not supported (bonsai's GELU is the tanh approximation, gelu_new)");
    }
    c.validate();
    return c;
  }

  const nlohmann::json& b = j["bonsai"];
  BONSAI_CHECK(b.is_object(), "GPT config: 'bonsai' must be an object, got ", b.dump());
  for (const auto& [key, value] : b.items()) {
    if (key == "vocab_size") c.vocab_size = json_index(value, key);
    else if (key == "max_seq_len") c.max_seq_len = json_index(value, key);
    else if (key == "n_layer") c.n_layer = json_index(value, key);
    else if (key == "d_model") c.d_model = json_index(value, key);
    else if (key == "n_head") c.n_head = json_index(value, key);
    else if (key == "n_kv_head") c.n_kv_head = json_index(value, key);
    else if (key == "attn_dim") c.attn_dim = json_index(value, key);
    else if (key == "ffn_dim") c.ffn_dim = json_index(value, key);
    else if (key == "norm") c.norm = parse_norm(json_string(value, key));
    else if (key == "pos") c.pos = parse_pos(json_string(value, key));
    else if (key == "act") c.act = parse_act(json_string(value, key));
    else if (key == "ffn") c.ffn = parse_ffn(json_string(value, key));
    else if (key == "rank") c.rank = json_index(value, key);
    else if (key == "blocks") c.blocks = json_index(value, key);
    else if (key == "dense_first_ffn") c.dense_first_ffn = json_bool(value, key);
    else if (key == "norm_eps") c.norm_eps = json_double(value, key);
    else if (key == "rope_base") c.rope_base = json_double(value, key);
    else if (key == "init_std") c.init_std = json_double(value, key);
    else if (key == "moe_experts") c.moe_experts = json_index(value, key);
    else if (key == "moe_top_k") c.moe_top_k = json_index(value, key);
    else if (key == "moe_every") c.moe_every = json_index(value, key);
    else if (key == "moe_ffn_dim") c.moe_ffn_dim = json_index(value, key);
    else if (key == "moe_gating") c.moe_gating = parse_gating(json_string(value, key));
    else if (key == "moe_aux_loss") c.moe_aux_loss = json_double(value, key);
    else detail::fail("GPT config: unknown key '", key, "' in the \"bonsai\" block");
  }
  // The HF keys, where present, must describe the same model.
  auto agree = [&](const char* hf_key, index_t value) {
    if (!j.contains(hf_key) || j[hf_key].is_null()) return;
    const index_t hf = json_index(j[hf_key], hf_key);
    BONSAI_CHECK(hf == value, "GPT config: '", hf_key, "' = ", hf,
                 " disagrees with the \"bonsai\" block (", value, ")");
  };
  agree("vocab_size", c.vocab_size);
  agree("n_positions", c.max_seq_len);
  agree("n_embd", c.d_model);
  agree("n_layer", c.n_layer);
  agree("n_head", c.n_head);
  agree("n_inner", c.ffn_width());
  c.validate();
  return c;
}

}  // namespace bonsai
