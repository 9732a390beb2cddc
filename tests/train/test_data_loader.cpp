// DataLoader: sequential and shuffled windows over token shards, epochs, exact resume from a
// saved state, data-parallel rank slices, glob patterns, and its errors.
#include <doctest/doctest.h>

#include "support/errors.hpp"
#include "support/temp_dir.hpp"
#include <unistd.h>

#include <algorithm>
#include <bonsai/train/data_loader.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

using namespace bonsai;
namespace fs = std::filesystem;

namespace {

using Ids = std::vector<std::int32_t>;

using test::TempDir;

/// Writes shard `name` whose token i is base + i, so a token tells where it was read.
fs::path write_counting_shard(const fs::path& dir, const std::string& name, int base, int count) {
  Ids tokens(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) tokens[static_cast<std::size_t>(i)] = base + i;
  write_token_shard(dir / name, tokens);
  return dir / name;
}

struct Batch {
  Ids inputs, targets;  // (B, T) each
  bool operator==(const Batch&) const = default;
};

Batch next(DataLoader& loader) {
  const auto n = static_cast<std::size_t>(loader.batch_size() * loader.seq_len());
  Batch b{Ids(n), Ids(n)};
  loader.next_batch(b.inputs, b.targets);
  return b;
}

/// The batch that starts at token `start` of a counting shard with base `base`.
Batch expected(int base, int start, int n) {
  Batch b{Ids(static_cast<std::size_t>(n)), Ids(static_cast<std::size_t>(n))};
  for (int i = 0; i < n; ++i) {
    b.inputs[static_cast<std::size_t>(i)] = base + start + i;
    b.targets[static_cast<std::size_t>(i)] = base + start + i + 1;
  }
  return b;
}

using test::error_of;

}  // namespace

TEST_CASE("data loader: sequential windows, shard after shard, then a new epoch") {
  TempDir dir("seq");
  // B T = 8: shard 0 (25 tokens) holds (25 - 1) / 8 = 3 windows, shard 1 (17 tokens) holds 2.
  const std::vector<fs::path> shards = {write_counting_shard(dir.path, "a.bin", 0, 25),
                                        write_counting_shard(dir.path, "b.bin", 1000, 17)};
  DataLoader loader(shards, {.batch_size = 2, .seq_len = 4});
  CHECK(loader.batches_per_epoch() == 5);
  CHECK(loader.num_shards() == 2);
  for (int epoch = 0; epoch < 2; ++epoch) {
    CHECK(loader.epoch() == epoch);
    for (const int start : {0, 8, 16}) CHECK(next(loader) == expected(0, start, 8));
    for (const int start : {0, 8}) CHECK(next(loader) == expected(1000, start, 8));
  }
  CHECK(loader.epoch() == 2);
  loader.reset();
  CHECK(loader.epoch() == 0);
  CHECK(next(loader) == expected(0, 0, 8));
}

TEST_CASE("data loader: targets are the inputs shifted by one, row by row") {
  TempDir dir("shift");
  DataLoader loader(std::vector{write_counting_shard(dir.path, "s.bin", 0, 100)},
                    {.batch_size = 3, .seq_len = 5});
  const Batch b = next(loader);
  for (int row = 0; row < 3; ++row)
    for (int t = 0; t < 5; ++t) {
      const auto i = static_cast<std::size_t>(row * 5 + t);
      CHECK(b.inputs[i] == row * 5 + t);  // row `row` is the sequence starting at row * T
      CHECK(b.targets[i] == b.inputs[i] + 1);
    }
}

