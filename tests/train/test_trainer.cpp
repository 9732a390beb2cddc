// train/trainer.hpp: the events of the training loop without a program. A run stopped at any
// step and resumed writes the same checkpoint as a straight run, inside and across every
// phase (SGT and its release, growth stages, MSG's ramp, SAT's ladder); a divergence rolls back
// to the last checkpoint; a loss spike is refused without its update; bad options are refused
// with a sentence.
#include <doctest/doctest.h>

#include <bonsai/bonsai.hpp>
#include <bonsai/train/token_shard.hpp>
#include <bonsai/train/trainer.hpp>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/temp_dir.hpp"

using namespace bonsai;
namespace fs = std::filesystem;

namespace {

using Map = LowRank<float>;

/// The bytes of docs/growth.md as tokens.
std::vector<std::int32_t> text_tokens() {
  std::ifstream in(fs::path(BONSAI_SOURCE_DIR) / "docs" / "growth.md", std::ios::binary);
  REQUIRE(in.good());
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  std::vector<std::int32_t> tokens;
  for (const char c : text) tokens.push_back(static_cast<unsigned char>(c));
  return tokens;
}

/// Shards of byte tokens in `dir`: train_000000.bin holds `train`, val_000000.bin the text's end.
void write_shards(const fs::path& dir, const std::vector<std::int32_t>& train) {
  const std::vector<std::int32_t> text = text_tokens();
  write_token_shard(dir / "train_000000.bin", train);
  write_token_shard(dir / "val_000000.bin",
                    std::span<const std::int32_t>(text).last(std::min<std::size_t>(text.size(), 4096)));
}

GptConfig tiny_model() {
  GptConfig c;
  c.n_layer = 2;
  c.d_model = 32;
  c.n_head = 2;
  c.max_seq_len = 32;
  c.vocab_size = 256;
  c.ffn = FfnKind::lowrank;
  c.rank = 8;
  c.validate();
  return c;
}

TrainerOptions tiny_run(const fs::path& data, const fs::path& out) {
  TrainerOptions o;
  o.train = (data / "train_*.bin").string();
  o.val = (data / "val_*.bin").string();
  o.batch = 2;
  o.grad_accum = 2;
  o.steps = 8;
  o.warmup = 2;
  o.eval_every = 4;
  o.eval_batches = 2;
  o.ckpt_every = 1;
  o.keep_ckpts = 100;
  o.shuffle = true;
  o.out = out.string();
  return o;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << p.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Whether checkpoint `step` of run folders a and b holds the same model, moments and trainer
/// state, byte for byte.
void check_same_checkpoint(const fs::path& a, const fs::path& b, index_t step) {
  const fs::path ca = checkpoint_path(a, step), cb = checkpoint_path(b, step);
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    CHECK_MESSAGE(file_bytes(ca / f) == file_bytes(cb / f), f << " of step " << step << " differs");
}

struct Phase {
  const char* name;
  void (*set)(TrainerOptions&, GptConfig&);
};

}  // namespace

TEST_CASE("trainer: a run stopped at any step resumes into the same checkpoints, in every phase") {
  test::TempDir dir("trainer_resume");
  write_shards(dir.path, text_tokens());
  const Phase phases[] = {
      {"plain", [](TrainerOptions&, GptConfig&) {}},
      {"SGT, released at step 5", [](TrainerOptions& o, GptConfig&) {
         o.sgt = "cosine", o.sgt_ratio = 0.625, o.sgt_reduce_flop = true;
       }},
      {"LEMON at step 3, MSLT at 5", [](TrainerOptions& o, GptConfig& c) {
         c.dense_first_ffn = false;
         o.grow = {"3:lemon:d=48,heads=3,layers=3,rank=12", "5:mslt:layers=6"};
         o.grow_state = "carry", o.grow_lr = "rewind";
       }},
      {"MSG at step 2, ramped over 3", [](TrainerOptions& o, GptConfig&) {
         o.grow = {"2:msg:d=48,heads=3,ffn=160,layers=3"};
         o.msg_steps = 3, o.grow_state = "carry";
       }},
      {"WSD, decaying from step 6", [](TrainerOptions& o, GptConfig&) {
         o.lr_schedule = "wsd", o.wsd_decay_fraction = 0.25;
       }},
      {"SAT down the ladder", [](TrainerOptions& o, GptConfig&) {
         o.sat_rate = 0.5, o.sat_ladder = "2,6,3";
       }},
      {"one life: SGT released at 2, grown by LEMON at 3, SAT from 4", [](TrainerOptions& o, GptConfig& c) {
         c.dense_first_ffn = false;
         o.sgt = "linear", o.sgt_ratio = 0.25;
         o.grow = {"3:lemon:d=48,heads=3,layers=3,rank=12"};
         o.grow_state = "carry";
         o.sat_rate = 0.5, o.sat_start = 4, o.sat_ladder = "5,7,2";
       }},
  };
  for (const Phase& phase : phases) {
    CAPTURE(phase.name);
    GptConfig config = tiny_model();
    TrainerOptions o = tiny_run(dir.path, dir.path / "straight");
    phase.set(o, config);
    fs::remove_all(o.out);
    SingleProcess one;
    {
      Trainer<Map> straight(o, config, one);
      CHECK(straight.run().finished());
    }
    for (index_t stop = 1; stop < o.steps; ++stop) {
      CAPTURE(stop);
      TrainerOptions first = o;
      first.out = (dir.path / "split").string();
      fs::remove_all(first.out);
      first.stop_after = stop;
      {
        Trainer<Map> t(first, config, one);
        const RunSummary r = t.run();
        CHECK(r.end == stop);
        CHECK_FALSE(r.finished());
      }
      TrainerOptions rest = first;
      rest.stop_after = 0;
      rest.resume = true;
      Trainer<Map> t(rest, config, one);
      const RunSummary r = t.run();
      CHECK(r.start == stop);
      CHECK(r.finished());
      for (index_t step = stop + 1; step <= o.steps; ++step) check_same_checkpoint(o.out, first.out, step);
      CHECK(file_bytes(fs::path(o.out) / "main.log") == file_bytes(fs::path(first.out) / "main.log"));
    }
  }
}

TEST_CASE("trainer: a divergence rolls back to the last checkpoint with a lower learning rate") {
  test::TempDir dir("trainer_rollback");
  write_shards(dir.path, text_tokens());
  const GptConfig config = tiny_model();
  SingleProcess one;
  TrainerOptions o = tiny_run(dir.path, dir.path / "run");
  o.stop_after = 4;
  Trainer<Map>(o, config, one).run();

  // From step 4 on, a learning rate of 1e39 overflows the parameters at once.
  o.stop_after = 0;
  o.resume = true;
  o.lr = 1e39;
  SUBCASE("stop: the report names the step and the checkpoint, which stays the last one") {
    const std::string e = test::error_of([&] { Trainer<Map>(o, config, one).run(); });
    CHECK(e.find("step 4: the loss is") == 0);
    CHECK(e.find("training diverged. The last good checkpoint is " + checkpoint_path(o.out, 4).string()) !=
          std::string::npos);
    CHECK(latest_checkpoint(o.out) == checkpoint_path(o.out, 4));
  }
  SUBCASE("rollback: the rate times 1e-42 trains on to the end") {
    o.on_divergence = "rollback";
    o.rollback_lr_factor = 1e-42;
    const RunSummary r = Trainer<Map>(o, config, one).run();
    CHECK(r.finished());
    const nlohmann::json ts = read_json_file(checkpoint_path(o.out, 8) / "trainer_state.json");
    CHECK(ts.at("rollbacks") == 1);
    CHECK(ts.at("lr_scale").get<double>() == doctest::Approx(1e-42));
  }
  SUBCASE("rollback: rollbacks that do not help stop the run") {
    o.on_divergence = "rollback";
    o.max_rollbacks = 2;
    const std::string e = test::error_of([&] { Trainer<Map>(o, config, one).run(); });
    CHECK(e.find("; 2 rollbacks did not help") != std::string::npos);
  }
}

TEST_CASE("trainer: a loss spike is refused without its update") {
  // A passage the model learns by heart, then a byte it never saw: the first batch of those is
  // a spike.
  test::TempDir dir("trainer_spike");
  const std::vector<std::int32_t> text = text_tokens();
  std::vector<std::int32_t> tokens;
  while (tokens.size() < 2 * 2 * 32 * 40)  // 40 steps of 2 micro-batches of 2 x 32 tokens
    tokens.insert(tokens.end(), text.begin(), text.begin() + 64);
  tokens.resize(2 * 2 * 32 * 40);
  tokens.insert(tokens.end(), 4096, 255);
  write_shards(dir.path, tokens);
  const GptConfig config = tiny_model();
  SingleProcess one;
  TrainerOptions o = tiny_run(dir.path, dir.path / "run");
  o.shuffle = false;
  o.steps = 50;
  o.lr = 1e-2;
  o.eval_every = 0;
  o.spike_window = 8;

  Trainer<Map> spiked(o, config, one);
  const std::string e = test::error_of([&] { spiked.run(); });
  CHECK(e.find("step 40: the loss ") == 0);
  CHECK(e.find("above the spike factor 3; the update was not taken. The last good checkpoint is " +
               checkpoint_path(o.out, 40).string()) != std::string::npos);
  // The parameters are those of the checkpoint before the spike: no update was taken.
  Gpt<Map, Map> before(config);
  load_checkpoint<float>(checkpoint_path(o.out, 40), before.arena());
  const ParamArena<float>& now = spiked.arena();
  REQUIRE(now.size() == before.arena().size());
  CHECK(std::equal(now.values(), now.values() + now.size(), before.arena().values()));

  // With the guard off the same run trains through the new bytes.
  o.spike_factor = 0;
  o.out = (dir.path / "off").string();
  CHECK(Trainer<Map>(o, config, one).run().finished());
}

TEST_CASE("trainer: options it cannot run are refused with a sentence before any step") {
  test::TempDir dir("trainer_refusals");
  write_shards(dir.path, text_tokens());
  SingleProcess one;
  const auto refusal = [&](auto&& change) {
    GptConfig config = tiny_model();
    TrainerOptions o = tiny_run(dir.path, dir.path / "run");
    change(o, config);
    return test::error_of([&] { Trainer<Map>(o, config, one); });
  };
  CHECK(refusal([](TrainerOptions& o, GptConfig& c) { o.sgt = "cosine", c.ffn = FfnKind::dense; })
            .find("--ffn dense has nothing to guide") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.on_divergence = "retry"; })
            .find("--on-divergence: expected stop or rollback, got 'retry'") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.on_divergence = "rollback", o.ckpt_every = 0; })
            .find("it needs --ckpt-every N") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.sgt_budget = "tokens", o.sgt = "linear"; })
            .find("--sgt-budget: expected steps or flops, got 'tokens'") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.sat_rate = 0.5, o.sat_optimizer = "adam"; })
            .find("--sat-optimizer: expected skip or step, got 'adam'") != std::string::npos);
  // Phases that cannot overlap, each with its reason.
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.sgt = "cosine", o.grow = {"2:lemon:d=48,heads=3,layers=3,rank=12"}; })
            .find("lies within SGT's guided steps [0, 4): a model is grown once its guides are released") !=
        std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.sgt = "cosine", o.sat_rate = 0.5; })
            .find("--sat-start 0 lies within SGT's guided steps [0, 4)") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) {
          o.grow = {"2:msg:d=48,heads=3,ffn=160,layers=3"}, o.msg_steps = 3, o.sat_rate = 0.5, o.sat_start = 3;
        }).find("MSG's masks ramp in growth stage 1's new units over steps [2, 5)") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) {
          o.grow = {"2:mslt:layers=4"}, o.sat_rate = 0.5, o.sat_start = 2;
        }).find("MSLT trains only growth stage 1's new layers over steps [2, 5)") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) {
          o.grow = {"2:upcycle:experts=4,top_k=2,every=1"}, o.sat_rate = 0.5;
        }).find("Mixture-of-Experts") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.sat_start = 3; })
            .find("--sat-ladder and --sat-start need --sat-rate") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.lr_schedule = "step"; })
            .find("--lr-schedule: expected cosine or wsd, got 'step'") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.spike_factor = 0.9; })
            .find("--spike-factor 0.9 must be 0 (off) or above 1") != std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.total_batch_tokens = 100; })
            .find("--total-batch-tokens 100 is not a multiple of ranks x --batch x --seq-len") !=
        std::string::npos);
  CHECK(refusal([](TrainerOptions& o, GptConfig&) { o.grow = {"3:lemon:d=16"}; })
            .find("growth never shrinks a model") != std::string::npos);
}

