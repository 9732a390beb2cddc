// prepare_data — turns UTF-8 text into llm.c token shards for training: tokenizes with the byte
// or GPT-2 tokenizer, starts every document with the end-of-text token, splits off a
// validation set, and writes <out>/train_000000.bin, <out>/val_000000.bin, ...
//
//   prepare_data data/brown/brown.txt --tokenizer data/gpt2 --documents blank-line -o data/brown/gpt2
//
// Documents: with --documents file (the default) each input file is one document; with
// --documents blank-line, blank lines separate documents (data/brown/brown.txt has one Brown
// corpus file per document). Validation: round(val_fraction * documents) documents, evenly
// spaced through the input (the last one included), so that both splits sample every part of
// it; with a single document, the last val_fraction of its tokens instead. Inputs and tokens
// are held in memory.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <bonsai/train/load_tokenizer.hpp>
#include <bonsai/train/token_shard.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fs = std::filesystem;
using namespace bonsai;

namespace {

// The files named on the command line, with each directory replaced by its *.txt files.
std::vector<fs::path> input_files(const std::vector<std::string>& inputs) {
  std::vector<fs::path> files;
  for (const std::string& input : inputs) {
    if (fs::is_directory(input)) {
      std::vector<fs::path> txt;
      for (const auto& entry : fs::directory_iterator(input))
        if (entry.is_regular_file() && entry.path().extension() == ".txt") txt.push_back(entry.path());
      BONSAI_CHECK(!txt.empty(), "no .txt files in directory ", input);
      std::sort(txt.begin(), txt.end());
      files.insert(files.end(), txt.begin(), txt.end());
    } else {
      BONSAI_CHECK(fs::is_regular_file(input), "no such file: ", input);
      files.emplace_back(input);
    }
  }
  return files;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  BONSAI_CHECK(in, "cannot open ", path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Splits text into documents at blank lines (lines of only spaces, tabs or '\r'). Each document
// runs from the start of its first line to the end of its last, without the final newline.
void split_at_blank_lines(std::string_view text, std::vector<std::string_view>& docs) {
  std::size_t begin = std::string_view::npos, end = 0;  // the current document
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t eol = std::min(text.find('\n', at), text.size());
    const std::string_view line = text.substr(at, eol - at);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
      if (begin != std::string_view::npos) docs.push_back(text.substr(begin, end - begin));
      begin = std::string_view::npos;
    } else {
      if (begin == std::string_view::npos) begin = at;
      end = eol;
    }
    at = eol + 1;
  }
  if (begin != std::string_view::npos) docs.push_back(text.substr(begin, end - begin));
}

// Writes tokens as <out>/<split>_000000.bin, _000001.bin, ... of at most shard_tokens each.
int write_shards(const fs::path& out, const std::string& split, std::span<const std::int32_t> tokens,
                 std::int64_t shard_tokens) {
  int shards = 0;
  for (std::size_t at = 0; at < tokens.size(); at += static_cast<std::size_t>(shard_tokens)) {
    const std::size_t n = std::min(tokens.size() - at, static_cast<std::size_t>(shard_tokens));
    const fs::path path = out / fmt::format("{}_{:06d}.bin", split, shards++);
    write_token_shard(path, tokens.subspan(at, n));
    fmt::print("  wrote {} ({} tokens)\n", path.string(), n);
  }
  return shards;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> inputs;
  std::string out, tokenizer_spec = "byte", documents = "file";
  double val_fraction = 0.1;
  std::int64_t shard_tokens = 100'000'000;

  CLI::App app{"prepare_data: UTF-8 text files -> llm.c token shards (train_*.bin, val_*.bin)"};
  app.add_option("inputs", inputs, "text files, or directories whose *.txt files are read")->required();
  app.add_option("-o,--out", out, "output directory for the shards")->required();
  app.add_option("-t,--tokenizer", tokenizer_spec,
                 "\"byte\", or a directory with GPT-2's encoder.json and vocab.bpe")
      ->capture_default_str();
  app.add_option("--documents", documents, "what one document is: a whole file, or text between blank lines")
      ->check(CLI::IsMember({"file", "blank-line"}))
      ->capture_default_str();
  app.add_option("--val-fraction", val_fraction, "fraction of the documents held out for validation")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  app.add_option("--shard-tokens", shard_tokens, "maximum tokens per shard")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.failure_message(CLI::FailureMessage::help);
  CLI11_PARSE(app, argc, argv);

  try {
    const auto start = std::chrono::steady_clock::now();
    const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(tokenizer_spec);
    BONSAI_CHECK(tokenizer->vocab_size() <= 65536, "the tokenizer's ", tokenizer->vocab_size(),
                 " tokens do not fit llm.c's uint16 shards");
    const std::int32_t eot = tokenizer->eot_token();

    // 1. Read the inputs and cut them into documents.
    const std::vector<fs::path> files = input_files(inputs);
    std::vector<std::string> texts;
    std::vector<std::string_view> docs;
    std::size_t bytes = 0;
    for (const fs::path& file : files) texts.push_back(read_file(file));
    for (const std::string& text : texts) {
      bytes += text.size();
      if (documents == "file") {
        if (!text.empty()) docs.push_back(text);
      } else {
        split_at_blank_lines(text, docs);
      }
    }
    BONSAI_CHECK(!docs.empty(), "the inputs hold no text");
    fmt::print("prepare_data: {} file(s), {} bytes, {} document(s), tokenizer {} (vocab {})\n",
               files.size(), bytes, docs.size(), tokenizer->name(), tokenizer->vocab_size());

    // 2. Tokenize, each document starting with end-of-text, into the train or val stream.
    const auto n = static_cast<std::int64_t>(docs.size());
    std::int64_t n_val = 0;
    if (n >= 2 && val_fraction > 0)
      n_val = std::clamp<std::int64_t>(std::llround(val_fraction * static_cast<double>(n)), 1, n - 1);
    std::vector<std::int32_t> train, val;
    std::int64_t val_docs = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      // Document i is held out when [i, i + 1) crosses a multiple of n / n_val.
      const bool held_out = (i + 1) * n_val / n > i * n_val / n;
      std::vector<std::int32_t>& stream = held_out ? val : train;
      val_docs += held_out;
      stream.push_back(eot);
      tokenizer->encode(docs[static_cast<std::size_t>(i)], stream);
    }
    if (n == 1 && val_fraction > 0) {  // one document: its tail is the validation set
      const auto cut = train.size() - static_cast<std::size_t>(
                                          std::llround(val_fraction * static_cast<double>(train.size())));
      val.assign(train.begin() + static_cast<std::ptrdiff_t>(cut), train.end());
      train.resize(cut);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("tokenized in {:.2f} s ({:.1f} MB/s)\n", seconds, static_cast<double>(bytes) / 1e6 / seconds);

    // 3. Write the shards, after removing those of an earlier run into the same directory.
    fs::create_directories(out);
    const std::regex ours(R"((train|val)_\d{6}\.bin)");
    for (const auto& entry : fs::directory_iterator(out))
      if (entry.is_regular_file() && std::regex_match(entry.path().filename().string(), ours))
        fs::remove(entry.path());
    fmt::print("train: {} document(s), {} tokens\n", n - val_docs, train.size());
    const int train_shards = write_shards(out, "train", train, shard_tokens);
    if (n == 1)
      fmt::print("val:   the last {} of the document's tokens\n", val.size());
    else
      fmt::print("val:   {} document(s), {} tokens\n", val_docs, val.size());
    const int val_shards = write_shards(out, "val", val, shard_tokens);
    fmt::print("done: {} train and {} val shard(s) in {}\n", train_shards, val_shards, out);
  } catch (const Error& e) {
    fmt::print(stderr, "prepare_data: error: {}\n", e.what());
    return 1;
  } catch (const fs::filesystem_error& e) {
    fmt::print(stderr, "prepare_data: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
