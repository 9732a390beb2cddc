// train/metrics.hpp: metrics.csv and main.log contents, resume truncation, console lines.
#include <doctest/doctest.h>

#include "support/temp_dir.hpp"

#include <algorithm>
#include <bonsai/train/metrics.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#if __has_include(<unistd.h>)
#  include <unistd.h>
#endif

using namespace bonsai;
namespace fs = std::filesystem;

namespace {

using test::TempDir;

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

StepMetrics at(std::int64_t step) {
  StepMetrics s;
  s.step = step;
  s.loss = 4.0 - 0.125 * double(step);
  s.lr = 6e-4;
  s.grad_norm = 1.5;
  s.ms = 250.0;
  s.tokens_per_s = 32768.0;
  s.gflops = 12.25;
  s.train_flops = 1.5e12 * double(step + 1);
  return s;
}

/// Steps [from, to) with a validation every 5 steps, as a trainer would log them.
void run(MetricsLog& log, std::int64_t from, std::int64_t to) {
  for (std::int64_t s = from; s < to; ++s) {
    if (s % 5 == 0) log.log_val(s, 4.5 - 0.1 * double(s));
    log.log_train(at(s));
  }
}

}  // namespace

TEST_CASE("metrics: csv and main.log lines in the stated formats") {
  TempDir dir("format");
  {
    MetricsLog log(dir.path / "run");  // creates the directory
    log.log_val(0, 2.0);
    log.log_train(at(0));
    log.log_val(1, 1.5, 1.5e12);
    StepMetrics partial = at(1);
    partial.ms = partial.tokens_per_s = partial.gflops = partial.train_flops = StepMetrics::none;
    log.log_train(partial);
  }
  const auto csv = lines_of(dir.path / "run" / "metrics.csv");
  REQUIRE(csv.size() == 5);
  CHECK(csv[0] == "step,loss,val_loss,lr,grad_norm,ms,tokens_per_s,gflops,val_ppl,train_flops");
  CHECK(csv[1] == "0,,2.000000,,,,,,7.3891,");
  CHECK(csv[2] == "0,4.000000,,6.000000e-04,1.500000,250.000,32768.0,12.250,,1.500000e+12");
  CHECK(csv[3] == "1,,1.500000,,,,,,4.4817,1.500000e+12");
  CHECK(csv[4] == "1,3.875000,,6.000000e-04,1.500000,,,,,");
  const auto log = lines_of(dir.path / "run" / "main.log");
  REQUIRE(log.size() == 4);
  CHECK(log[0] == "s:0 tel:2.0000");
  CHECK(log[1] == "s:0 trl:4.0000 lr:0.000600 norm:1.50");
  CHECK(log[2] == "s:1 tel:1.5000");
  CHECK(log[3] == "s:1 trl:3.8750 lr:0.000600 norm:1.50");
}

TEST_CASE("metrics: reopening appends without a second header") {
  TempDir dir("append");
  {
    MetricsLog log(dir.path);
    run(log, 0, 3);
  }
  {
    MetricsLog log(dir.path);
    run(log, 3, 4);
  }
  const auto csv = lines_of(dir.path / "metrics.csv");
  CHECK(csv.size() == 1 + 1 + 4);
  CHECK(std::count(csv.begin(), csv.end(), std::string(MetricsLog::csv_header)) == 1);
  CHECK(lines_of(dir.path / "main.log").size() == 5);
}

TEST_CASE("metrics: resuming drops the lines after the resume step") {
  TempDir straight("straight"), resumed("resumed");
  {
    MetricsLog log(straight.path);
    run(log, 0, 12);
  }
  {
    MetricsLog log(resumed.path);
    run(log, 0, 9);  // the interrupted run got to step 8 ...
  }
  {
    // ... and was killed in the middle of a line.
    std::ofstream(resumed.path / "metrics.csv", std::ios::app) << "9,3.8";
    std::ofstream(resumed.path / "main.log", std::ios::app) << "s:9 trl:3";
  }
  {
    MetricsLog log(resumed.path, 5);  // ... after a checkpoint at step 5
    const auto csv = lines_of(resumed.path / "metrics.csv");
    CHECK(csv.size() == 1 + 6 + 2);  // header, steps 0..5, vals at 0 and 5
    CHECK(csv.back().starts_with("5,"));
    CHECK(lines_of(resumed.path / "main.log").back() == "s:5 trl:3.3750 lr:0.000600 norm:1.50");
    run(log, 6, 12);
  }
  CHECK(lines_of(resumed.path / "metrics.csv") == lines_of(straight.path / "metrics.csv"));
  CHECK(lines_of(resumed.path / "main.log") == lines_of(straight.path / "main.log"));
  CHECK_FALSE(fs::exists(resumed.path / "metrics.csv.tmp"));

  MetricsLog afresh(resumed.path, -1);
  CHECK(lines_of(resumed.path / "metrics.csv").size() == 1);
  CHECK(lines_of(resumed.path / "main.log").empty());
}