TEST_CASE("data loader: shuffled epochs are seeded permutations of the windows") {
  TempDir dir("shuffle");
  const std::vector<fs::path> shards = {write_counting_shard(dir.path, "a.bin", 0, 401),
                                        write_counting_shard(dir.path, "b.bin", 10000, 161),
                                        write_counting_shard(dir.path, "c.bin", 20000, 81)};
  const DataLoaderOptions options{.batch_size = 2, .seq_len = 4, .shuffle = true, .seed = 11};
  // Window starts that one epoch must visit exactly once each: 50 + 20 + 10 windows.
  std::multiset<int> all;
  for (int w = 0; w < 50; ++w) all.insert(w * 8);
  for (int w = 0; w < 20; ++w) all.insert(10000 + w * 8);
  for (int w = 0; w < 10; ++w) all.insert(20000 + w * 8);

  DataLoader loader(shards, options);
  REQUIRE(loader.batches_per_epoch() == 80);
  std::vector<std::vector<int>> orders;
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::vector<int> order;
    for (int i = 0; i < 80; ++i) {
      const Batch b = next(loader);
      CHECK(b.inputs[0] % 8 == 0);
      CHECK(b.inputs == expected(0, b.inputs[0], 8).inputs);  // a contiguous window
      CHECK(b.targets == expected(0, b.inputs[0], 8).targets);
      order.push_back(b.inputs[0]);
    }
    CHECK(std::multiset<int>(order.begin(), order.end()) == all);
    // A shard's windows are read together before the next shard's.
    int switches = 0;
    for (std::size_t i = 1; i < order.size(); ++i) switches += order[i] / 10000 != order[i - 1] / 10000;
    CHECK(switches == 2);
    orders.push_back(order);
  }
  CHECK(orders[0] != orders[1]);  // each epoch has its own order

  std::vector<int> sequential_order;
  for (const int s : all) sequential_order.push_back(s);
  CHECK(orders[0] != sequential_order);

  // The same seed gives the same order; another seed another one.
  DataLoader same(shards, options), other(shards, {.batch_size = 2, .seq_len = 4, .shuffle = true, .seed = 12});
  std::vector<int> same_order, other_order;
  for (int i = 0; i < 80; ++i) {
    same_order.push_back(next(same).inputs[0]);
    other_order.push_back(next(other).inputs[0]);
  }
  CHECK(same_order == orders[0]);
  CHECK(other_order != orders[0]);
}

TEST_CASE("data loader: state and restore continue exactly, also through JSON") {
  TempDir dir("resume");
  const std::vector<fs::path> shards = {write_counting_shard(dir.path, "a.bin", 0, 57),
                                        write_counting_shard(dir.path, "b.bin", 1000, 33),
                                        write_counting_shard(dir.path, "c.bin", 2000, 41)};
  for (const bool shuffle : {false, true}) {
    CAPTURE(shuffle);
    const DataLoaderOptions options{.batch_size = 2, .seq_len = 4, .shuffle = shuffle, .seed = 5};
    DataLoader straight(shards, options);
    const int total = 37, first = 16;  // several epochs of 7 + 4 + 5 = 16 batches
    std::vector<Batch> want;
    for (int i = 0; i < total; ++i) want.push_back(next(straight));

    DataLoader before(shards, options);
    for (int i = 0; i < first; ++i) CHECK(next(before) == want[static_cast<std::size_t>(i)]);
    const DataLoaderState state = before.state();
    CHECK(state.epoch == 1);
    CHECK(state.shard == 0);
    CHECK(state.window == 0);
    const std::string saved = nlohmann::json(state).dump();

    DataLoader after(shards, options);
    next(after);  // a position of its own, to be overwritten
    const auto loaded = nlohmann::json::parse(saved).get<DataLoaderState>();
    CHECK(loaded == state);
    after.restore(loaded);
    CHECK(after.state() == state);
    for (int i = first; i < total; ++i) CHECK(next(after) == want[static_cast<std::size_t>(i)]);

    // Mid-shard, mid-epoch.
    DataLoader mid(shards, options);
    for (int i = 0; i < 21; ++i) next(mid);
    DataLoader resumed(shards, options);
    resumed.restore(mid.state());
    for (int i = 21; i < total; ++i) CHECK(next(resumed) == want[static_cast<std::size_t>(i)]);
  }
}

TEST_CASE("data loader: world ranks read adjacent slices of one global batch") {
  TempDir dir("ranks");
  // B T = 8; 49 tokens = 6 windows of 8 for world 1, 3 windows of 16 for world 2.
  const std::vector<fs::path> shards = {write_counting_shard(dir.path, "a.bin", 0, 49),
                                        write_counting_shard(dir.path, "b.bin", 1000, 49)};
  for (const bool shuffle : {false, true}) {
    CAPTURE(shuffle);
    DataLoader rank0(shards, {.batch_size = 2, .seq_len = 4, .rank = 0, .world = 2, .shuffle = shuffle});
    DataLoader rank1(shards, {.batch_size = 2, .seq_len = 4, .rank = 1, .world = 2, .shuffle = shuffle});
    DataLoader wide(shards, {.batch_size = 4, .seq_len = 4, .shuffle = shuffle});  // the global batch
    CHECK(rank0.batches_per_epoch() == 6);
    for (int step = 0; step < 12; ++step) {
      const Batch a = next(rank0), b = next(rank1), global = next(wide);
      CHECK(b.inputs[0] == a.inputs[0] + 8);  // rank r starts at w * world B T + r B T
      Ids joined = a.inputs;
      joined.insert(joined.end(), b.inputs.begin(), b.inputs.end());
      CHECK(joined == global.inputs);
      Ids joined_targets = a.targets;
      joined_targets.insert(joined_targets.end(), b.targets.begin(), b.targets.end());
      CHECK(joined_targets == global.targets);
    }
  }
  // Sequentially, world 2 reads what world 1 reads in two consecutive batches.
  DataLoader one(shards, {.batch_size = 2, .seq_len = 4});
  DataLoader r0(shards, {.batch_size = 2, .seq_len = 4, .rank = 0, .world = 2});
  DataLoader r1(shards, {.batch_size = 2, .seq_len = 4, .rank = 1, .world = 2});
  for (int step = 0; step < 8; ++step) {
    CHECK(next(r0) == next(one));
    CHECK(next(r1) == next(one));
  }
}

