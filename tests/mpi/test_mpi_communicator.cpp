// MpiCommunicator under `mpirun -np N` (CTest runs it with 2 and 3 ranks): ranks are distinct,
// sums, maxima and broadcasts (from every root) give every rank the same, expected answer, two
// ranks add bit for bit as a + b, and the lock-step check tells equal from unequal.
#include <doctest/doctest.h>

#include <bonsai/core/rng.hpp>
#include <bonsai/train/mpi_communicator.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "support/errors.hpp"

namespace bonsai {
namespace {

/// One communicator for the whole program: MPI initialises once and finalises at exit.
MpiCommunicator& world() {
  static MpiCommunicator comm;
  return comm;
}

/// Rank r's data in a test: the same on every rank that asks for it.
std::vector<float> data_of(int r, std::size_t n) {
  Rng rng(1000 + std::uint64_t(r));
  std::vector<float> x(n);
  for (float& v : x) v = float(rng.normal());
  return x;
}

TEST_CASE("mpi: ranks are 0..size-1, each once, with a local rank and size") {
  MpiCommunicator& comm = world();
  REQUIRE(comm.size() >= 2);
  CHECK(comm.rank() >= 0);
  CHECK(comm.rank() < comm.size());
  std::vector<double> seen(std::size_t(comm.size()), 0.0);
  seen[std::size_t(comm.rank())] = 1;
  comm.allreduce_sum(std::span(seen));
  for (const double s : seen) CHECK(s == 1.0);
  CHECK(comm.local_size() >= 1);
  CHECK(comm.local_rank() < comm.local_size());
  CHECK(MpiCommunicator::launched());
}

TEST_CASE("mpi: all-reduce sums and maxima reach every rank") {
  MpiCommunicator& comm = world();
  const int n = comm.size(), r = comm.rank();
  std::vector<double> d{double(r), 1.0, -0.5 * r};
  comm.allreduce_sum(std::span(d));
  CHECK(d[0] == n * (n - 1) / 2.0);
  CHECK(d[1] == double(n));
  CHECK(d[2] == -0.25 * n * (n - 1));
  std::vector<std::int64_t> i{r, -r, std::int64_t(1) << 40};
  comm.allreduce_max(std::span(i));
  CHECK(i == std::vector<std::int64_t>{n - 1, 0, std::int64_t(1) << 40});
  std::vector<std::uint8_t> u(5, 0);
  u[std::size_t(r % 5)] = std::uint8_t(1 + r);
  comm.allreduce_max(std::span(u));
  for (int k = 0; k < 5; ++k) {
    std::uint8_t want = 0;
    for (int q = 0; q < n; ++q)
      if (q % 5 == k) want = std::max(want, std::uint8_t(1 + q));
    CHECK(u[std::size_t(k)] == want);
  }
}

TEST_CASE("mpi: with two ranks a float sum is a + b bit for bit on both") {
  MpiCommunicator& comm = world();
  if (comm.size() != 2) return;  // more ranks add in the library's tree order
  const std::size_t n = 100003;
  std::vector<float> x = data_of(comm.rank(), n);
  comm.allreduce_sum(std::span(x));
  const std::vector<float> a = data_of(0, n), b = data_of(1, n);
  std::size_t differ = 0;
  for (std::size_t k = 0; k < n; ++k) differ += x[k] != a[k] + b[k];
  CHECK(differ == 0);
}

TEST_CASE("mpi: broadcasts copy the root's bytes and strings, from any root") {
  MpiCommunicator& comm = world();
  for (int root = 0; root < comm.size(); ++root) {
    CAPTURE(root);
    std::vector<float> x = data_of(comm.rank(), 4099);
    comm.broadcast(std::span(x), root);
    CHECK(x == data_of(root, 4099));
    std::string s = comm.rank() == root ? std::string(777, char('a' + root)) + "{\"json\": 1}" : "x";
    comm.broadcast(s, root);
    CHECK(s == std::string(777, char('a' + root)) + "{\"json\": 1}");
  }
  std::vector<float> x(3);
  CHECK(test::error_of([&] { comm.broadcast(std::span(x), comm.size()); }).find("is not a rank") !=
        std::string::npos);
}

TEST_CASE("mpi: the lock-step check is true only when every rank holds the same") {
  MpiCommunicator& comm = world();
  const std::vector<float> same = data_of(7, 1000);
  CHECK(comm.same_on_all_ranks(fingerprint(std::as_bytes(std::span(same)))));
  std::vector<float> mine = same;
  if (comm.rank() == comm.size() - 1) mine[999] = std::nextafter(mine[999], 1e9f);
  CHECK_FALSE(comm.same_on_all_ranks(fingerprint(std::as_bytes(std::span(mine)))));
  CHECK_FALSE(comm.same_on_all_ranks(comm.rank() == 0 ? 0ULL : ~0ULL));
  comm.barrier();
}

}  // namespace
}  // namespace bonsai
