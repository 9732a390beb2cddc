// GPT-2 interchange through the model: a tiny dense Gpt exported to llm.c's .bin and to a
// Hugging Face folder, imported into a fresh model, gives the same logits.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/train/gpt2_io.hpp>
#include <filesystem>

using namespace bonsai;
namespace fs = std::filesystem;

namespace {

GptConfig tiny_gpt2() {
  GptConfig c;
  c.vocab_size = 37;  // not a multiple of 128: llm.c pads the table
  c.max_seq_len = 12;
  c.n_layer = 2;
  c.d_model = 16;
  c.n_head = 4;
  return c;
}

using DenseGpt = Gpt<Dense<float>, Dense<float>>;

Matrix<float> logits_of(DenseGpt& model, const std::vector<std::int32_t>& tokens) {
  DenseGpt::Context ctx;
  model.forward(ctx, TokenBatch{tokens.data(), nullptr, 1, index_t(tokens.size())});
  const auto l = model.logits(ctx);
  Matrix<float> out(l.rows(), l.cols());
  as_eigen(out) = as_eigen(l);
  return out;
}

void check_same_logits(DenseGpt& a, DenseGpt& b) {
  const std::vector<std::int32_t> tokens{3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
  const auto la = logits_of(a, tokens), lb = logits_of(b, tokens);
  CHECK((as_eigen(la) - as_eigen(lb)).cwiseAbs().maxCoeff() == 0.0f);
}

fs::path scratch(const char* name) {
  const fs::path p = fs::temp_directory_path() / (std::string("bonsai_gpt_io_") + name);
  fs::remove_all(p);
  return p;
}

}  // namespace

TEST_CASE("gpt io: llm.c export and import keep the logits") {
  const GptConfig c = tiny_gpt2();
  DenseGpt model(c);
  Rng rng(5);
  model.init(rng);
  const fs::path file = scratch("llmc.bin");
  export_llmc(file, c, model.arena());
  const ImportedModel imported = import_llmc(file);
  CHECK(imported.config.vocab_size == c.vocab_size);
  DenseGpt copy(imported.config);
  copy_into(copy.arena(), imported.tensors, file.string());
  check_same_logits(model, copy);
  fs::remove(file);
}

TEST_CASE("gpt io: Hugging Face export and import keep the logits") {
  const GptConfig c = tiny_gpt2();
  DenseGpt model(c);
  Rng rng(6);
  model.init(rng);
  const fs::path dir = scratch("hf");
  export_hf(dir, c, model.arena());
  const ImportedModel imported = import_hf(dir);
  DenseGpt copy(imported.config);
  copy_into(copy.arena(), imported.tensors, dir.string());
  check_same_logits(model, copy);
  fs::remove_all(dir);
}

TEST_CASE("gpt io: a model of another shape is refused with the tensor named") {
  const GptConfig c = tiny_gpt2();
  DenseGpt model(c);
  Rng rng(7);
  model.init(rng);
  const fs::path file = scratch("llmc_other.bin");
  export_llmc(file, c, model.arena());
  GptConfig wider = c;
  wider.d_model = 32;
  DenseGpt other(wider);
  CHECK_THROWS_AS(copy_into(other.arena(), import_llmc(file).tensors, file.string()), Error);
  fs::remove(file);
}

TEST_CASE("gpt io: a checkpoint shortened to a context of T tokens has the loss of its first T positions") {
  GptConfig c = tiny_gpt2();
  c.max_seq_len = 64;  // the file's positions
  DenseGpt model(c);
  Rng rng(8);
  model.init(rng);
  for (const bool llmc : {true, false}) {
    CAPTURE(llmc);
    const fs::path path = scratch(llmc ? "long.bin" : "long_hf");
    if (llmc) export_llmc(path, c, model.arena());
    else export_hf(path, c, model.arena());
    ImportedModel imported = llmc ? import_llmc(path) : import_hf(path);
    shorten_context(imported, 16, path.string());
    CHECK(imported.config.max_seq_len == 16);
    DenseGpt shorter(imported.config);
    copy_into(shorter.arena(), imported.tensors, path.string());
    std::vector<std::int32_t> in(2 * 16), tgt(2 * 16);  // (B, T) = (2, 16)
    for (std::size_t i = 0; i < in.size(); ++i) {
      in[i] = std::int32_t(rng.uniform() * double(c.vocab_size));
      tgt[i] = std::int32_t(rng.uniform() * double(c.vocab_size));
    }
    DenseGpt::Context a, b;
    const double full = model.forward(a, TokenBatch{in.data(), tgt.data(), 2, 16});
    const double cut = shorter.forward(b, TokenBatch{in.data(), tgt.data(), 2, 16});
    CHECK(cut == full);
    // A longer context than the file learned is refused with both numbers.
    ImportedModel again = llmc ? import_llmc(path) : import_hf(path);
    CHECK_THROWS_WITH(shorten_context(again, 65, path.string()),
                      doctest::Contains("a context of 65 tokens is not within the 1 to 64 positions"));
    fs::remove_all(path);
  }
}
