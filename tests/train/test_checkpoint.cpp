// Checkpoints: save -> load is bit-exact, the directory is published atomically, the newest
// complete checkpoint is found, pruning keeps the newest, and loading is strict. Also AtomicFile.
#include <doctest/doctest.h>

#include "support/temp_dir.hpp"

#include <unistd.h>

#include <bonsai/core/rng.hpp>
#include <bonsai/train/checkpoint.hpp>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

using namespace bonsai;
namespace fs = std::filesystem;

namespace {

using test::TempDir;

using Slots = std::vector<std::pair<std::string, std::vector<index_t>>>;

const Slots small_model{{"wte", {10, 4}},
                        {"h.0.ln_1.weight", {4}},
                        {"h.0.mlp.up.V", {2, 4}},
                        {"h.0.mlp.up.U", {16, 2}},
                        {"ln_f.bias", {4}}};

template <class T>
ParamArena<T> make_arena(const Slots& slots, std::uint64_t seed) {
  ParamArena<T> a;
  for (const auto& [name, shape] : slots) a.add(name, shape);
  a.allocate();
  Rng rng(seed);
  for (index_t i = 0; i < a.size(); ++i) a.values()[i] = T(rng.normal());
  return a;
}

template <class T>
std::vector<T> random_vector(index_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<T> v(std::size_t(n), T(0));
  for (T& x : v) x = T(rng.normal());
  return v;
}

template <class T>
bool same_bits(const T* a, const T* b, index_t n) {
  return std::memcmp(a, b, sizeof(T) * std::size_t(n)) == 0;
}

std::string error_of(auto&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const nlohmann::json trainer_state = {
    {"step", 10}, {"tokens", 40960}, {"loader", {{"shard", 2}, {"sample", 17}}}, {"rng", {1, 2, 3, 4}}};
const nlohmann::json config = {{"model_type", "gpt2"}, {"n_embd", 4}, {"bonsai", {{"ffn", "lowrank"}}}};

}  // namespace

TEST_CASE_TEMPLATE("checkpoint: save then load is bit-exact", T, float, double) {
  TempDir run("ckpt_roundtrip");
  const ParamArena<T> arena = make_arena<T>(small_model, 1);
  const std::vector<T> m = random_vector<T>(arena.size(), 2), v = random_vector<T>(arena.size(), 3);
  const fs::path dir = save_checkpoint(run.path, 10, arena, m, v, trainer_state, config);
  CHECK(dir == run.path / "ckpt_00000010");
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer_state.json",
                        "config.json", "DONE"})
    CHECK(fs::is_regular_file(dir / f));
  CHECK(!fs::exists(run.path / "ckpt_00000010.tmp"));
  for (const auto& e : fs::directory_iterator(dir))  // no temporaries left inside
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);

  // The model file carries format=pt and the config; tensors are named by slot.
  const SafetensorsFile model = SafetensorsFile::open(dir / "model.safetensors");
  CHECK(model.metadata().at("format") == "pt");
  CHECK(nlohmann::json::parse(model.metadata().at("config")) == config);
  CHECK(model.tensor("h.0.mlp.up.U").shape == std::vector<index_t>{16, 2});
  CHECK(model.tensor("wte").dtype == dtype_of<T>);
  const SafetensorsFile opt = SafetensorsFile::open(dir / "optimizer.safetensors");
  CHECK(opt.tensors().size() == 2 * small_model.size());
  CHECK(opt.find("exp_avg.wte") != nullptr);
  CHECK(opt.find("exp_avg_sq.ln_f.bias") != nullptr);

  ParamArena<T> fresh = make_arena<T>(small_model, 99);
  std::vector<T> m2(m.size()), v2(v.size());
  const CheckpointState st = load_checkpoint(dir, fresh, m2, v2);
  CHECK(same_bits(fresh.values(), arena.values(), arena.size()));
  CHECK(same_bits(m2.data(), m.data(), arena.size()));
  CHECK(same_bits(v2.data(), v.data(), arena.size()));
  CHECK(st.step == 10);
  CHECK(st.trainer_state == trainer_state);
  CHECK(st.config == config);

  // Saving the same step again replaces the checkpoint.
  const ParamArena<T> other = make_arena<T>(small_model, 5);
  save_checkpoint<T>(run.path, 10, other, m, v, trainer_state, config);
  load_checkpoint<T>(dir, fresh, m2, v2);
  CHECK(same_bits(fresh.values(), other.values(), arena.size()));
  CHECK(list_checkpoints(run.path).size() == 1);
}

TEST_CASE("checkpoint: weights-only checkpoints") {
  TempDir run("ckpt_weights");
  const ParamArena<float> arena = make_arena<float>(small_model, 1);
  const fs::path dir = save_checkpoint(run.path, 3, arena, {}, {}, trainer_state, config);
  CHECK(!fs::exists(dir / "optimizer.safetensors"));
  ParamArena<float> fresh = make_arena<float>(small_model, 2);
  load_checkpoint(dir, fresh);
  CHECK(same_bits(fresh.values(), arena.values(), arena.size()));
  std::vector<float> m(std::size_t(arena.size())), v(m.size());
  CHECK_THROWS_AS(load_checkpoint<float>(dir, fresh, m, v), Error);  // no optimizer file
  std::vector<float> short_m(3);
  CHECK_THROWS_AS(save_checkpoint<float>(run.path, 4, arena, short_m, short_m, trainer_state, config),
                  Error);
}