TEST_CASE("metrics: resuming keeps the validation logged just before the checkpoint") {
  // A trainer validates before step 10 at the end of step 9, then writes the checkpoint after
  // step 9, then trains step 10: killed there, it resumes from step 9 and must keep the
  // validation but not step 10's line, or step 10 would appear twice.
  TempDir straight("val_straight"), resumed("val_resumed");
  {
    MetricsLog log(straight.path);
    run(log, 0, 12);
  }
  {
    MetricsLog log(resumed.path);
    run(log, 0, 11);  // steps 0..10, validations at 0, 5 and 10
  }
  {
    MetricsLog log(resumed.path, 9);
    CHECK(lines_of(resumed.path / "main.log").back() == "s:10 tel:3.5000");
    CHECK(lines_of(resumed.path / "metrics.csv").back().starts_with("10,,3.500000,"));
    log.log_train(at(10));
    log.log_train(at(11));
  }
  CHECK(lines_of(resumed.path / "metrics.csv") == lines_of(straight.path / "metrics.csv"));
  CHECK(lines_of(resumed.path / "main.log") == lines_of(straight.path / "main.log"));
}

TEST_CASE("metrics: errors name the path") {
  TempDir dir("errors");
  fs::create_directories(dir.path);
  std::ofstream(dir.path / "file") << "x\n";
  const std::string bad = (dir.path / "file" / "run").string();
  CHECK_THROWS_WITH_AS(MetricsLog(dir.path / "file" / "run"),
                       doctest::Contains(doctest::String(bad.c_str())), Error);
  std::ofstream(dir.path / "metrics.csv") << "iter,loss\n1,2\n";
  CHECK_THROWS_WITH_AS(MetricsLog{dir.path}, doctest::Contains("not the header"), Error);
}

TEST_CASE("metrics: console lines as llm.c prints them") {
  StepMetrics s = at(41);
  s.loss = 2.875;
  CHECK(ConsoleReporter::train_line(s, 1000) ==
        "step   42/1000 | loss 2.8750 | norm 1.500 | lr 6.00e-04 | 250 ms | 32768 tok/s | "
        "12.2 GFLOP/s");
  s.mfu = 37.5;
  s.gflops = StepMetrics::none;
  CHECK(ConsoleReporter::train_line(s, 1000).ends_with("32768 tok/s | 37.5% MFU"));
  CHECK(ConsoleReporter::val_line(250, 0.0, 1000) ==
        "step  250/1000 | val loss 0.0000 | perplexity 1.00");
}

TEST_CASE("metrics: no bar and no carriage return off a terminal, a bar on one") {
  std::ostringstream plain;
  {
    ConsoleReporter con(10, plain, false);
    CHECK_FALSE(con.progress_bar());
    con.train(at(0));
    con.val(1, 3.0);
    con.train(at(1));
    con.message("saved checkpoint");
  }
  const std::string lines = plain.str();
  CHECK(lines.find('\r') == std::string::npos);
  CHECK(lines.ends_with("saved checkpoint\n"));
  CHECK(std::count(lines.begin(), lines.end(), '\n') == 4);

  std::ostringstream tty;
  {
    ConsoleReporter con(10, tty, true);
    con.train(at(0));
    con.train(at(1));
    con.message("hello");
  }
  const std::string out = tty.str();
  CHECK(out.find("\r[######.....") != std::string::npos);  // 2/10 of a 30-wide bar
  CHECK(out.find(" 2/10  20%") != std::string::npos);
  CHECK(out.find("ETA") != std::string::npos);
  // Every line starts on a cleared row: a bar is always erased ("\r   \r") before text.
  CHECK(out.find("     \rhello\n") != std::string::npos);
  CHECK(out.ends_with(std::string(" \r")));  // the destructor erased the bar
}
