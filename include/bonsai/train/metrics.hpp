// bonsai/train/metrics.hpp — training logs. MetricsLog appends one row per step to a run
// directory's metrics.csv (for gnuplot, scripts/plot_loss.gp) and llm.c's main.log lines
// ("s:%d trl:%.4f lr:%.6f norm:%.2f", "s:%d tel:%.4f"); ConsoleReporter prints llm.c's step line
// and, on a terminal, a progress bar redrawn in place. Validation perplexity is exp(val loss).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#if __has_include(<unistd.h>)
#  include <unistd.h>
#endif

#include "../core/error.hpp"

namespace bonsai {

/// What one optimizer step reports. `step` is 0-based, as in main.log. NaN in ms, tokens_per_s,
/// gflops or mfu marks a measurement not taken (an empty CSV field, left out of the console
/// line); loss and grad_norm are always written, so a diverged run shows "nan".
struct StepMetrics {
  static constexpr double none = std::numeric_limits<double>::quiet_NaN();
  std::int64_t step = 0;
  double loss = none;          // mean training loss of the step (all micro-batches)
  double lr = 0.0;             // learning rate used by the update
  double grad_norm = none;     // global gradient norm before clipping
  double ms = none;            // wall time of the step
  double tokens_per_s = none;  // throughput
  double gflops = none;        // achieved GFLOP/s
  double mfu = none;           // percent of the assumed peak; console only
  double train_flops = none;   // training FLOPs of the run so far, this step included
};

namespace detail::logs {

/// printf into a std::string.
template <class... A>
std::string format(const char* fmt, A... args) {
  const int n = std::snprintf(nullptr, 0, fmt, args...);
  std::string s(std::size_t(n > 0 ? n : 0), '\0');
  if (n > 0) std::snprintf(s.data(), s.size() + 1, fmt, args...);
  return s;
}

/// A CSV field: empty for NaN (gnuplot reads it as missing), else printf'd.
inline std::string csv_field(const char* fmt, double v) {
  return std::isnan(v) ? std::string() : format(fmt, v);
}

/// The step a log line belongs to: leading digits after `prefix` ("" for metrics.csv, "s:" for
/// main.log) followed by `separator`; nullopt for headers and partial lines.
inline std::optional<std::int64_t> line_step(std::string_view line, std::string_view prefix,
                                             char separator) {
  if (!line.starts_with(prefix)) return std::nullopt;
  line.remove_prefix(prefix.size());
  std::int64_t step = 0;
  std::size_t i = 0;
  for (; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i)
    step = step * 10 + (line[i] - '0');
  if (i == 0 || i == line.size() || line[i] != separator) return std::nullopt;
  return step;
}

/// Rewrites `path` keeping the header (if `header` is not empty and the file starts with it),
/// the training lines of steps <= `last_step` and the validation lines (those whose text after
/// the step starts with `val_mark`) of steps <= last_step + 1: the validation before step
/// last_step + 1 is measured, and logged, before the checkpoint after step last_step is written.
/// last_step = -1 keeps no line. Atomic through a rename.
inline void keep_lines_up_to(const std::filesystem::path& path, std::int64_t last_step,
                             std::string_view header, std::string_view prefix, char separator,
                             std::string_view val_mark) {
  std::ifstream in(path);
  if (!in) return;  // nothing logged yet
  const std::int64_t last_val = last_step < 0 ? last_step : last_step + 1;
  std::vector<std::string> kept;
  std::string line;
  for (bool first = true; std::getline(in, line); first = false) {
    if (first && !header.empty() && line == header) {
      kept.push_back(line);
      continue;
    }
    const auto step = line_step(line, prefix, separator);
    if (!step) continue;  // a fragment of a killed write
    const std::string_view rest = std::string_view(line).substr(line.find(separator) + 1);
    if (*step <= (rest.starts_with(val_mark) ? last_val : last_step)) kept.push_back(line);
  }
  in.close();
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const std::string& l : kept) out << l << '\n';
    out.flush();
    BONSAI_CHECK(out.good(), "MetricsLog: cannot write '", tmp.string(), "'");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  BONSAI_CHECK(!ec, "MetricsLog: cannot replace '", path.string(), "': ", ec.message());
}

/// Opens `path` for appending; when the file was left without a final newline (a killed
/// write), starts a fresh line so the next row is not glued to the fragment.
inline std::ofstream open_append(const std::filesystem::path& path) {
  bool needs_newline = false;
  if (std::ifstream in{path, std::ios::binary | std::ios::ate}; in && in.tellg() > 0) {
    in.seekg(-1, std::ios::end);
    needs_newline = in.get() != '\n';
  }
  std::ofstream out(path, std::ios::app);
  BONSAI_CHECK(out.good(), "MetricsLog: cannot open '", path.string(), "' for appending");
  if (needs_newline) out << '\n';
  return out;
}

}  // namespace detail::logs

