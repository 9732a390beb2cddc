// GPT-2 interop: GptConfig <-> config.json, llm.c model files (fp32 and bf16, padded vocab) and
// Hugging Face safetensors folders (Conv1D transposes, both name prefixes, mask buffers), each
// round-tripped bit-exactly through a ParamArena; corrupt and non-GPT-2 inputs throw.
#include <doctest/doctest.h>

#include "support/temp_dir.hpp"

#include <unistd.h>

#include <bonsai/core/rng.hpp>
#include <bonsai/train/gpt2_io.hpp>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

using namespace bonsai;
namespace fs = std::filesystem;

namespace {

using test::TempDir;

GptConfig tiny() {
  GptConfig c;
  c.vocab_size = 10;
  c.max_seq_len = 6;
  c.n_layer = 2;
  c.d_model = 8;
  c.n_head = 2;
  return c;
}

/// A dense GPT-2 arena of distinct random values, or of values exact in bf16 and f16.
ParamArena<float> gpt2_arena(const GptConfig& c, std::uint64_t seed, bool bf16_exact = false) {
  ParamArena<float> a;
  for (const ParamInfo& p : gpt2_parameters(c)) a.add(p.name, p.shape);
  a.allocate();
  Rng rng(seed);
  for (index_t i = 0; i < a.size(); ++i)
    a.values()[i] = bf16_exact ? float(i % 251 - 125) / 16.0f : float(rng.normal()) + float(i) * 1e-3f;
  return a;
}

bool same_values(const ParamArena<float>& a, const ParamArena<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.values(), b.values(), sizeof(float) * std::size_t(a.size())) == 0;
}

