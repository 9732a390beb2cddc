// Fuzzes what the trainer parses from its command line and its run folder: the --grow schedule
// (and the growth plans made from it), the --sat-ladder, the enumerated flags, and config.json /
// the data loader's state as a checkpoint stores them. The first byte picks the parser.
#include "fuzz.hpp"

#include <bonsai/nn/config.hpp>
#include <bonsai/sparse/importance.hpp>
#include <bonsai/sparse/selection.hpp>
#include <bonsai/train/data_loader.hpp>
#include <bonsai/train/gpt_config_json.hpp>
#include <bonsai/train/growth.hpp>
#include <bonsai/train/lors.hpp>
#include <bonsai/train/self_guided.hpp>

#include <nlohmann/json.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace bonsai;
  if (size == 0) return 0;
  const std::string_view text = fuzz::as_text(data + 1, size - 1);
  return fuzz::errors_only([&] {
    switch (data[0] % 4) {
      case 0: {  // --grow, planned from a small GPT as train_gpt does
        const std::vector<GrowthStage> stages = parse_growth_schedule(text);
        GptConfig start;
        start.vocab_size = 64, start.max_seq_len = 16, start.n_layer = 2, start.d_model = 32;
        start.n_head = 2;
        start.validate();
        (void)plan_growth(start, stages, 1000, {.seed = 1});
        break;
      }
      case 1: {  // --sat-ladder with a rate from the input's length
        const Lors l = Lors::parse(double(size % 10) / 10.0, text);
        for (index_t step = 0; step <= l.t2 + 1 && step < 4096; ++step) {
          const double r = l.rate(step);
          fuzz::require(r >= 0 && r <= l.rho0, "the ladder's rate lies in [0, rho0]");
        }
        break;
      }
      case 2: {  // the enumerated flags
        const auto each = [&](auto parse) { fuzz::errors_only([&] { (void)parse(text); }); };
        each(parse_norm), each(parse_pos), each(parse_act), each(parse_gating), each(parse_ffn);
        each(parse_selection), each(parse_score_kind), each(parse_state_growth);
        each(parse_new_layers), each(parse_guide_decay), each(GrowthLr::parse);
        break;
      }
      default: {  // config.json and a checkpoint's loader state
        const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) return;  // read_json_file reports syntax errors itself
        fuzz::errors_only([&] { (void)gpt_config_from_json(j); });
        DataLoaderState s;
        from_json(j, s);
      }
    }
  });
}
