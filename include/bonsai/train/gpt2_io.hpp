// bonsai/train/gpt2_io.hpp — exchange of dense GPT-2 models with llm.c (model_*.bin: int32[256]
// header, then the layer-stacked tensors in a fixed order, vocabulary padded to Vp) and with
// Hugging Face (GPT2LMHeadModel safetensors, whose Conv1D matrices are stored (in, out), the
// transpose of bonsai's (out, in)). Tensors travel as NamedTensors under bonsai's arena names.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../nn/arena.hpp"
#include "../nn/config.hpp"
#include "atomic_file.hpp"
#include "gpt_config_json.hpp"
#include "safetensors.hpp"

namespace bonsai {

/// One tensor by value: row-major data of `shape`.
struct NamedTensor {
  std::vector<index_t> shape;
  std::vector<float> data;
};
/// Tensors under bonsai's parameter names ("h.0.attn.qkv.weight").
using NamedTensors = std::map<std::string, NamedTensor>;

/// A model read from a foreign format: its config and its tensors.
struct ImportedModel {
  GptConfig config;
  NamedTensors tensors;
};

/// Throws unless `c` is a dense GPT-2 (LayerNorm, learned positions, GELU, dense FFN, full
/// multi-head attention of width d_model): the only models these formats can hold.
inline void check_dense_gpt2(const GptConfig& c, std::string_view what) {
  c.validate();
  BONSAI_CHECK(c.norm == NormKind::layernorm && c.pos == PosKind::learned &&
                   c.act == ActKind::gelu && c.ffn == FfnKind::dense &&
                   c.kv_heads() == c.n_head && c.attention_width() == c.d_model &&
                   c.moe_experts == 0,
               what, ": only dense GPT-2 models (layernorm, learned positions, gelu, dense FFN, ",
               "n_kv_head = n_head, attn_dim = d_model, no experts) can be exported or imported in ",
               "this format; this one has norm=", to_string(c.norm), " pos=", to_string(c.pos),
               " act=", to_string(c.act), " ffn=", to_string(c.ffn), " n_kv_head=", c.kv_heads(),
               " attn_dim=", c.attention_width(), " d_model=", c.d_model,
               " moe_experts=", c.moe_experts);
}

/// Throws unless `c` fits an llm.c model file: a dense GPT-2 with the FFN width 4 d_model and
/// the LayerNorm epsilon 1e-5 that llm.c fixes.
inline void check_llmc_config(const GptConfig& c, std::string_view what) {
  check_dense_gpt2(c, what);
  BONSAI_CHECK(c.ffn_width() == 4 * c.d_model, what, ": llm.c fixes the FFN width at 4 d_model = ",
               4 * c.d_model, " but this model has ", c.ffn_width());
  BONSAI_CHECK(c.norm_eps == 1e-5, what, ": llm.c fixes the LayerNorm epsilon at 1e-5 but this "
               "model uses ", c.norm_eps);
}

/// The parameters of a dense GPT-2 under bonsai's names, in llm.c's order within a layer.
inline std::vector<ParamInfo> gpt2_parameters(const GptConfig& c) {
  const index_t C = c.d_model, F = c.ffn_width();
  std::vector<ParamInfo> p{{"wte", {c.vocab_size, C}}, {"wpe", {c.max_seq_len, C}}};
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    p.push_back({h + "ln_1.weight", {C}});
    p.push_back({h + "ln_1.bias", {C}});
    p.push_back({h + "attn.qkv.weight", {3 * C, C}});
    p.push_back({h + "attn.qkv.bias", {3 * C}});
    p.push_back({h + "attn.proj.weight", {C, C}});
    p.push_back({h + "attn.proj.bias", {C}});
    p.push_back({h + "ln_2.weight", {C}});
    p.push_back({h + "ln_2.bias", {C}});
    p.push_back({h + "mlp.up.weight", {F, C}});
    p.push_back({h + "mlp.up.bias", {F}});
    p.push_back({h + "mlp.down.weight", {C, F}});
    p.push_back({h + "mlp.down.bias", {C}});
  }
  p.push_back({"ln_f.weight", {C}});
  p.push_back({"ln_f.bias", {C}});
  return p;
}