std::string error_of(auto&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void check_same_config(const GptConfig& a, const GptConfig& b) {
  CHECK(a.vocab_size == b.vocab_size);
  CHECK(a.max_seq_len == b.max_seq_len);
  CHECK(a.n_layer == b.n_layer);
  CHECK(a.d_model == b.d_model);
  CHECK(a.n_head == b.n_head);
  CHECK(a.n_kv_head == b.n_kv_head);
  CHECK(a.attn_dim == b.attn_dim);
  CHECK(a.ffn_dim == b.ffn_dim);
  CHECK(a.norm == b.norm);
  CHECK(a.pos == b.pos);
  CHECK(a.act == b.act);
  CHECK(a.ffn == b.ffn);
  CHECK(a.rank == b.rank);
  CHECK(a.blocks == b.blocks);
  CHECK(a.dense_first_ffn == b.dense_first_ffn);
  CHECK(a.norm_eps == b.norm_eps);
  CHECK(a.rope_base == b.rope_base);
  CHECK(a.init_std == b.init_std);
  CHECK(a.moe_experts == b.moe_experts);
  CHECK(a.moe_top_k == b.moe_top_k);
  CHECK(a.moe_every == b.moe_every);
  CHECK(a.moe_ffn_dim == b.moe_ffn_dim);
  CHECK(a.moe_gating == b.moe_gating);
  CHECK(a.moe_aux_loss == b.moe_aux_loss);
}

std::string text_of(const fs::path& p) {
  const std::vector<std::byte> b = read_file_bytes(p);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

}  // namespace

// ---- config.json ---------------------------------------------------------------------------

TEST_CASE("gpt_config_json: round trip is exact and carries the HF GPT-2 keys") {
  GptConfig c;
  c.vocab_size = 32000;
  c.max_seq_len = 2048;
  c.n_layer = 7;
  c.d_model = 96;
  c.n_head = 6;
  c.n_kv_head = 2;
  c.attn_dim = 120;
  c.ffn_dim = 0;
  c.norm = NormKind::rmsnorm;
  c.pos = PosKind::rope;
  c.act = ActKind::swiglu;
  c.ffn = FfnKind::blockdense;
  c.rank = 48;
  c.blocks = 4;
  c.dense_first_ffn = false;
  c.norm_eps = 1e-6;
  c.rope_base = 500000.0;
  c.init_std = 0.0123456789012345;
  const nlohmann::json j = gpt_config_to_json(c);
  check_same_config(gpt_config_from_json(j), c);
  check_same_config(gpt_config_from_json(nlohmann::json::parse(j.dump())), c);
  check_same_config(gpt_config_from_json(gpt_config_to_json(GptConfig{})), GptConfig{});

  CHECK(j["model_type"] == "gpt2");
  CHECK(j["architectures"] == nlohmann::json::array({"GPT2LMHeadModel"}));
  CHECK(j["n_embd"] == 96);
  CHECK(j["n_layer"] == 7);
  CHECK(j["n_head"] == 6);
  CHECK(j["n_positions"] == 2048);
  CHECK(j["n_inner"] == 384);
  CHECK(j["activation_function"] == "gelu_new");
  CHECK(j["tie_word_embeddings"] == true);
  CHECK(j["bos_token_id"] == 31999);  // clamped into a 32000 vocabulary
  CHECK(gpt_config_to_json(GptConfig{})["eos_token_id"] == 50256);
  CHECK(j["bonsai"]["ffn"] == "blockdense");
  CHECK(j["bonsai"]["n_kv_head"] == 2);
  CHECK_FALSE(j["bonsai"].contains("moe_experts"));  // dense configs stay as they were

  // Mixture-of-Experts layers round-trip too.
  c.moe_experts = 8;
  c.moe_top_k = 1;
  c.moe_every = 3;
  c.moe_ffn_dim = 96;
  c.moe_gating = Gating::softmax_topk;
  c.moe_aux_loss = 0.001;
  const nlohmann::json m = gpt_config_to_json(c);
  CHECK(m["bonsai"]["moe_gating"] == "softmax_topk");
  check_same_config(gpt_config_from_json(nlohmann::json::parse(m.dump())), c);
  nlohmann::json bad = m;
  bad["bonsai"]["moe_gating"] = "best";
  CHECK(error_of([&] { gpt_config_from_json(bad); }).find("unknown gating 'best'") !=
        std::string::npos);
}

TEST_CASE("gpt_config_json: reads plain HF configs and rejects bad ones") {
  // GPT-2 small as published (n_inner null, n_ctx as well as n_positions).
  const nlohmann::json hf = nlohmann::json::parse(R"({
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768,
    "n_head": 12, "n_inner": null, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1,
    "summary_type": "cls_index", "task_specific_params": {"text-generation": {"do_sample": true}},
    "vocab_size": 50257})");
  check_same_config(gpt_config_from_json(hf), GptConfig{});

  auto rejects = [](nlohmann::json j, const std::string& needle) {
    const std::string msg = error_of([&] { gpt_config_from_json(j); });
    CAPTURE(msg);
    CHECK(msg.find(needle) != std::string::npos);
  };
  nlohmann::json j = hf;
  j["activation_function"] = "relu";
  rejects(j, "activation_function 'relu'");
  j = hf;
  j["model_type"] = "llama";
  rejects(j, "model_type 'llama'");
  j = hf;
  j["n_embd"] = 768.5;
  rejects(j, "'n_embd' must be an integer");
  j = hf;
  j["n_head"] = 7;
  rejects(j, "not divisible by n_head");

  const nlohmann::json ours = gpt_config_to_json(tiny());
  j = ours;
  j["bonsai"]["dropout"] = 0.1;
  rejects(j, "unknown key 'dropout'");
  j = ours;
  j["bonsai"]["n_layer"] = "2";
  rejects(j, "'n_layer' must be an integer");
  j = ours;
  j["bonsai"]["dense_first_ffn"] = 1;
  rejects(j, "'dense_first_ffn' must be true or false");
  j = ours;
  j["bonsai"]["norm"] = "batchnorm";
  rejects(j, "unknown norm 'batchnorm'");
  j = ours;
  j["bonsai"]["rope_base"] = "big";
  rejects(j, "'rope_base' must be a number");
  j = ours;
  j["bonsai"] = 3;
  rejects(j, "'bonsai' must be an object");
  j = ours;
  j["n_embd"] = 16;
  rejects(j, "'n_embd' = 16 disagrees");
  j = ours;
  j["n_inner"] = 12;
  rejects(j, "'n_inner' = 12 disagrees");
  rejects(nlohmann::json::array(), "expected a JSON object");
}

// ---- arena <-> NamedTensors --------------------------------------------------------------------

