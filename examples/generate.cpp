// generate — sample text from a train_gpt checkpoint with a KV cache.
//
//   build/cpu-release/examples/generate --ckpt runs/gpt --tokenizer data/gpt2 \
//       --prompt "The jury said" --tokens 100 --temperature 0.8 --top-k 40
//
// --ckpt is a checkpoint folder (ckpt_XXXXXXXX) or a run folder (its newest checkpoint). The
// model's configuration, FFN structure included, is read from the checkpoint's config.json.
// Structured FFNs are pre-merged for decoding: each keeps W_merged = S.to_dense() beside its
// factors and takes whichever path a micro-benchmark at load found faster for the call's token
// count (--premerge auto), or the merged one up to N tokens (--premerge N), or never (off).
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/nn/premerge.hpp>
#include <bonsai/nn/sampling.hpp>
#include <bonsai/train/checkpoint.hpp>
#include <bonsai/train/gpt_config_json.hpp>
#include <bonsai/train/load_tokenizer.hpp>
#include <charconv>
#include <cstdio>

using namespace bonsai;

int main(int argc, char** argv) {
  CLI::App app{"generate: sample text from a bonsai GPT checkpoint"};
  std::string ckpt, tokenizer_spec = "data/gpt2", prompt = "The";
  SamplingOptions opts;
  std::uint64_t seed = 1005;
  index_t samples = 1;
  std::string premerge_mode = "auto";
  app.add_option("--ckpt", ckpt, "checkpoint folder, or a run folder (newest checkpoint)")->required();
  app.add_option("--tokenizer", tokenizer_spec, "byte, or a folder with encoder.json and vocab.bpe")
      ->capture_default_str();
  app.add_option("--prompt", prompt, "text to continue")->capture_default_str();
  app.add_option("--tokens", opts.max_new_tokens, "new tokens per sample")->capture_default_str();
  app.add_option("--temperature", opts.temperature, "softmax temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-k", opts.top_k, "sample among the k most likely tokens (0: all)")->capture_default_str();
  app.add_option("--samples", samples, "number of samples")->capture_default_str();
  app.add_option("--seed", seed, "sampling seed")->capture_default_str();
  app.add_option("--premerge", premerge_mode,
                 "structured FFNs: auto (calibrate), off, or N (merged GEMM up to N tokens)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    std::filesystem::path dir(ckpt);
    if (!std::filesystem::exists(dir / "DONE")) {
      const auto latest = latest_checkpoint(dir);
      BONSAI_CHECK(latest.has_value(), "--ckpt ", ckpt, " holds no complete checkpoint");
      dir = *latest;
    }
    const GptConfig config = gpt_config_from_json(read_json_file(dir / "config.json"));
    const auto tokenizer = load_tokenizer(tokenizer_spec);
    BONSAI_CHECK(tokenizer->vocab_size() == config.vocab_size, "--tokenizer: it has ",
                 tokenizer->vocab_size(), " tokens but the model was trained with ",
                 config.vocab_size);
    BONSAI_CHECK(!tokenizer->encode(prompt).empty(), "--prompt \"", prompt,
                 "\" holds no token; sampling continues a prompt of at least one");
    opts.stop_token = tokenizer->eot_token();
    return with_ffn_structure<float>(config, [&](auto map) {
      using Map = typename decltype(map)::type;
      Gpt<Map, Map> model(config);
      load_checkpoint<float>(dir, model.arena());
      const auto ids = tokenizer->encode(prompt);
      const auto sample = [&](auto& decoder) {
        Rng rng(seed);
        for (index_t s = 0; s < samples; ++s) {
          fmt::print("{}{}", s ? "\n---\n" : "", prompt);
          generate(decoder, ids, opts, rng, [&](std::int32_t id) {
            fmt::print("{}", tokenizer->decode_token(id));
            std::fflush(stdout);
          });
        }
        fmt::print("\n");
        return 0;
      };
      if constexpr (!std::is_same_v<Map, Dense<float>>) {
        if (premerge_mode != "off") {
          std::optional<PremergeThresholds> given;
          if (premerge_mode != "auto") {
            long long n = -1;
            const char* end = premerge_mode.data() + premerge_mode.size();
            const auto [ptr, ec] = std::from_chars(premerge_mode.data(), end, n);
            BONSAI_CHECK(ec == std::errc() && ptr == end && n >= 0, "--premerge: expected auto, "
                         "off or a token count, got '", premerge_mode, "'");
            given = PremergeThresholds{index_t(n), index_t(n)};
          }
          auto merged = premerge(model, given);
          const PremergeThresholds t = premerge_thresholds(merged);
          fmt::print(stderr, "pre-merged FFNs: merged GEMM up to {} (up) / {} (down) tokens, "
                     "structured above\n", t.up, t.down);
          return sample(merged);
        }
      }
      return sample(model);
    });
  } catch (const std::exception& e) {
    fmt::print(stderr, "generate: {}\n", e.what());
    return 1;
  }
}