/// Every slot of `arena` by value.
inline NamedTensors from_arena(const ParamArena<float>& arena) {
  BONSAI_CHECK(arena.allocated(), "from_arena: the arena is not allocated");
  NamedTensors out;
  for (const ParamSlot& s : arena.slots()) {
    const float* p = arena.values() + s.offset;
    out[s.name] = {s.shape, std::vector<float>(p, p + s.size())};
  }
  return out;
}

/// Copies `tensors` into `arena`'s slots. Strict: every slot needs a tensor of its shape and
/// every tensor a slot; nothing is copied unless all match. `origin` names the source in errors.
inline void copy_into(ParamArena<float>& arena, const NamedTensors& tensors,
                      std::string_view origin = "copy_into") {
  BONSAI_CHECK(arena.allocated(), origin, ": the arena is not allocated");
  for (const ParamSlot& s : arena.slots()) {
    auto it = tensors.find(s.name);
    BONSAI_CHECK(it != tensors.end(), origin, ": missing tensor '", s.name,
                 "' (the model expects ", detail::shape_string(s.shape), ")");
    BONSAI_CHECK(it->second.shape == s.shape, origin, ": tensor '", s.name, "' has shape ",
                 detail::shape_string(it->second.shape), " but the model expects ",
                 detail::shape_string(s.shape));
    BONSAI_CHECK(index_t(it->second.data.size()) == s.size(), origin, ": tensor '", s.name,
                 "' of shape ", detail::shape_string(s.shape), " holds ",
                 it->second.data.size(), " values");
  }
  for (const auto& [name, t] : tensors)
    BONSAI_CHECK(arena.find(name) != nullptr, origin, ": unexpected tensor '", name, "' ",
                 detail::shape_string(t.shape), " (the model has no such parameter)");
  for (const ParamSlot& s : arena.slots()) {
    const std::vector<float>& d = tensors.at(s.name).data;
    std::copy(d.begin(), d.end(), arena.values() + s.offset);
  }
}

namespace detail {

/// Throws unless `arena` holds exactly the dense GPT-2 parameters of `c`.
inline void check_gpt2_arena(const GptConfig& c, const ParamArena<float>& arena,
                             std::string_view what) {
  check_dense_gpt2(c, what);
  BONSAI_CHECK(arena.allocated(), what, ": the arena is not allocated");
  const std::vector<ParamInfo> expected = gpt2_parameters(c);
  for (const ParamInfo& p : expected) {
    const ParamSlot* s = arena.find(p.name);
    BONSAI_CHECK(s != nullptr, what, ": the arena has no parameter '", p.name, "' ",
                 shape_string(p.shape), " of a dense GPT-2");
    BONSAI_CHECK(s->shape == p.shape, what, ": parameter '", p.name, "' has shape ",
                 shape_string(s->shape), " but the config implies ", shape_string(p.shape));
  }
  if (arena.slots().size() != expected.size())
    for (const ParamSlot& s : arena.slots())
      BONSAI_CHECK(std::ranges::any_of(expected, [&](const ParamInfo& p) { return p.name == s.name; }),
                   what, ": parameter '", s.name, "' ", shape_string(s.shape),
                   " is not part of a dense GPT-2");
}

inline std::span<const float> arena_tensor(const ParamArena<float>& arena, const std::string& name) {
  const ParamSlot& s = arena.slot(name);
  return {arena.values() + s.offset, std::size_t(s.size())};
}

/// (rows, cols) -> (cols, rows), row-major.
inline std::vector<float> transposed(std::span<const float> src, index_t rows, index_t cols) {
  std::vector<float> dst(src.size());
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) dst[std::size_t(c * rows + r)] = src[std::size_t(r * cols + c)];
  return dst;
}

// ---- llm.c -------------------------------------------------------------------------------------

inline constexpr std::int32_t llmc_model_magic = 20240326;