// The example of docs/training.md ("The trainer as a library"), as it stands there.
TEST_CASE("trainer: the library example of the docs trains, checkpoints and resumes") {
  test::TempDir dir("trainer_docs");
  write_shards(dir.path, text_tokens());
  const std::string data = dir.path.string(), out = (dir.path / "run").string();
  // --- docs/training.md ---
  GptConfig c;                       // the model: 2 x 32, LowRank FFNs of rank 8, byte tokens
  c.n_layer = 2, c.d_model = 32, c.n_head = 2, c.max_seq_len = 32, c.vocab_size = 256;
  c.ffn = FfnKind::lowrank, c.rank = 8, c.dense_first_ffn = false;
  TrainerOptions o;                  // the run: data, steps, run folder, and its phases
  o.train = data + "/train_*.bin", o.val = data + "/val_*.bin", o.out = out;
  o.batch = 4, o.steps = 40, o.warmup = 4, o.lr = 3e-3, o.eval_every = 10, o.ckpt_every = 10;
  o.sgt = "cosine", o.sgt_ratio = 0.25;                 // SGT: guides gone at step 10
  o.grow = {"15:lemon:d=48,heads=3,layers=3,rank=12"};  // LEMON into 3 x 48 at step 15
  o.sat_rate = 0.5, o.sat_start = 20;                   // SAT from step 20, dense again by 38
  SingleProcess one;                 // or MpiCommunicator under mpirun
  Trainer<LowRank<float>> trainer(o, c, one);
  const RunSummary r = trainer.run();  // resumes from `out` when o.resume is set
  Gpt<LowRank<float>, LowRank<float>>& grown = trainer.model();  // 3 x 48 after the run
  // --- end ---
  CHECK(r.finished());
  CHECK(r.val_loss < 4.0);  // below ln 256 = 5.55 and the unigram entropy of English bytes
  CHECK(grown.config().n_layer == 3);
  CHECK(grown.config().d_model == 48);
  CHECK(latest_checkpoint(out) == checkpoint_path(out, 40));
}
