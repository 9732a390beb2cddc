// bonsai/train/data_loader.hpp — DataLoader: batches of B x T next-token examples read from
// token shards, in llm.c's order (consecutive windows, shard after shard, epoch after epoch)
// or shuffled by a seed; each of `world` data-parallel ranks (or ranks x micro-batches) reads its
// slice of a global batch.
// Its position (DataLoaderState, JSON-serialisable) restores exactly for resumed runs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../config.hpp"
#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "token_shard.hpp"

namespace bonsai {

namespace detail {

// Whether `name` matches `pattern`, where '*' matches any run of characters and '?' any one.
inline bool wildcard_match(std::string_view name, std::string_view pattern) {
  std::size_t n = 0, p = 0;
  std::size_t star = std::string_view::npos, star_n = 0;  // the last '*' and where it resumes
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++n;
      ++p;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_n = n;
    } else if (star != std::string_view::npos) {  // let the last '*' take one more character
      p = star + 1;
      n = ++star_n;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// A seed for one (epoch, stream) pair, by splitmix64 mixing: distinct inputs give unrelated
// seeds.
inline std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t a, std::uint64_t b) {
  const auto mix = [](std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(seed) ^ a) ^ b);
}

// A uniformly random permutation of 0 .. n-1 (Fisher-Yates with unbiased draws from Rng), the
// same on every platform.
inline std::vector<std::int64_t> random_permutation(std::int64_t n, std::uint64_t seed) {
  std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), std::int64_t{0});
  Rng rng(seed);
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto range = static_cast<std::uint64_t>(i + 1);
    constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    const std::uint64_t limit = max - max % range;  // a multiple of range: x % range is uniform
    std::uint64_t x = rng.next_u64();
    while (x >= limit) x = rng.next_u64();
    std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(x % range)]);
  }
  return perm;
}

}  // namespace detail

/// The files matching `pattern`, sorted by name. Only the last path component may hold
/// wildcards ('*', '?'): "data/fineweb_train_*.bin". A pattern without wildcards is returned
/// as is. Throws bonsai::Error when nothing matches.
inline std::vector<std::filesystem::path> glob_files(std::string_view pattern) {
  const std::filesystem::path path(pattern);
  if (pattern.find_first_of("*?") == std::string_view::npos) return {path};
  const std::string name = path.filename().string();
  const std::filesystem::path dir = path.parent_path();
  BONSAI_CHECK(dir.string().find_first_of("*?") == std::string::npos, "glob_files: \"", pattern,
               "\": only the file name may hold wildcards");
  const std::filesystem::path where = dir.empty() ? std::filesystem::path(".") : dir;
  BONSAI_CHECK(std::filesystem::is_directory(where), "glob_files: \"", pattern, "\": ",
               where.string(), " is not a directory");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(where)) {
    const std::string file = entry.path().filename().string();
    if (entry.is_regular_file() && detail::wildcard_match(file, name)) files.push_back(dir / file);
  }
  BONSAI_CHECK(!files.empty(), "glob_files: no files match \"", pattern, "\"");
  std::sort(files.begin(), files.end());
  return files;
}

struct DataLoaderOptions {
  index_t batch_size = 0;  // B, sequences per batch (per rank)
  index_t seq_len = 0;     // T, tokens per sequence
  int rank = 0;            // this process's data-parallel rank, in [0, world)
  int world = 1;           // slices of a window: data-parallel ranks (x micro-batches)
  bool shuffle = false;    // false: llm.c's sequential order; true: a seeded order per epoch
  std::uint64_t seed = 1337;
  ShardFormat format = ShardFormat::llmc;
  index_t vocab_size = 0;  // when > 0, every token must be below it (checked as shards load)
};