TEST_CASE("checkpoint: latest_checkpoint ignores .tmp and incomplete directories, prune keeps the newest") {
  TempDir run("ckpt_latest");
  CHECK(!latest_checkpoint(run.path).has_value());
  CHECK(!latest_checkpoint(run.path / "does_not_exist").has_value());
  const ParamArena<float> arena = make_arena<float>(small_model, 1);
  const std::vector<float> m(std::size_t(arena.size())), v(m.size());
  for (index_t step : {10, 200, 30}) save_checkpoint<float>(run.path, step, arena, m, v, trainer_state, config);
  // Decoys: an interrupted save (even with DONE inside), a directory without DONE, odd names.
  fs::create_directories(run.path / "ckpt_00009000.tmp");
  write_file_atomic(run.path / "ckpt_00009000.tmp" / "DONE", "9000\n");
  fs::create_directories(run.path / "ckpt_00005000");
  fs::create_directories(run.path / "ckpt_junk");
  fs::create_directories(run.path / "ckpt_123");
  write_file_atomic(run.path / "ckpt_123" / "DONE", "");
  write_file_atomic(run.path / "ckpt_00007000", "a file, not a directory");
  fs::create_directories(run.path / "ckpt_00000200.old.77");  // a replaced one, killed mid-removal
  write_file_atomic(run.path / "ckpt_00000200.old.77" / "DONE", "200\n");
  fs::create_directories(run.path / "ckpt_junk.tmp");
  CHECK(latest_checkpoint(run.path) == run.path / "ckpt_00000200");
  const auto all = list_checkpoints(run.path);
  REQUIRE(all.size() == 3);
  CHECK(all[0].first == 10);
  CHECK(all[1].first == 30);
  CHECK(all[2].first == 200);

  prune_checkpoints(run.path, 2);
  const auto kept = list_checkpoints(run.path);
  REQUIRE(kept.size() == 2);
  CHECK(kept[0].first == 30);
  CHECK(kept[1].first == 200);
  CHECK(!fs::exists(run.path / "ckpt_00000010"));
  CHECK(fs::exists(run.path / "ckpt_00005000"));  // not a complete checkpoint: left alone
  CHECK(!fs::exists(run.path / "ckpt_00009000.tmp"));  // leftovers of interrupted saves go
  CHECK(!fs::exists(run.path / "ckpt_00000200.old.77"));
  CHECK(fs::exists(run.path / "ckpt_junk.tmp"));  // not a checkpoint's name: not ours to delete
  prune_checkpoints(run.path, 5);
  CHECK(list_checkpoints(run.path).size() == 2);
  CHECK_THROWS_AS(prune_checkpoints(run.path, 0), Error);
  CHECK(checkpoint_path(run.path, 123456789) == run.path / "ckpt_123456789");
}

