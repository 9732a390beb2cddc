// bonsai/train/checkpoint.hpp — the native checkpoint: a directory run_dir/ckpt_%08d/ (the step)
// holding model.safetensors (every arena slot by name), optimizer.safetensors (exp_avg.<name>,
// exp_avg_sq.<name>), trainer_state.json, config.json and a DONE marker. It is written as
// ckpt_%08d.tmp/ and renamed into place, so a directory with the final name is always complete.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <initializer_list>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../nn/arena.hpp"
#include "atomic_file.hpp"
#include "safetensors.hpp"

namespace bonsai {

/// What a checkpoint gives back besides the tensors: the caller's JSON objects.
struct CheckpointState {
  index_t step = 0;
  nlohmann::json trainer_state;  // trainer_state.json
  nlohmann::json config;         // config.json
};

/// run_dir/ckpt_%08d.
inline std::filesystem::path checkpoint_path(const std::filesystem::path& run_dir, index_t step) {
  BONSAI_CHECK(step >= 0, "checkpoint: negative step ", step);
  char name[32];
  std::snprintf(name, sizeof name, "ckpt_%08lld", static_cast<long long>(step));
  return run_dir / name;
}

namespace detail {

/// The step of a directory named exactly ckpt_<8 or more digits>, else nothing.
inline std::optional<index_t> checkpoint_step(const std::string& name) {
  static constexpr std::string_view prefix = "ckpt_";
  if (!name.starts_with(prefix) || name.size() < prefix.size() + 8 || name.size() > prefix.size() + 18)
    return std::nullopt;
  index_t step = 0;
  for (char ch : name.substr(prefix.size())) {
    if (ch < '0' || ch > '9') return std::nullopt;
    step = step * 10 + (ch - '0');
  }
  return step;
}

/// Writes `arena`'s slots (optionally from `values` instead of the arena's own values, each
/// slot at its arena offset) under `prefix` + slot name.
template <class T>
void add_arena_tensors(SafetensorsWriter& w, const ParamArena<T>& arena, const T* values,
                       const std::string& prefix) {
  for (const ParamSlot& s : arena.slots())
    w.add<T>(prefix + s.name, s.shape, std::span<const T>(values + s.offset, std::size_t(s.size())));
}

/// Checks that `file` holds exactly the tensors prefix + slot name for every prefix and slot,
/// each of the slot's shape and of dtype dtype_of<T>.
template <class T>
void check_arena_tensors(const SafetensorsFile& file, const ParamArena<T>& arena,
                         std::initializer_list<std::string_view> prefixes) {
  for (std::string_view prefix : prefixes) {
    for (const ParamSlot& s : arena.slots()) {
      const std::string name = std::string(prefix) + s.name;
      const SafeTensor* t = file.find(name);
      BONSAI_CHECK(t != nullptr, file.origin(), ": missing tensor '", name,
                   "' (the model expects ", shape_string(s.shape), ")");
      BONSAI_CHECK(t->shape == s.shape, file.origin(), ": tensor '", name, "' has shape ",
                   shape_string(t->shape), " but the model expects ", shape_string(s.shape));
      BONSAI_CHECK(t->dtype == dtype_of<T>, file.origin(), ": tensor '", name, "' ",
                   shape_string(t->shape), " is ", dtype_name(t->dtype), " but ",
                   dtype_name(dtype_of<T>), " is required");
    }
  }
  for (const SafeTensor& t : file.tensors()) {
    const bool known = std::ranges::any_of(prefixes, [&](std::string_view prefix) {
      return t.name.starts_with(prefix) &&
             arena.find(std::string_view(t.name).substr(prefix.size())) != nullptr;
    });
    BONSAI_CHECK(known, file.origin(), ": unexpected tensor '", t.name, "' ",
                 shape_string(t.shape), " (the model has no such parameter)");
  }
}

/// Copies the tensors prefix + slot name of a checked file into `values` at the slots' offsets.
template <class T>
void read_arena_tensors(const SafetensorsFile& file, const ParamArena<T>& arena,
                        std::string_view prefix, T* values) {
  for (const ParamSlot& s : arena.slots())
    file.read_into<T>(std::string(prefix) + s.name,
                      std::span<T>(values + s.offset, std::size_t(s.size())));
}

inline void write_json_atomic(const std::filesystem::path& path, const nlohmann::json& j) {
  write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace detail

/// Saves a checkpoint of step `step` into run_dir/ckpt_%08d/ and returns that path. `exp_avg`
/// and `exp_avg_sq` are AdamW's moments in the arena's layout (arena.size() each), or both
/// empty to save the weights only. `trainer_state` and `config` are stored as given (the
/// config also goes into model.safetensors' metadata as "config"). Publishing is atomic: the
/// files are written into ckpt_%08d.tmp/ with DONE last, and the directory is then renamed; an
/// existing checkpoint of the same step is replaced.
template <class T>
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, index_t step,
                                      const ParamArena<T>& arena,
                                      std::type_identity_t<std::span<const T>> exp_avg,
                                      std::type_identity_t<std::span<const T>> exp_avg_sq,
                                      const nlohmann::json& trainer_state,
                                      const nlohmann::json& config) {
  namespace fs = std::filesystem;
  BONSAI_CHECK(arena.allocated(), "save_checkpoint: the arena is not allocated");
  const bool with_optimizer = !exp_avg.empty() || !exp_avg_sq.empty();
  BONSAI_CHECK(!with_optimizer || (index_t(exp_avg.size()) == arena.size() &&
                                   index_t(exp_avg_sq.size()) == arena.size()),
               "save_checkpoint: the optimizer moments have ", exp_avg.size(), " and ",
               exp_avg_sq.size(), " elements but the arena has ", arena.size());
  const fs::path final_dir = checkpoint_path(run_dir, step);
  fs::path tmp_dir = final_dir;
  tmp_dir += ".tmp";
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  BONSAI_CHECK(!ec, "save_checkpoint: cannot create '", run_dir.string(), "': ", ec.message());
  fs::remove_all(tmp_dir, ec);  // a leftover of an interrupted save
  BONSAI_CHECK(fs::create_directory(tmp_dir, ec) && !ec, "save_checkpoint: cannot create '",
               tmp_dir.string(), "': ", ec.message());
  try {
    SafetensorsWriter model;
    model.metadata("config", config.dump());
    model.metadata("step", std::to_string(step));
    detail::add_arena_tensors(model, arena, arena.values(), "");
    model.write(tmp_dir / "model.safetensors");
    if (with_optimizer) {
      SafetensorsWriter opt;
      opt.metadata("step", std::to_string(step));
      detail::add_arena_tensors(opt, arena, exp_avg.data(), "exp_avg.");
      detail::add_arena_tensors(opt, arena, exp_avg_sq.data(), "exp_avg_sq.");
      opt.write(tmp_dir / "optimizer.safetensors");
    }
    detail::write_json_atomic(tmp_dir / "trainer_state.json", trainer_state);
    detail::write_json_atomic(tmp_dir / "config.json", config);
    write_file_atomic(tmp_dir / "DONE", std::to_string(step) + "\n");
    publish_directory(tmp_dir, final_dir);
  } catch (...) {
    fs::remove_all(tmp_dir, ec);
    throw;
  }
  return final_dir;
}

/// The complete checkpoints (named ckpt_<step>, holding DONE) of `run_dir`, oldest first.
inline std::vector<std::pair<index_t, std::filesystem::path>> list_checkpoints(
    const std::filesystem::path& run_dir) {
  namespace fs = std::filesystem;
  std::vector<std::pair<index_t, fs::path>> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(run_dir, ec)) {
    const std::optional<index_t> step = detail::checkpoint_step(e.path().filename().string());
    if (step && e.is_directory(ec) && fs::is_regular_file(e.path() / "DONE", ec))
      out.emplace_back(*step, e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// The newest complete checkpoint of `run_dir`, if any (ckpt_*.tmp and directories without
/// DONE are ignored).
inline std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& run_dir) {
  auto all = list_checkpoints(run_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

/// Deletes all complete checkpoints but the newest `keep_last` (each is first renamed to
/// ckpt_<step>.old.<pid>, so no folder with a checkpoint's name is ever half deleted), and what
/// interrupted saves and deletions left behind: ckpt_<step>.tmp (a save killed before its
/// rename) and ckpt_<step>.old.<pid>. Call it between saves, never during one.
inline void prune_checkpoints(const std::filesystem::path& run_dir, index_t keep_last) {
  namespace fs = std::filesystem;
  BONSAI_CHECK(keep_last >= 1, "prune_checkpoints: keep_last = ", keep_last, " must be at least 1");
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(run_dir, ec)) {
    const std::string name = e.path().filename().string();
    const std::size_t dot = name.find('.');
    if (dot == std::string::npos || !detail::checkpoint_step(name.substr(0, dot))) continue;
    const std::string_view suffix = std::string_view(name).substr(dot);
    if (suffix == ".tmp" || suffix.starts_with(".old.")) fs::remove_all(e.path(), ec);
  }
  auto all = list_checkpoints(run_dir);
  const std::size_t drop = all.size() > std::size_t(keep_last) ? all.size() - std::size_t(keep_last) : 0;
  for (std::size_t i = 0; i < drop; ++i) {
    fs::path old = all[i].second;
    old += ".old." + std::to_string(::getpid());
    fs::rename(all[i].second, old, ec);
    if (!ec) fs::remove_all(old, ec);
    BONSAI_CHECK(!ec, "prune_checkpoints: cannot remove '", all[i].second.string(), "': ",
                 ec.message());
  }
}

/// Loads the checkpoint directory `dir` into `arena` (allocated, with the same slots) and,
/// unless both are empty, the moments `exp_avg` / `exp_avg_sq` (arena.size() each). Strict:
/// a missing or unexpected tensor, a shape mismatch or a dtype other than dtype_of<T> throws
/// bonsai::Error naming the tensor and both shapes; nothing is copied until all tensors check.
template <class T>
CheckpointState load_checkpoint(const std::filesystem::path& dir, ParamArena<T>& arena,
                                std::type_identity_t<std::span<T>> exp_avg = {},
                                std::type_identity_t<std::span<T>> exp_avg_sq = {}) {
  namespace fs = std::filesystem;
  BONSAI_CHECK(arena.allocated(), "load_checkpoint: the arena is not allocated");
  const bool with_optimizer = !exp_avg.empty() || !exp_avg_sq.empty();
  BONSAI_CHECK(!with_optimizer || (index_t(exp_avg.size()) == arena.size() &&
                                   index_t(exp_avg_sq.size()) == arena.size()),
               "load_checkpoint: the optimizer moments have ", exp_avg.size(), " and ",
               exp_avg_sq.size(), " elements but the arena has ", arena.size());
  std::error_code ec;
  BONSAI_CHECK(fs::is_regular_file(dir / "DONE", ec), "load_checkpoint: '", dir.string(),
               "' is not a complete checkpoint (no DONE marker)");
  CheckpointState state;
  state.step = detail::checkpoint_step(dir.filename().string()).value_or(-1);
  state.trainer_state = read_json_file(dir / "trainer_state.json");
  state.config = read_json_file(dir / "config.json");

  // Check both files before touching the arena or the moments.
  const SafetensorsFile model = SafetensorsFile::open(dir / "model.safetensors");
  detail::check_arena_tensors(model, arena, {""});
  std::optional<SafetensorsFile> opt;
  if (with_optimizer) {
    opt = SafetensorsFile::open(dir / "optimizer.safetensors");
    detail::check_arena_tensors(*opt, arena, {"exp_avg.", "exp_avg_sq."});
  }
  detail::read_arena_tensors(model, arena, "", arena.values());
  if (opt) {
    detail::read_arena_tensors(*opt, arena, "exp_avg.", exp_avg.data());
    detail::read_arena_tensors(*opt, arena, "exp_avg_sq.", exp_avg_sq.data());
  }
  return state;
}

}  // namespace bonsai