/// The tensors of an llm.c model file in file order: each group is stacked over layers.
inline std::vector<std::vector<std::string>> llmc_groups(index_t n_layer) {
  std::vector<std::vector<std::string>> groups{{"wte"}, {"wpe"}};
  for (const char* suffix : {"ln_1.weight", "ln_1.bias", "attn.qkv.weight", "attn.qkv.bias",
                             "attn.proj.weight", "attn.proj.bias", "ln_2.weight", "ln_2.bias",
                             "mlp.up.weight", "mlp.up.bias", "mlp.down.weight", "mlp.down.bias"}) {
    std::vector<std::string> g;
    for (index_t l = 0; l < n_layer; ++l) g.push_back("h." + std::to_string(l) + "." + suffix);
    groups.push_back(std::move(g));
  }
  groups.push_back({"ln_f.weight"});
  groups.push_back({"ln_f.bias"});
  return groups;
}

// ---- Hugging Face ------------------------------------------------------------------------------

/// One HF GPT-2 tensor name (without "transformer.") and its bonsai name; Conv1D matrices are
/// stored transposed.
struct HfName {
  std::string hf, bonsai;
  bool transpose;
};
inline std::vector<HfName> hf_names(index_t n_layer) {
  std::vector<HfName> out{{"wte.weight", "wte", false}, {"wpe.weight", "wpe", false}};
  static const HfName layer[] = {
      {"ln_1.weight", "ln_1.weight", false},      {"ln_1.bias", "ln_1.bias", false},
      {"attn.c_attn.weight", "attn.qkv.weight", true}, {"attn.c_attn.bias", "attn.qkv.bias", false},
      {"attn.c_proj.weight", "attn.proj.weight", true}, {"attn.c_proj.bias", "attn.proj.bias", false},
      {"ln_2.weight", "ln_2.weight", false},      {"ln_2.bias", "ln_2.bias", false},
      {"mlp.c_fc.weight", "mlp.up.weight", true}, {"mlp.c_fc.bias", "mlp.up.bias", false},
      {"mlp.c_proj.weight", "mlp.down.weight", true}, {"mlp.c_proj.bias", "mlp.down.bias", false},
  };
  for (index_t l = 0; l < n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    for (const HfName& n : layer) out.push_back({h + n.hf, h + n.bonsai, n.transpose});
  }
  out.push_back({"ln_f.weight", "ln_f.weight", false});
  out.push_back({"ln_f.bias", "ln_f.bias", false});
  return out;
}

/// A dense GPT-2 config guessed from HF tensor shapes (no config.json): head dimension 64.
inline GptConfig infer_hf_config(const std::map<std::string, const SafeTensor*>& byname,
                                 const std::string& origin) {
  auto shape_of = [&](const std::string& name) -> const std::vector<index_t>& {
    auto it = byname.find(name);
    BONSAI_CHECK(it != byname.end(), origin, ": no config.json and no tensor '", name,
                 "' to infer the model's shape from");
    return it->second->shape;
  };
  const auto& wte = shape_of("wte.weight");
  const auto& wpe = shape_of("wpe.weight");
  BONSAI_CHECK(wte.size() == 2 && wpe.size() == 2, origin, ": wte ", shape_string(wte),
               " and wpe ", shape_string(wpe), " must be matrices");
  GptConfig c;
  c.vocab_size = wte[0];
  c.d_model = wte[1];
  c.max_seq_len = wpe[0];
  c.n_layer = 0;
  while (byname.contains("h." + std::to_string(c.n_layer) + ".ln_1.weight")) ++c.n_layer;
  const auto& fc = shape_of("h.0.mlp.c_fc.weight");
  BONSAI_CHECK(fc.size() == 2, origin, ": h.0.mlp.c_fc.weight ", shape_string(fc), " is not a matrix");
  c.ffn_dim = fc[1];
  BONSAI_CHECK(c.d_model % 64 == 0, origin, ": no config.json, and n_embd = ", c.d_model,
               " is not a multiple of GPT-2's head dimension 64; add a config.json with n_head");
  c.n_head = c.d_model / 64;
  return c;
}