/// Where a DataLoader is: the next batch is window `window` of shard `shard` of epoch `epoch`,
/// counted in the order that epoch visits them. The other fields must match the loader it is
/// restored into.
struct DataLoaderState {
  std::int64_t epoch = 0;
  std::int64_t shard = 0;
  std::int64_t window = 0;
  std::uint64_t seed = 0;
  bool shuffle = false;
  index_t batch_size = 0;
  index_t seq_len = 0;
  int world = 1;
  std::int64_t num_shards = 0;

  bool operator==(const DataLoaderState&) const = default;
};

inline void to_json(nlohmann::json& j, const DataLoaderState& s) {
  j = nlohmann::json{{"epoch", s.epoch},           {"shard", s.shard},
                     {"window", s.window},         {"seed", s.seed},
                     {"shuffle", s.shuffle},       {"batch_size", s.batch_size},
                     {"seq_len", s.seq_len},       {"world", s.world},
                     {"num_shards", s.num_shards}};
}

inline void from_json(const nlohmann::json& j, DataLoaderState& s) {
  BONSAI_CHECK(j.is_object(), "DataLoaderState: expected a JSON object, got ", j.type_name());
  const auto field = [&j](const char* key, auto& value) {
    const auto it = j.find(key);
    BONSAI_CHECK(it != j.end(), "DataLoaderState: missing \"", key, "\"");
    using V = std::remove_reference_t<decltype(value)>;
    if constexpr (std::is_same_v<V, bool>) {
      BONSAI_CHECK(it->is_boolean(), "DataLoaderState: \"", key, "\" must be a boolean");
    } else if constexpr (std::is_unsigned_v<V>) {
      BONSAI_CHECK(it->is_number_unsigned(), "DataLoaderState: \"", key,
                   "\" must be a non-negative integer");
    } else {
      BONSAI_CHECK(it->is_number_integer(), "DataLoaderState: \"", key, "\" must be an integer");
    }
    value = it->template get<V>();
  };
  field("epoch", s.epoch);
  field("shard", s.shard);
  field("window", s.window);
  field("seed", s.seed);
  field("shuffle", s.shuffle);
  field("batch_size", s.batch_size);
  field("seq_len", s.seq_len);
  field("world", s.world);
  field("num_shards", s.num_shards);
}

/// Reads B x T inputs and the B x T targets (the same tokens shifted by one) from a list of
/// shards. A shard of N tokens holds (N - 1) / (world B T) windows; window w is the global batch
/// of world B T + 1 tokens starting at w world B T, and rank r reads its B T + 1 tokens at
/// w world B T + r B T (llm.c's arithmetic), so world ranks together read exactly what one rank
/// reads with world times the batch. Sequential mode visits windows in order, shard after shard,
/// and starts a new epoch at the end of the last shard. Shuffled mode draws, per epoch, a
/// permutation of the shards and of each shard's windows from (seed, epoch, shard), identical
/// on all ranks and on every platform. Only the current shard is held in memory.
class DataLoader {
 public:
  DataLoader(std::vector<std::filesystem::path> shards, const DataLoaderOptions& options)
      : m_paths(std::move(shards)), m_opt(options) {
    const index_t B = m_opt.batch_size, T = m_opt.seq_len;
    BONSAI_CHECK(B > 0 && T > 0, "DataLoader: batch_size and seq_len must be positive, got B = ",
                 B, ", T = ", T);
    BONSAI_CHECK(m_opt.world >= 1 && m_opt.rank >= 0 && m_opt.rank < m_opt.world,
                 "DataLoader: rank ", m_opt.rank, " is outside [0, world = ", m_opt.world, ")");
    BONSAI_CHECK(!m_paths.empty(), "DataLoader: no shards given");
    const index_t window = m_opt.world * B * T;
    for (const auto& path : m_paths) {
      const index_t count = token_shard_size(path, m_opt.format);
      BONSAI_CHECK(count >= window + 1, "DataLoader: shard ", path.string(), " has ", count,
                   " tokens, but a batch needs at least world * B * T + 1 = ", window + 1,
                   " (world = ", m_opt.world, ", B = ", B, ", T = ", T, ")");
      m_windows.push_back((count - 1) / window);
    }
  }