TEST_CASE("gpt2_io: from_arena and copy_into round trip and are strict") {
  const ParamArena<float> a = gpt2_arena(tiny(), 1);
  NamedTensors t = from_arena(a);
  CHECK(t.size() == a.slots().size());
  CHECK(t.at("h.1.attn.qkv.weight").shape == std::vector<index_t>{24, 8});
  ParamArena<float> b = gpt2_arena(tiny(), 2);
  copy_into(b, t);
  CHECK(same_values(a, b));

  NamedTensors missing = t;
  missing.erase("ln_f.bias");
  std::string msg = error_of([&] { copy_into(b, missing, "src"); });
  CHECK(msg.find("src: missing tensor 'ln_f.bias'") != std::string::npos);
  CHECK(msg.find("(8)") != std::string::npos);

  NamedTensors extra = t;
  extra["h.2.ln_1.weight"] = {{8}, std::vector<float>(8)};
  msg = error_of([&] { copy_into(b, extra); });
  CHECK(msg.find("unexpected tensor 'h.2.ln_1.weight'") != std::string::npos);

  NamedTensors wrong = t;
  wrong.at("wpe").shape = {8, 6};
  msg = error_of([&] { copy_into(b, wrong); });
  CHECK(msg.find("'wpe' has shape (8, 6) but the model expects (6, 8)") != std::string::npos);
}

// ---- llm.c -------------------------------------------------------------------------------------

TEST_CASE("gpt2_io: llm.c export then import is bit-exact, with zero padding rows") {
  TempDir dir("llmc_roundtrip");
  const GptConfig c = tiny();
  const ParamArena<float> a = gpt2_arena(c, 3);
  const fs::path file = dir.path / "model.bin";
  export_llmc(file, c, a);

  const std::vector<std::byte> bytes = read_file_bytes(file);
  const index_t C = 8, L = 2, Vp = 128;
  const index_t numel = Vp * C + 6 * C + L * (12 * C * C + 13 * C) + 2 * C;
  REQUIRE(index_t(bytes.size()) == 1024 + 4 * numel);
  std::int32_t header[256];
  std::memcpy(header, bytes.data(), sizeof header);
  CHECK(header[0] == 20240326);
  CHECK(header[1] == 3);
  CHECK(header[2] == 6);
  CHECK(header[3] == 10);
  CHECK(header[4] == 2);
  CHECK(header[5] == 2);
  CHECK(header[6] == 8);
  CHECK(header[7] == 128);
  const float* data = reinterpret_cast<const float*>(bytes.data() + 1024);
  CHECK(std::memcmp(data, a.values() + a.slot("wte").offset, 10 * 8 * 4) == 0);
  bool padding_zero = true;
  for (index_t i = 10 * C; i < Vp * C; ++i) padding_zero = padding_zero && data[i] == 0.0f;
  CHECK(padding_zero);
  CHECK(data[Vp * C] == a.values()[a.slot("wpe").offset]);  // wpe follows the padded wte
  // ln1w is stacked: layer 1's weight follows layer 0's.
  CHECK(data[Vp * C + 6 * C + C] == a.values()[a.slot("h.1.ln_1.weight").offset]);

  const ImportedModel m = import_llmc(file);
  check_same_config(m.config, c);
  ParamArena<float> b = gpt2_arena(c, 4);
  copy_into(b, m.tensors, file.string());
  CHECK(same_values(a, b));
}

TEST_CASE("gpt2_io: llm.c bf16 (version 5) files import") {
  TempDir dir("llmc_bf16");
  const GptConfig c = tiny();
  const ParamArena<float> a = gpt2_arena(c, 0, /*bf16_exact=*/true);
  export_llmc(dir.path / "f32.bin", c, a);
  // Rewrite as version 5: every float's top 16 bits (exact for these values).
  const std::vector<std::byte> f32 = read_file_bytes(dir.path / "f32.bin");
  std::string out(reinterpret_cast<const char*>(f32.data()), 1024);
  const std::int32_t version = 5;
  std::memcpy(out.data() + 4, &version, 4);
  for (std::size_t at = 1024; at < f32.size(); at += 4) {
    std::uint32_t u;
    std::memcpy(&u, f32.data() + at, 4);
    REQUIRE((u & 0xffff) == 0);
    const std::uint16_t h = std::uint16_t(u >> 16);
    out.append(reinterpret_cast<const char*>(&h), 2);
  }
  write_file_atomic(dir.path / "bf16.bin", out);
  const ImportedModel m = import_llmc(dir.path / "bf16.bin");
  ParamArena<float> b = gpt2_arena(c, 4);
  copy_into(b, m.tensors);
  CHECK(same_values(a, b));
}