/// metrics.csv and main.log of one run directory, appended line by line and flushed after
/// each, so a killed run loses nothing. Write them from one process (rank 0).
///
/// metrics.csv has the header
/// `step,loss,val_loss,lr,grad_norm,ms,tokens_per_s,gflops,val_ppl,train_flops`; a training row
/// leaves val_loss and val_ppl empty, a validation row fills only step, val_loss, val_ppl and
/// train_flops (so runs can be compared at equal compute). Empty fields are missing values for gnuplot (`set datafile separator comma`).
class MetricsLog {
 public:
  static constexpr std::string_view csv_header =
      "step,loss,val_loss,lr,grad_norm,ms,tokens_per_s,gflops,val_ppl,train_flops";

  /// Appends to the run directory's files (created, with the directory, when missing).
  explicit MetricsLog(const std::filesystem::path& dir) : m_dir(dir) { open(); }

  /// Resuming from the state after step `resume_step`: first drops every line logged after that
  /// checkpoint by the interrupted run (training lines of later steps, validations after the
  /// one before step resume_step + 1) so the files read as if the run had never stopped;
  /// `resume_step` = -1 starts both files afresh.
  MetricsLog(const std::filesystem::path& dir, std::int64_t resume_step) : m_dir(dir) {
    BONSAI_CHECK(resume_step >= -1, "MetricsLog: resume step ", resume_step, " is below -1");
    make_dir();
    detail::logs::keep_lines_up_to(csv_path(), resume_step, csv_header, "", ',', ",");
    detail::logs::keep_lines_up_to(log_path(), resume_step, "", "s:", ' ', "tel:");
    open();
  }

  const std::filesystem::path& dir() const noexcept { return m_dir; }
  std::filesystem::path csv_path() const { return m_dir / "metrics.csv"; }
  std::filesystem::path log_path() const { return m_dir / "main.log"; }

  void log_train(const StepMetrics& s) {
    using detail::logs::csv_field, detail::logs::format;
    const auto step = static_cast<long long>(s.step);
    write(m_csv, csv_path(),
          format("%lld,%.6f,,%.6e,%.6f,", step, s.loss, s.lr, s.grad_norm) +
              csv_field("%.3f", s.ms) + ',' + csv_field("%.1f", s.tokens_per_s) + ',' +
              csv_field("%.3f", s.gflops) + ",," + csv_field("%.6e", s.train_flops));
    write(m_log, log_path(),
          format("s:%lld trl:%.4f lr:%.6f norm:%.2f", step, s.loss, s.lr, s.grad_norm));
  }

  /// A validation loss measured at `step` (before that step's update); perplexity exp(loss);
  /// train_flops: the training FLOPs spent before it, when known.
  void log_val(std::int64_t step, double loss, double train_flops = StepMetrics::none) {
    using detail::logs::csv_field, detail::logs::format;
    const auto st = static_cast<long long>(step);
    write(m_csv, csv_path(), format("%lld,,%.6f,,,,,,%.4f,", st, loss, std::exp(loss)) +
                                 csv_field("%.6e", train_flops));
    write(m_log, log_path(), format("s:%lld tel:%.4f", st, loss));
  }

 private:
  void make_dir() {
    std::error_code ec;
    std::filesystem::create_directories(m_dir, ec);
    BONSAI_CHECK(!ec && std::filesystem::is_directory(m_dir),
                 "MetricsLog: cannot create the run directory '", m_dir.string(), "'",
                 ec ? ": " + ec.message() : std::string());
  }

  void open() {
    make_dir();
    const bool fresh =
        !std::filesystem::exists(csv_path()) || std::filesystem::file_size(csv_path()) == 0;
    if (!fresh) {
      std::ifstream in(csv_path());
      std::string first;
      std::getline(in, first);
      BONSAI_CHECK(first == csv_header, "MetricsLog: '", csv_path().string(), "' starts with '",
                   first, "', not the header '", csv_header,
                   "'; log this run to another directory");
    }
    m_csv = detail::logs::open_append(csv_path());
    m_log = detail::logs::open_append(log_path());
    if (fresh) write(m_csv, csv_path(), std::string(csv_header));
  }

  static void write(std::ofstream& out, const std::filesystem::path& path,
                    const std::string& line) {
    out << line << '\n' << std::flush;
    BONSAI_CHECK(out.good(), "MetricsLog: cannot write to '", path.string(), "'");
  }

  std::filesystem::path m_dir;
  std::ofstream m_csv, m_log;
};