TEST_CASE("data loader: slices of one window serve any ranks x micro-batches with the same product") {
  TempDir dir("slices");
  // B T = 8, world 4: a window of 32 tokens; 97 tokens = 3 windows per shard.
  const std::vector<fs::path> shards = {write_counting_shard(dir.path, "a.bin", 0, 97),
                                        write_counting_shard(dir.path, "b.bin", 5000, 97)};
  for (const bool shuffle : {false, true}) {
    CAPTURE(shuffle);
    const DataLoaderOptions four{.batch_size = 2, .seq_len = 4, .world = 4, .shuffle = shuffle, .seed = 3};
    // 1 rank x 4 micro-batches, 2 ranks x 2 (rank r, micro m reads slice m 2 + r), 4 ranks x 1.
    DataLoader one(shards, four);
    std::vector<DataLoader> two, by_rank;
    for (int r = 0; r < 2; ++r) two.emplace_back(shards, four);
    for (int r = 0; r < 4; ++r) {
      DataLoaderOptions o = four;
      o.rank = r;
      by_rank.emplace_back(shards, o);
    }
    Batch b{Ids(8), Ids(8)};
    for (int step = 0; step < 8; ++step) {
      std::vector<Batch> want;
      for (int m = 0; m < 4; ++m) {
        one.read_slice(b.inputs, b.targets, m);
        want.push_back(b);
      }
      one.next_window();
      for (int r = 0; r < 2; ++r) {
        for (int m = 0; m < 2; ++m) {
          two[std::size_t(r)].read_slice(b.inputs, b.targets, m * 2 + r);
          CHECK(b == want[std::size_t(m * 2 + r)]);
        }
        two[std::size_t(r)].next_window();
      }
      for (int r = 0; r < 4; ++r) CHECK(next(by_rank[std::size_t(r)]) == want[std::size_t(r)]);
      CHECK(want[1].inputs[0] == want[0].inputs[0] + 8);  // adjacent slices of one window
    }
    CHECK(one.state() == two[0].state());
    CHECK(one.state() == by_rank[3].state());
  }
  DataLoader loader(shards, {.batch_size = 2, .seq_len = 4, .world = 4});
  Ids in(8), tgt(8);
  CHECK(error_of([&] { loader.read_slice(in, tgt, 4); }).find("slice 4 is outside [0, world = 4)") !=
        std::string::npos);
}