  /// Shards from a glob pattern (see glob_files).
  DataLoader(std::string_view pattern, const DataLoaderOptions& options)
      : DataLoader(glob_files(pattern), options) {}

  DataLoader(std::string_view pattern, index_t batch_size, index_t seq_len, int rank = 0,
             int world = 1)
      : DataLoader(pattern, DataLoaderOptions{.batch_size = batch_size,
                                              .seq_len = seq_len,
                                              .rank = rank,
                                              .world = world}) {}

  /// Fills inputs (B, T) and targets (B, T), row-major, with targets[b][t] = inputs[b][t + 1]
  /// in the token stream, from this rank's slice of the window, and moves to the next window.
  void next_batch(std::span<std::int32_t> inputs, std::span<std::int32_t> targets) {
    read_slice(inputs, targets, m_opt.rank);
    next_window();
  }

  /// Fills inputs (B, T) and targets (B, T) from slice `slice` in [0, world) of the current
  /// window and stays there. A trainer that accumulates A micro-batches on each of R ranks
  /// makes world = R A and reads slice m R + r for micro-batch m on rank r, then calls
  /// next_window(): every (R, A) with the same R A then reads the same tokens per step.
  void read_slice(std::span<std::int32_t> inputs, std::span<std::int32_t> targets, index_t slice) {
    const index_t B = m_opt.batch_size, T = m_opt.seq_len;
    const auto n = static_cast<std::size_t>(B * T);
    BONSAI_CHECK(inputs.size() == n && targets.size() == n, "DataLoader: buffers hold ",
                 inputs.size(), " and ", targets.size(), " tokens but a batch is B * T = ", n);
    BONSAI_CHECK(slice >= 0 && slice < m_opt.world, "DataLoader: slice ", slice,
                 " is outside [0, world = ", m_opt.world, ")");
    prepare();
    const std::int64_t window = m_opt.shuffle ? m_perm[static_cast<std::size_t>(m_pos.window)]
                                              : m_pos.window;
    const index_t start = window * m_opt.world * B * T + slice * B * T;
    const std::uint16_t* tokens = m_tokens.data() + start;  // B * T + 1 tokens
    for (std::size_t i = 0; i < n; ++i) {
      inputs[i] = tokens[i];
      targets[i] = tokens[i + 1];
    }
  }

  /// Moves to the next window (shard, epoch).
  void next_window() {
    const std::int64_t file = shard_order()[static_cast<std::size_t>(m_pos.shard)];
    if (++m_pos.window < m_windows[static_cast<std::size_t>(file)]) return;
    m_pos.window = 0;
    if (++m_pos.shard < num_shards()) return;
    m_pos.shard = 0;
    ++m_pos.epoch;
  }

  /// Back to the first batch of epoch 0.
  void reset() { m_pos = {}; }

  DataLoaderState state() const {
    return {m_pos.epoch, m_pos.shard, m_pos.window, m_opt.seed, m_opt.shuffle,
            m_opt.batch_size, m_opt.seq_len, m_opt.world, num_shards()};
  }

  /// Continues from a state() of a loader with the same shards and options (rank aside).
  void restore(const DataLoaderState& s) {
    BONSAI_CHECK(s.seed == m_opt.seed && s.shuffle == m_opt.shuffle &&
                     s.batch_size == m_opt.batch_size && s.seq_len == m_opt.seq_len &&
                     s.world == m_opt.world && s.num_shards == num_shards(),
                 "DataLoader::restore: the state is for seed ", s.seed, ", shuffle ", s.shuffle,
                 ", B = ", s.batch_size, ", T = ", s.seq_len, ", world ", s.world, ", ",
                 s.num_shards, " shards, but this loader has seed ", m_opt.seed, ", shuffle ",
                 m_opt.shuffle, ", B = ", m_opt.batch_size, ", T = ", m_opt.seq_len, ", world ",
                 m_opt.world, ", ", num_shards(), " shards");
    BONSAI_CHECK(s.epoch >= 0 && s.shard >= 0 && s.shard < num_shards(),
                 "DataLoader::restore: epoch ", s.epoch, ", shard ", s.shard, " is out of range");
    const Position before = m_pos;
    m_pos = {s.epoch, s.shard, s.window};
    const std::int64_t windows =
        m_windows[static_cast<std::size_t>(shard_order()[static_cast<std::size_t>(s.shard)])];
    if (s.window < 0 || s.window >= windows) {
      m_pos = before;
      detail::fail("DataLoader::restore: window ", s.window, " is outside the shard's ",
                   windows, " windows");
    }
  }