inline void copy_file_atomic(const std::filesystem::path& from, const std::filesystem::path& to) {
  const std::vector<std::byte> bytes = read_file_bytes(from);
  AtomicFile f(to);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

}  // namespace detail

/// Reads an llm.c model file (version 3: fp32, or 5: bf16; vocabulary padded to Vp). The file
/// size must match the header exactly; wte keeps its first V rows.
inline ImportedModel import_llmc(const std::filesystem::path& path) {
  const std::string origin = path.string();
  std::ifstream in(path, std::ios::binary);
  BONSAI_CHECK(in.good(), "import_llmc: cannot open '", origin, "'");
  std::error_code ec;
  const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
  BONSAI_CHECK(!ec, "import_llmc: cannot stat '", origin, "': ", ec.message());
  BONSAI_CHECK(file_size >= 1024, origin, ": ", file_size,
               " bytes, shorter than the 1024-byte llm.c header");
  std::int32_t header[256];
  in.read(reinterpret_cast<char*>(header), sizeof header);
  BONSAI_CHECK(in.good(), origin, ": cannot read the header");
  BONSAI_CHECK(header[0] == detail::llmc_model_magic, origin, ": bad magic ", header[0],
               " (an llm.c model file starts with ", detail::llmc_model_magic, ")");
  BONSAI_CHECK(header[1] == 3 || header[1] == 5, origin, ": version ", header[1],
               " is not supported (3 = fp32, 5 = bf16)");
  const bool bf16 = header[1] == 5;
  const index_t maxT = header[2], V = header[3], L = header[4], NH = header[5], C = header[6],
                Vp = header[7];
  BONSAI_CHECK(maxT > 0 && V > 0 && L > 0 && NH > 0 && C > 0 && Vp >= V && C % NH == 0, origin,
               ": invalid header maxT=", maxT, " V=", V, " L=", L, " NH=", NH, " C=", C,
               " Vp=", Vp);
  // Element count: Vp C + maxT C + L (12 C^2 + 13 C) + 2 C, with overflow checks.
  index_t total = 0;  // first the per-layer count, then the whole
  auto mul = [&](index_t a, index_t b) {
    index_t r = 0;
    BONSAI_CHECK(!__builtin_mul_overflow(a, b, &r), origin, ": the header describes an impossibly large model");
    return r;
  };
  auto add = [&](index_t a) {
    BONSAI_CHECK(!__builtin_add_overflow(total, a, &total), origin,
                 ": the header describes an impossibly large model");
  };
  const index_t per_layer = mul(12, mul(C, C));
  BONSAI_CHECK(!__builtin_add_overflow(per_layer, 13 * C, &total), origin,
               ": the header describes an impossibly large model");
  total = mul(L, total);
  add(mul(Vp, C));
  add(mul(maxT, C));
  add(2 * C);
  const index_t elem = bf16 ? 2 : 4;
  const index_t expected = mul(total, elem);
  BONSAI_CHECK(expected <= index_t(std::numeric_limits<index_t>::max()) - 1024 &&
                   std::uintmax_t(expected + 1024) == file_size,
               origin, ": the file has ", file_size, " bytes but its header (maxT=", maxT,
               " V=", V, " Vp=", Vp, " L=", L, " C=", C, bf16 ? ", bf16" : ", fp32",
               ") implies ", 1024, " + ", expected);

  ImportedModel m;
  m.config.vocab_size = V;
  m.config.max_seq_len = maxT;
  m.config.n_layer = L;
  m.config.n_head = NH;
  m.config.d_model = C;
  check_dense_gpt2(m.config, "import_llmc");
  std::map<std::string, std::vector<index_t>> shapes;
  for (ParamInfo& p : gpt2_parameters(m.config)) shapes.emplace(p.name, std::move(p.shape));

  std::vector<std::uint16_t> raw;
  auto read_floats = [&](float* dst, index_t n) {
    if (!bf16) {
      in.read(reinterpret_cast<char*>(dst), std::streamsize(n * 4));
    } else {
      raw.resize(std::size_t(n));
      in.read(reinterpret_cast<char*>(raw.data()), std::streamsize(n * 2));
      for (index_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(std::uint32_t(raw[std::size_t(i)]) << 16);
    }
    BONSAI_CHECK(in.good(), origin, ": read failed (file truncated while reading?)");
  };
  for (const std::vector<std::string>& group : detail::llmc_groups(L)) {
    for (const std::string& name : group) {
      NamedTensor& t = m.tensors[name];
      t.shape = shapes.at(name);
      t.data.resize(std::size_t(*detail::checked_numel(t.shape)));
      read_floats(t.data.data(), index_t(t.data.size()));
      if (name == "wte") in.seekg(std::streamoff((Vp - V) * C * elem), std::ios::cur);  // padding rows
    }
  }
  return m;
}

/// Keeps the first `seq_len` rows of m's learned position table, so the model runs on a context
/// of seq_len tokens exactly as on the first seq_len positions of its own; `origin` names the
/// source in the error when seq_len exceeds the positions it learned.
inline void shorten_context(ImportedModel& m, index_t seq_len, std::string_view origin) {
  const index_t have = m.config.max_seq_len;
  BONSAI_CHECK(seq_len >= 1 && seq_len <= have, origin, ": a context of ", seq_len,
               " tokens is not within the 1 to ", have, " positions the model learned");
  if (seq_len == have) return;
  m.config.max_seq_len = seq_len;
  auto it = m.tensors.find("wpe");  // (positions, d_model); none with rotary positions
  if (it == m.tensors.end()) return;
  NamedTensor& wpe = it->second;
  wpe.shape[0] = seq_len;
  wpe.data.resize(std::size_t(seq_len * wpe.shape[1]));
}

/// Writes `arena` (a dense GPT-2 of config `c`) as an llm.c version 3 (fp32) model file, the
/// vocabulary padded with zero rows to Vp = V rounded up to a multiple of 128. Atomic.
inline void export_llmc(const std::filesystem::path& path, const GptConfig& c,
                        const ParamArena<float>& arena) {
  check_llmc_config(c, "export_llmc");
  detail::check_gpt2_arena(c, arena, "export_llmc");
  const index_t Vp = (c.vocab_size + 127) / 128 * 128;
  for (index_t v : {c.max_seq_len, Vp, c.n_layer, c.n_head, c.d_model})
    BONSAI_CHECK(v <= std::numeric_limits<std::int32_t>::max(), "export_llmc: ", v,
                 " does not fit the int32 header");
  std::int32_t header[256] = {};
  header[0] = detail::llmc_model_magic;
  header[1] = 3;
  header[2] = std::int32_t(c.max_seq_len);
  header[3] = std::int32_t(c.vocab_size);
  header[4] = std::int32_t(c.n_layer);
  header[5] = std::int32_t(c.n_head);
  header[6] = std::int32_t(c.d_model);
  header[7] = std::int32_t(Vp);
  AtomicFile f(path);
  f.write(header, sizeof header);
  for (const std::vector<std::string>& group : detail::llmc_groups(c.n_layer)) {
    for (const std::string& name : group) {
      const std::span<const float> t = detail::arena_tensor(arena, name);
      f.write(t.data(), t.size_bytes());
      if (name == "wte") {
        const std::vector<float> padding(std::size_t((Vp - c.vocab_size) * c.d_model), 0.0f);
        f.write(padding.data(), padding.size() * sizeof(float));
      }
    }
  }
  f.commit();
}

/// Reads a Hugging Face GPT2LMHeadModel: a folder with model.safetensors (and config.json), or
/// the .safetensors file itself (config.json next to it, if any; without one the shapes give
/// the config, with head dimension 64). Names may carry the "transformer." prefix or not; the
/// attention-mask buffers (attn.bias, attn.masked_bias) and the tied lm_head.weight are
/// skipped; F32, F16 and BF16 are accepted; the Conv1D matrices are transposed to (out, in).
inline ImportedModel import_hf(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool folder = fs::is_directory(path, ec);
  const fs::path file = folder ? path / "model.safetensors" : path;
  const fs::path config_path = (folder ? path : detail::parent_or_dot(path)) / "config.json";
  if (folder && !fs::exists(file, ec))
    BONSAI_CHECK(!fs::exists(path / "model.safetensors.index.json", ec), "import_hf: '",
                 path.string(), "' holds a sharded checkpoint, which is not supported");
  const SafetensorsFile st = SafetensorsFile::open(file);

  // The tensors by their name without "transformer.", buffers and the tied head left out.
  std::map<std::string, const SafeTensor*> byname;
  for (const SafeTensor& t : st.tensors()) {
    std::string name = t.name;
    if (name.starts_with("transformer.")) name = name.substr(12);
    if (name == "lm_head.weight" || name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"))
      continue;
    BONSAI_CHECK(byname.emplace(name, &t).second, st.origin(), ": tensor '", name,
                 "' appears both with and without the 'transformer.' prefix");
  }

  ImportedModel m;
  m.config = fs::exists(config_path, ec) ? gpt_config_from_json(read_json_file(config_path))
                                         : detail::infer_hf_config(byname, st.origin());
  check_dense_gpt2(m.config, "import_hf");
  std::map<std::string, std::vector<index_t>> shapes;
  for (ParamInfo& p : gpt2_parameters(m.config)) shapes.emplace(p.name, std::move(p.shape));
  for (const detail::HfName& n : detail::hf_names(m.config.n_layer)) {
    const std::vector<index_t>& shape = shapes.at(n.bonsai);
    std::vector<index_t> stored = shape;
    if (n.transpose) std::swap(stored[0], stored[1]);
    auto it = byname.find(n.hf);
    BONSAI_CHECK(it != byname.end(), st.origin(), ": missing tensor '", n.hf, "' (expected ",
                 detail::shape_string(stored), ")");
    std::vector<float> data = st.read_as<float>(it->second->name, stored);
    if (n.transpose) data = detail::transposed(data, stored[0], stored[1]);
    m.tensors[n.bonsai] = {shape, std::move(data)};
    byname.erase(it);
  }
  if (!byname.empty())
    detail::fail(st.origin(), ": unexpected tensor '", byname.begin()->second->name, "' ",
                 detail::shape_string(byname.begin()->second->shape), " in a GPT-2 model of ",
                 m.config.n_layer, " layers");
  return m;
}

/// Writes `arena` (a dense GPT-2 of config `c`) as a Hugging Face folder: config.json (HF keys
/// plus the "bonsai" block) and model.safetensors ("transformer." names, Conv1D matrices
/// transposed to (in, out), no lm_head.weight since it is tied). With `tokenizer_dir`, copies its
/// encoder.json to vocab.json and vocab.bpe to merges.txt. Every file is written atomically.
inline void export_hf(const std::filesystem::path& folder, const GptConfig& c,
                      const ParamArena<float>& arena,
                      const std::optional<std::filesystem::path>& tokenizer_dir = std::nullopt) {
  detail::check_gpt2_arena(c, arena, "export_hf");
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  BONSAI_CHECK(!ec, "export_hf: cannot create '", folder.string(), "': ", ec.message());
  SafetensorsWriter w;
  std::vector<std::vector<float>> transposed;  // kept alive until write()
  for (const detail::HfName& n : detail::hf_names(c.n_layer)) {
    const ParamSlot& s = arena.slot(n.bonsai);
    const std::span<const float> data = detail::arena_tensor(arena, n.bonsai);
    if (n.transpose) {
      transposed.push_back(detail::transposed(data, s.shape[0], s.shape[1]));
      w.add<float>("transformer." + n.hf, {s.shape[1], s.shape[0]}, transposed.back());
    } else {
      w.add<float>("transformer." + n.hf, s.shape, data);
    }
  }
  w.write(folder / "model.safetensors");
  write_file_atomic(folder / "config.json", gpt_config_to_json(c).dump(2) + "\n");
  if (tokenizer_dir) {
    detail::copy_file_atomic(*tokenizer_dir / "encoder.json", folder / "vocab.json");
    detail::copy_file_atomic(*tokenizer_dir / "vocab.bpe", folder / "merges.txt");
  }
}

}  // namespace bonsai