TEST_CASE("data loader: errors for small shards, bad ids, bad buffers and bad states") {
  TempDir dir("errors");
  const fs::path small = write_counting_shard(dir.path, "small.bin", 0, 8);
  std::string message = error_of([&] { DataLoader(std::vector{small}, {.batch_size = 2, .seq_len = 4}); });
  CHECK(message.find("small.bin") != std::string::npos);
  CHECK(message.find("9") != std::string::npos);  // B T + 1 tokens needed
  const fs::path nine = write_counting_shard(dir.path, "nine.bin", 0, 9);
  CHECK_NOTHROW(DataLoader(std::vector{nine}, {.batch_size = 2, .seq_len = 4}));
  CHECK_THROWS_AS(DataLoader(std::vector{nine}, {.batch_size = 2, .seq_len = 4, .world = 2}), Error);
  CHECK_THROWS_AS(DataLoader(std::vector{nine}, {.batch_size = 0, .seq_len = 4}), Error);
  CHECK_THROWS_AS(DataLoader(std::vector{nine}, {.batch_size = 1, .seq_len = 4, .rank = 1}), Error);
  CHECK_THROWS_AS(DataLoader(std::vector<fs::path>{}, {.batch_size = 1, .seq_len = 4}), Error);
  CHECK_THROWS_AS(DataLoader(std::vector{dir.path / "missing.bin"}, {.batch_size = 1, .seq_len = 4}), Error);

  // Token ids are checked against the vocabulary when a shard loads.
  const fs::path ids = write_counting_shard(dir.path, "ids.bin", 250, 20);  // 250 .. 269
  DataLoader checked(std::vector{ids}, {.batch_size = 1, .seq_len = 4, .vocab_size = 257});
  Ids in(4), tg(4);
  message = error_of([&] { checked.next_batch(in, tg); });
  CHECK(message.find("ids.bin") != std::string::npos);
  CHECK(message.find("257") != std::string::npos);
  DataLoader unchecked(std::vector{ids}, {.batch_size = 1, .seq_len = 4, .vocab_size = 270});
  CHECK_NOTHROW(unchecked.next_batch(in, tg));

  Ids short_buffer(3);
  CHECK_THROWS_AS(unchecked.next_batch(short_buffer, tg), Error);

  // A state from another configuration, or out of range, is refused.
  DataLoader other(std::vector{ids}, {.batch_size = 2, .seq_len = 4});
  CHECK_THROWS_AS(unchecked.restore(other.state()), Error);
  DataLoaderState s = unchecked.state();
  s.window = 4;  // (20 - 1) / 4 = 4 windows: 0..3
  CHECK_THROWS_AS(unchecked.restore(s), Error);
  s.window = 3;
  CHECK_NOTHROW(unchecked.restore(s));
  CHECK(unchecked.state() == s);
  s.shard = 1;
  CHECK_THROWS_AS(unchecked.restore(s), Error);

  nlohmann::json j = s;
  j.erase("seed");
  CHECK_THROWS_AS(j.get<DataLoaderState>(), Error);
  j = s;
  j["window"] = "3";
  CHECK_THROWS_AS(j.get<DataLoaderState>(), Error);
}

TEST_CASE("data loader: glob patterns and raw uint16 shards") {
  TempDir dir("glob");
  write_counting_shard(dir.path, "train_000001.bin", 1000, 17);
  write_counting_shard(dir.path, "train_000000.bin", 0, 17);
  write_counting_shard(dir.path, "val_000000.bin", 5000, 17);
  fs::create_directories(dir.path / "train_dir.bin");  // not a file: never matched

  const auto files = glob_files((dir.path / "train_*.bin").string());
  REQUIRE(files.size() == 2);
  CHECK(files[0] == dir.path / "train_000000.bin");
  CHECK(files[1] == dir.path / "train_000001.bin");
  CHECK(glob_files((dir.path / "*.bin").string()).size() == 3);
  CHECK(glob_files((dir.path / "val_00000?.bin").string()).size() == 1);
  CHECK(glob_files((dir.path / "val_000000.bin").string()).size() == 1);
  CHECK_THROWS_AS(glob_files((dir.path / "test_*.bin").string()), Error);
  CHECK_THROWS_AS(glob_files((dir.path / "*" / "x.bin").string()), Error);

  DataLoader loader((dir.path / "train_*.bin").string(), 1, 8);
  CHECK(next(loader) == expected(0, 0, 8));
  CHECK(next(loader) == expected(0, 8, 8));
  CHECK(next(loader) == expected(1000, 0, 8));

  CHECK(detail::wildcard_match("abc", "a*c"));
  CHECK(detail::wildcard_match("abc", "*"));
  CHECK(detail::wildcard_match("", "*"));
  CHECK(detail::wildcard_match("aXbXc", "a*b*c"));
  CHECK(detail::wildcard_match("abcbc", "*bc"));
  CHECK_FALSE(detail::wildcard_match("abcb", "*bc"));
  CHECK_FALSE(detail::wildcard_match("abc", "a?"));

  // nanoGPT's headerless files with format raw_u16.
  std::vector<std::uint16_t> raw(33);
  for (int i = 0; i < 33; ++i) raw[static_cast<std::size_t>(i)] = static_cast<std::uint16_t>(i);
  std::ofstream(dir.path / "train.raw", std::ios::binary)
      .write(reinterpret_cast<const char*>(raw.data()), 66);
  DataLoader nano(std::vector{dir.path / "train.raw"},
                  {.batch_size = 2, .seq_len = 8, .format = ShardFormat::raw_u16});
  CHECK(nano.batches_per_epoch() == 2);
  CHECK(next(nano) == expected(0, 0, 16));
  CHECK(next(nano) == expected(0, 16, 16));
}