TEST_CASE("checkpoint: loading is strict about names, shapes and dtypes") {
  TempDir run("ckpt_strict");
  const ParamArena<float> arena = make_arena<float>(small_model, 1);
  const std::vector<float> m(std::size_t(arena.size())), v(m.size());
  const fs::path dir = save_checkpoint<float>(run.path, 1, arena, m, v, trainer_state, config);

  SUBCASE("missing tensor") {
    Slots more = small_model;
    more.push_back({"h.0.mlp.down.V", {2, 16}});
    ParamArena<float> a = make_arena<float>(more, 2);
    const std::string msg = error_of([&] { load_checkpoint<float>(dir, a); });
    CHECK(msg.find("missing tensor 'h.0.mlp.down.V'") != std::string::npos);
    CHECK(msg.find("(2, 16)") != std::string::npos);
    CHECK(msg.find("model.safetensors") != std::string::npos);
  }
  SUBCASE("unexpected tensor") {
    Slots fewer(small_model.begin(), small_model.end() - 1);
    ParamArena<float> a = make_arena<float>(fewer, 2);
    const std::vector<float> before(a.values(), a.values() + a.size());
    const std::string msg = error_of([&] { load_checkpoint<float>(dir, a); });
    CHECK(msg.find("unexpected tensor 'ln_f.bias'") != std::string::npos);
    CHECK(same_bits(a.values(), before.data(), a.size()));  // untouched
  }
  SUBCASE("shape mismatch") {
    Slots other = small_model;
    other[2].second = {4, 2};
    ParamArena<float> a = make_arena<float>(other, 2);
    const std::string msg = error_of([&] { load_checkpoint<float>(dir, a); });
    CHECK(msg.find("'h.0.mlp.up.V'") != std::string::npos);
    CHECK(msg.find("(2, 4)") != std::string::npos);
    CHECK(msg.find("(4, 2)") != std::string::npos);
  }
  SUBCASE("dtype") {
    ParamArena<double> a = make_arena<double>(small_model, 2);
    const std::string msg = error_of([&] { load_checkpoint<double>(dir, a); });
    CHECK(msg.find("F32") != std::string::npos);
    CHECK(msg.find("F64 is required") != std::string::npos);
  }
  SUBCASE("optimizer file with a wrong tensor") {
    SafetensorsWriter w;
    std::vector<float> zero(16 * 4);
    for (const auto& [name, shape] : small_model) {
      w.add<float>("exp_avg." + name, shape, std::span<const float>(zero.data(), std::size_t(ParamInfo{"", shape}.size())));
      w.add<float>("exp_avg_sq." + name, shape, std::span<const float>(zero.data(), std::size_t(ParamInfo{"", shape}.size())));
    }
    w.add<float>("exp_avg.extra", {1}, std::span<const float>(zero.data(), 1));
    w.write(dir / "optimizer.safetensors");
    ParamArena<float> a = make_arena<float>(small_model, 2);
    std::vector<float> m2(m.size()), v2(v.size());
    const std::string msg = error_of([&] { load_checkpoint<float>(dir, a, m2, v2); });
    CHECK(msg.find("unexpected tensor 'exp_avg.extra'") != std::string::npos);
  }
  SUBCASE("no DONE marker") {
    fs::remove(dir / "DONE");
    ParamArena<float> a = make_arena<float>(small_model, 2);
    CHECK(error_of([&] { load_checkpoint<float>(dir, a); }).find("DONE") != std::string::npos);
  }
  SUBCASE("corrupt JSON") {
    write_file_atomic(dir / "trainer_state.json", "{\"step\": ");
    ParamArena<float> a = make_arena<float>(small_model, 2);
    CHECK(error_of([&] { load_checkpoint<float>(dir, a); }).find("trainer_state.json") != std::string::npos);
  }
}

TEST_CASE("checkpoint: truncated or corrupt files inside throw bonsai::Error") {
  TempDir run("ckpt_corrupt");
  const ParamArena<float> arena = make_arena<float>(small_model, 1);
  const std::vector<float> m(std::size_t(arena.size())), v(m.size());
  const fs::path dir = save_checkpoint<float>(run.path, 1, arena, m, v, trainer_state, config);
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    const std::vector<std::byte> good = read_file_bytes(dir / file);
    for (std::size_t len = 0; len < good.size(); len += 1 + len / 16) {
      CAPTURE(file);
      CAPTURE(len);
      write_file_atomic(dir / file, std::string_view(reinterpret_cast<const char*>(good.data()), len));
      ParamArena<float> a = make_arena<float>(small_model, 2);
      std::vector<float> m2(m.size()), v2(v.size());
      CHECK_THROWS_AS(load_checkpoint<float>(dir, a, m2, v2), Error);
    }
    write_file_atomic(dir / file, std::string_view(reinterpret_cast<const char*>(good.data()), good.size()));
  }
  ParamArena<float> a = make_arena<float>(small_model, 2);
  std::vector<float> m2(m.size()), v2(v.size());
  CHECK_NOTHROW(load_checkpoint<float>(dir, a, m2, v2));
}

TEST_CASE("atomic_file: commit publishes, failure leaves the target and no temporary") {
  TempDir dir("atomic");
  const fs::path target = dir.path / "x.txt";
  write_file_atomic(target, "old");
  {
    AtomicFile f(target);
    f.write("new content");
    // destroyed without commit (as when an exception unwinds): the old file stays
  }
  CHECK(read_file_bytes(target).size() == 3);
  {
    AtomicFile f(target);
    f.write("new");
    f.write(" content");
    f.commit();
  }
  const std::vector<std::byte> b = read_file_bytes(target);
  CHECK(std::string(reinterpret_cast<const char*>(b.data()), b.size()) == "new content");
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    CHECK(e.path() == target);
    ++entries;
  }
  CHECK(entries == 1);
  const std::string msg = error_of([&] { write_file_atomic(dir.path / "no" / "such" / "dir.txt", "x"); });
  CHECK(msg.find("no/such/dir.txt") != std::string::npos);
  CHECK(msg.find("No such file or directory") != std::string::npos);
  CHECK_THROWS_AS(read_file_bytes(dir.path / "missing"), Error);
  CHECK_THROWS_AS(read_file_bytes(dir.path), Error);  // a directory
  CHECK_THROWS_AS(SafetensorsFile::open(dir.path), Error);

  // publish_directory replaces an existing directory.
  fs::create_directories(dir.path / "d.tmp");
  write_file_atomic(dir.path / "d.tmp" / "a", "1");
  fs::create_directories(dir.path / "d");
  write_file_atomic(dir.path / "d" / "old", "0");
  publish_directory(dir.path / "d.tmp", dir.path / "d");
  CHECK(fs::exists(dir.path / "d" / "a"));
  CHECK(!fs::exists(dir.path / "d" / "old"));
  CHECK(!fs::exists(dir.path / "d.tmp"));
}