/// The console side: llm.c's step line per step, a validation line with perplexity, and, when
/// the output is a terminal, a one-line progress bar (steps done/total, ETA) redrawn in place
/// with '\r' and erased before any other line. Without a terminal: plain lines, no '\r'.
class ConsoleReporter {
 public:
  /// Writes to std::cout; the bar is on when stdout is a terminal.
  explicit ConsoleReporter(std::int64_t total_steps)
      : ConsoleReporter(total_steps, std::cout, stdout_is_terminal()) {}
  ConsoleReporter(std::int64_t total_steps, std::ostream& out, bool progress_bar)
      : m_out(out), m_total(total_steps), m_bar(progress_bar) {}
  ~ConsoleReporter() { clear(); }
  ConsoleReporter(const ConsoleReporter&) = delete;
  ConsoleReporter& operator=(const ConsoleReporter&) = delete;

  bool progress_bar() const noexcept { return m_bar; }

  /// `step %4d/%d | loss %.4f | norm %.3f | lr %.2e | %.0f ms | %.0f tok/s | %.1f GFLOP/s`,
  /// numbered step + 1 (updates done), as llm.c prints it; unmeasured parts are left out.
  static std::string train_line(const StepMetrics& s, std::int64_t total_steps) {
    std::string line = detail::logs::format(
        "step %4lld/%lld | loss %.4f | norm %.3f | lr %.2e", static_cast<long long>(s.step + 1),
        static_cast<long long>(total_steps), s.loss, s.grad_norm, s.lr);
    if (!std::isnan(s.ms)) line += detail::logs::format(" | %.0f ms", s.ms);
    if (!std::isnan(s.tokens_per_s)) line += detail::logs::format(" | %.0f tok/s", s.tokens_per_s);
    if (!std::isnan(s.gflops)) line += detail::logs::format(" | %.1f GFLOP/s", s.gflops);
    if (!std::isnan(s.mfu)) line += detail::logs::format(" | %.1f%% MFU", s.mfu);
    return line;
  }
  /// `step %4d/%d | val loss %.4f | perplexity %.2f`, numbered `step` (updates done when the
  /// validation ran, before step `step`'s update).
  static std::string val_line(std::int64_t step, double loss, std::int64_t total_steps) {
    return detail::logs::format("step %4lld/%lld | val loss %.4f | perplexity %.2f",
                                static_cast<long long>(step), static_cast<long long>(total_steps),
                                loss, std::exp(loss));
  }

  void train(const StepMetrics& s) {
    if (!m_started) {
      m_started = true;
      m_first_done = s.step + 1;  // the ETA times the steps after this one
      m_start = std::chrono::steady_clock::now();
    }
    m_done = s.step + 1;
    message(train_line(s, m_total));
  }
  void val(std::int64_t step, double loss) { message(val_line(step, loss, m_total)); }

  /// Prints one line of other output (erasing the bar first, redrawing it after).
  void message(std::string_view line) {
    clear();
    m_out << line << '\n';
    draw();
    m_out.flush();
  }

  /// Erases the bar; call it before writing to the console some other way.
  void clear() {
    if (m_drawn == 0) return;
    m_out << '\r' << std::string(m_drawn, ' ') << '\r' << std::flush;
    m_drawn = 0;
  }

 private:
  static bool stdout_is_terminal() {
#if __has_include(<unistd.h>)
    return ::isatty(STDOUT_FILENO) != 0;
#else
    return false;
#endif
  }

  static std::string duration(double seconds) {
    const long long s = static_cast<long long>(seconds + 0.5);
    return s >= 3600 ? detail::logs::format("%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60)
                     : detail::logs::format("%lld:%02lld", s / 60, s % 60);
  }

  void draw() {
    if (!m_bar || m_total <= 0 || !m_started) return;
    constexpr int width = 30;
    const double frac = std::min(1.0, double(m_done) / double(m_total));
    const int filled = static_cast<int>(frac * width);
    std::string bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
    bar += detail::logs::format(" %lld/%lld %3.0f%%", static_cast<long long>(m_done),
                                static_cast<long long>(m_total), 100.0 * frac);
    const std::int64_t timed = m_done - m_first_done;
    if (timed > 0 && m_done < m_total) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - m_start).count();
      bar += " ETA " + duration(elapsed / double(timed) * double(m_total - m_done));
    }
    m_out << '\r' << bar;
    m_drawn = bar.size();
  }

  std::ostream& m_out;
  std::int64_t m_total;
  bool m_bar;
  bool m_started = false;
  std::int64_t m_done = 0, m_first_done = 0;
  std::chrono::steady_clock::time_point m_start;
  std::size_t m_drawn = 0;
};

}  // namespace bonsai