TEST_CASE("gpt2_io: corrupt llm.c files throw bonsai::Error") {
  TempDir dir("llmc_corrupt");
  const GptConfig c = tiny();
  const ParamArena<float> a = gpt2_arena(c, 3);
  export_llmc(dir.path / "good.bin", c, a);
  const std::vector<std::byte> good = read_file_bytes(dir.path / "good.bin");
  const fs::path bad = dir.path / "bad.bin";
  auto write_bad = [&](const std::vector<std::byte>& b) {
    write_file_atomic(bad, std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  };
  // Truncations: every length through the header, then a sample.
  for (std::size_t len = 0; len < good.size(); len += len < 1100 ? 1 : 97) {
    CAPTURE(len);
    write_bad(std::vector<std::byte>(good.begin(), good.begin() + std::ptrdiff_t(len)));
    CHECK_THROWS_AS(import_llmc(bad), Error);
  }
  std::vector<std::byte> longer = good;
  longer.push_back(std::byte{0});
  write_bad(longer);
  CHECK(error_of([&] { import_llmc(bad); }).find("implies") != std::string::npos);
  // Every header field.
  auto with_field = [&](int i, std::int32_t v) {
    std::vector<std::byte> b = good;
    std::memcpy(b.data() + 4 * i, &v, 4);
    write_bad(b);
    return error_of([&] { import_llmc(bad); });
  };
  CHECK(with_field(0, 20240520).find("bad magic") != std::string::npos);
  CHECK(with_field(1, 1).find("version 1") != std::string::npos);
  CHECK(with_field(1, 4).find("version 4") != std::string::npos);
  for (int i = 2; i <= 7; ++i) {
    CAPTURE(i);
    CHECK(!with_field(i, 0).empty());
    CHECK(!with_field(i, -5).empty());
    CHECK(!with_field(i, 0x7fffffff).empty());
  }
  CHECK(with_field(7, 9).find("Vp=9") != std::string::npos);  // Vp < V
  CHECK(with_field(5, 3).find("NH=3") != std::string::npos);  // C % NH != 0
  CHECK(with_field(3, 11).empty());  // V <= Vp: a valid file of vocabulary 11
  CHECK(import_llmc(bad).config.vocab_size == 11);
  CHECK_THROWS_AS(import_llmc(dir.path / "missing.bin"), Error);
}

TEST_CASE("gpt2_io: only dense GPT-2 models export") {
  TempDir dir("gpt2_dense_only");
  GptConfig c = tiny();
  c.norm = NormKind::rmsnorm;
  const ParamArena<float> a = gpt2_arena(tiny(), 1);
  std::string msg = error_of([&] { export_llmc(dir.path / "x.bin", c, a); });
  CHECK(msg.find("only dense GPT-2 models") != std::string::npos);
  CHECK(msg.find("rmsnorm") != std::string::npos);
  msg = error_of([&] { export_hf(dir.path / "hf", c, a); });
  CHECK(msg.find("only dense GPT-2 models") != std::string::npos);
  c = tiny();
  c.n_kv_head = 1;
  CHECK_THROWS_AS(export_hf(dir.path / "hf", c, a), Error);
  c = tiny();
  c.moe_experts = 2;
  CHECK(error_of([&] { export_hf(dir.path / "hf", c, a); }).find("moe_experts=2") !=
        std::string::npos);
  // The arena must match the config exactly.
  GptConfig wider = tiny();
  wider.max_seq_len = 7;
  msg = error_of([&] { export_hf(dir.path / "hf", wider, a); });
  CHECK(msg.find("'wpe' has shape (6, 8) but the config implies (7, 8)") != std::string::npos);
  // llm.c fixes the FFN width at 4C.
  GptConfig narrow = tiny();
  narrow.ffn_dim = 16;
  const ParamArena<float> an = gpt2_arena(narrow, 1);
  CHECK(error_of([&] { export_llmc(dir.path / "x.bin", narrow, an); }).find("FFN width") !=
        std::string::npos);
  CHECK(!fs::exists(dir.path / "x.bin"));
}

// ---- Hugging Face ------------------------------------------------------------------------------

TEST_CASE("gpt2_io: HF export transposes Conv1D matrices and imports back bit-exactly") {
  TempDir dir("hf_roundtrip");
  const GptConfig c = tiny();
  const ParamArena<float> a = gpt2_arena(c, 5);
  fs::create_directories(dir.path / "tok");
  write_file_atomic(dir.path / "tok" / "encoder.json", "{\"!\": 0}");
  write_file_atomic(dir.path / "tok" / "vocab.bpe", "#version: 0.2\nĠ t\n");
  const fs::path out = dir.path / "hf";
  export_hf(out, c, a, dir.path / "tok");
  CHECK(text_of(out / "vocab.json") == "{\"!\": 0}");
  CHECK(text_of(out / "merges.txt") == "#version: 0.2\nĠ t\n");
  check_same_config(gpt_config_from_json(read_json_file(out / "config.json")), c);

  const SafetensorsFile st = SafetensorsFile::open(out / "model.safetensors");
  CHECK(st.metadata().at("format") == "pt");
  CHECK(st.find("lm_head.weight") == nullptr);
  CHECK(st.tensors().size() == 4 + 12 * 2);
  for (const SafeTensor& t : st.tensors()) {
    CHECK(t.name.starts_with("transformer."));
    CHECK(t.dtype == Dtype::f32);
  }
  // c_attn.weight is (C, 3C) = qkv.weight (3C, C) transposed.
  const SafeTensor& c_attn = st.tensor("transformer.h.0.attn.c_attn.weight");
  CHECK(c_attn.shape == std::vector<index_t>{8, 24});
  const std::vector<float> hf = st.read_as<float>(c_attn.name);
  const float* qkv = a.values() + a.slot("h.0.attn.qkv.weight").offset;
  bool transposed = true;
  for (index_t i = 0; i < 8; ++i)
    for (index_t j = 0; j < 24; ++j) transposed = transposed && hf[std::size_t(i * 24 + j)] == qkv[j * 8 + i];
  CHECK(transposed);
  CHECK(hf[1] == qkv[8]);  // element (0, 1) of c_attn is element (1, 0) of qkv
  CHECK(st.tensor("transformer.h.1.mlp.c_fc.weight").shape == std::vector<index_t>{8, 32});
  CHECK(st.tensor("transformer.h.1.mlp.c_proj.weight").shape == std::vector<index_t>{32, 8});
  CHECK(st.tensor("transformer.h.1.mlp.c_fc.bias").shape == std::vector<index_t>{32});

  for (const fs::path& p : {out, out / "model.safetensors"}) {
    const ImportedModel m = import_hf(p);
    check_same_config(m.config, c);
    ParamArena<float> b = gpt2_arena(c, 6);
    copy_into(b, m.tensors);
    CHECK(same_values(a, b));
  }
}

TEST_CASE("gpt2_io: HF import takes hub names, mask buffers, lm_head, F16/BF16 and no config.json") {
  TempDir dir("hf_hub");
  GptConfig c;  // C = 64 so that the head count can be inferred (head dimension 64)
  c.vocab_size = 5;
  c.max_seq_len = 4;
  c.n_layer = 1;
  c.d_model = 64;
  c.n_head = 1;
  const ParamArena<float> a = gpt2_arena(c, 0, /*bf16_exact=*/true);
  export_hf(dir.path / "ours", c, a);
  const SafetensorsFile ours = SafetensorsFile::open(dir.path / "ours" / "model.safetensors");

  // Rewrite as the hub stores GPT-2: no prefix, causal-mask buffers, the tied head, 16-bit floats.
  SafetensorsWriter w;
  std::vector<std::vector<float>> keep;
  for (const SafeTensor& t : ours.tensors()) {
    keep.push_back(ours.read_as<float>(t.name));
    const std::string name = t.name.substr(12);
    const Dtype d = name.find("c_fc") != std::string::npos ? Dtype::bf16
                    : name.starts_with("ln_f")            ? Dtype::f16
                                                          : Dtype::f32;
    w.add_converted<float>(name, d, t.shape, keep.back());
  }
  const std::vector<float> mask(16, 1.0f);
  w.add<float>("h.0.attn.bias", {1, 1, 4, 4}, mask);
  w.add<float>("h.0.attn.masked_bias", {}, std::span<const float>(mask.data(), 1));
  keep.push_back(ours.read_as<float>("transformer.wte.weight"));
  w.add<float>("lm_head.weight", {5, 64}, keep.back());
  fs::create_directories(dir.path / "hub");
  w.write(dir.path / "hub" / "model.safetensors");

  const ImportedModel m = import_hf(dir.path / "hub");  // no config.json: inferred
  check_same_config(m.config, [&] {
    GptConfig e = c;
    e.ffn_dim = 256;
    return e;
  }());
  ParamArena<float> b = gpt2_arena(c, 7);
  copy_into(b, m.tensors);
  CHECK(same_values(a, b));
}

TEST_CASE("gpt2_io: HF import is strict") {
  TempDir dir("hf_strict");
  const GptConfig c = tiny();
  const ParamArena<float> a = gpt2_arena(c, 5);
  export_hf(dir.path / "hf", c, a);
  const SafetensorsFile good = SafetensorsFile::open(dir.path / "hf" / "model.safetensors");
  std::vector<std::vector<float>> keep;
  // Rewrites the folder's model.safetensors with `edit` applied to each (name, shape).
  auto rewrite = [&](auto edit) {
    SafetensorsWriter w;
    keep.clear();
    keep.reserve(good.tensors().size() + 1);
    for (const SafeTensor& t : good.tensors()) {
      std::string name = t.name;
      std::vector<index_t> shape = t.shape;
      keep.push_back(good.read_as<float>(t.name));
      if (edit(name, shape, keep.back())) w.add<float>(name, shape, keep.back());
    }
    w.write(dir.path / "hf" / "model.safetensors");
    return error_of([&] { import_hf(dir.path / "hf"); });
  };
  std::string msg = rewrite([](std::string& n, auto&, auto&) { return n != "transformer.ln_f.bias"; });
  CHECK(msg.find("missing tensor 'ln_f.bias'") != std::string::npos);
  msg = rewrite([](std::string& n, auto&, auto&) {
    if (n == "transformer.ln_f.bias") n = "transformer.h.2.ln_1.weight";
    return true;
  });
  CHECK(msg.find("missing tensor 'ln_f.bias'") != std::string::npos);
  msg = rewrite([](std::string& n, auto&, auto&) {
    if (n == "transformer.h.1.ln_2.bias") n = "transformer.h.2.ln_2.bias";
    return true;
  });
  CHECK(!msg.empty());
  msg = rewrite([](std::string& n, std::vector<index_t>& s, auto&) {
    if (n == "transformer.h.0.attn.c_proj.weight") s = {4, 16};
    return true;
  });
  CHECK(msg.find("'transformer.h.0.attn.c_proj.weight' has shape (4, 16) but (8, 8) was expected") !=
        std::string::npos);
  msg = rewrite([](std::string& n, auto&, auto&) {
    if (n == "transformer.wpe.weight") n = "wpe.weight";
    return true;
  });
  CHECK(msg.empty());  // mixed prefixes are fine
  // ... but not the same tensor twice.
  {
    SafetensorsWriter w;
    keep.clear();
    keep.reserve(good.tensors().size());
    for (const SafeTensor& t : good.tensors()) {
      keep.push_back(good.read_as<float>(t.name));
      w.add<float>(t.name, t.shape, keep.back());
    }
    w.add<float>("ln_f.bias", {8}, std::span<const float>(keep.back().data(), 8));
    w.write(dir.path / "hf" / "model.safetensors");
    CHECK(error_of([&] { import_hf(dir.path / "hf"); }).find("both with and without") != std::string::npos);
  }
  // Extra tensors are reported.
  msg = rewrite([&](std::string&, auto&, auto&) { return true; });
  CHECK(msg.empty());
  {
    SafetensorsWriter w;
    keep.clear();
    keep.reserve(good.tensors().size());
    for (const SafeTensor& t : good.tensors()) {
      keep.push_back(good.read_as<float>(t.name));
      w.add<float>(t.name, t.shape, keep.back());
    }
    w.add<float>("transformer.h.0.mlp.extra", {8}, std::span<const float>(keep.back().data(), 8));
    w.write(dir.path / "hf" / "model.safetensors");
    CHECK(error_of([&] { import_hf(dir.path / "hf"); }).find("unexpected tensor 'transformer.h.0.mlp.extra'") !=
          std::string::npos);
  }
  CHECK_THROWS_AS(import_hf(dir.path / "nowhere"), Error);
}