  index_t batch_size() const { return m_opt.batch_size; }
  index_t seq_len() const { return m_opt.seq_len; }
  const DataLoaderOptions& options() const { return m_opt; }
  const std::vector<std::filesystem::path>& shards() const { return m_paths; }
  std::int64_t num_shards() const { return static_cast<std::int64_t>(m_paths.size()); }
  std::int64_t epoch() const { return m_pos.epoch; }
  /// Batches in one epoch (for every rank, the same).
  std::int64_t batches_per_epoch() const {
    return std::accumulate(m_windows.begin(), m_windows.end(), std::int64_t{0});
  }

 private:
  struct Position {
    std::int64_t epoch = 0, shard = 0, window = 0;
  };

  // The shard files in the order the current epoch visits them.
  const std::vector<std::int64_t>& shard_order() {
    if (m_order_epoch != m_pos.epoch) {
      if (m_opt.shuffle) {
        m_order = detail::random_permutation(num_shards(),
                                             detail::mix_seed(m_opt.seed, m_pos.epoch, 0));
      } else {
        m_order.resize(m_paths.size());
        std::iota(m_order.begin(), m_order.end(), std::int64_t{0});
      }
      m_order_epoch = m_pos.epoch;
    }
    return m_order;
  }

  // Loads the current shard and, when shuffling, its window order for this epoch.
  void prepare() {
    const std::int64_t file = shard_order()[static_cast<std::size_t>(m_pos.shard)];
    if (file != m_loaded) {
      m_loaded = -1;
      m_tokens = read_token_shard(m_paths[static_cast<std::size_t>(file)], m_opt.format);
      check_vocab(file);
      m_loaded = file;
      m_perm_epoch = -1;
    }
    if (m_opt.shuffle && m_perm_epoch != m_pos.epoch) {
      m_perm = detail::random_permutation(m_windows[static_cast<std::size_t>(file)],
                                          detail::mix_seed(m_opt.seed, m_pos.epoch, file + 1));
      m_perm_epoch = m_pos.epoch;
    }
  }

  void check_vocab(std::int64_t file) const {
    if (m_opt.vocab_size <= 0) return;
    for (std::size_t i = 0; i < m_tokens.size(); ++i) {
      BONSAI_CHECK(m_tokens[i] < m_opt.vocab_size, "DataLoader: shard ",
                   m_paths[static_cast<std::size_t>(file)].string(), ": token ", m_tokens[i],
                   " at position ", i, " is not below the vocabulary size ", m_opt.vocab_size);
    }
  }

  std::vector<std::filesystem::path> m_paths;
  DataLoaderOptions m_opt;
  std::vector<std::int64_t> m_windows;  // per shard file
  Position m_pos;
  std::vector<std::int64_t> m_order;    // shard files in the order of epoch m_order_epoch
  std::int64_t m_order_epoch = -1;
  std::vector<std::uint16_t> m_tokens;  // the tokens of shard file m_loaded
  std::int64_t m_loaded = -1;
  std::vector<std::int64_t> m_perm;     // window order of m_loaded in epoch m_perm_epoch
  std::int64_t m_perm_epoch = -1;
};

}  // namespace bonsai
