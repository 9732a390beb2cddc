// The single-process Communicator (sums and broadcasts leave buffers as they are, a root other
// than 0 is an error) and the fingerprint that checks ranks for lock-step. The MPI
// implementation is tested under mpirun in tests/mpi/.
#include <doctest/doctest.h>

#include <bonsai/train/communicator.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "support/errors.hpp"

namespace bonsai {
namespace {

TEST_CASE("communicator: one process is rank 0 of 1 and its collectives change nothing") {
  SingleProcess one;
  Communicator& comm = one;
  CHECK(comm.rank() == 0);
  CHECK(comm.size() == 1);
  CHECK(comm.is_root());
  std::vector<float> f{1.5f, -2.0f};
  std::vector<double> d{3.25};
  std::vector<std::int64_t> i{-7, 9};
  std::vector<std::uint8_t> u{0, 255};
  comm.allreduce_sum(std::span(f));
  comm.allreduce_sum(std::span(d));
  comm.allreduce_max(std::span(i));
  comm.allreduce_max(std::span(u));
  CHECK(f == std::vector<float>{1.5f, -2.0f});
  CHECK(d == std::vector<double>{3.25});
  CHECK(i == std::vector<std::int64_t>{-7, 9});
  CHECK(u == std::vector<std::uint8_t>{0, 255});
  std::string s = "kept";
  comm.broadcast(s);
  CHECK(s == "kept");
  comm.broadcast(std::span(f));
  CHECK(f[0] == 1.5f);
  CHECK(comm.same_on_all_ranks(0x0123456789abcdefULL));
  CHECK(comm.same_on_all_ranks(~0ULL));
  comm.barrier();
  CHECK(test::error_of([&] { comm.broadcast(std::span(f), 1); }).find("root 1 is not a rank (size 1)") !=
        std::string::npos);
}

TEST_CASE("communicator: the fingerprint sees every byte, in order, and chains") {
  std::vector<float> a(1001);
  for (std::size_t k = 0; k < a.size(); ++k) a[k] = float(k) * 0.25f;
  const std::uint64_t h = fingerprint(std::as_bytes(std::span(a)));
  CHECK(h == fingerprint(std::as_bytes(std::span(a))));
  for (const std::size_t k : {std::size_t(0), std::size_t(7), std::size_t(500), std::size_t(1000)}) {
    std::vector<float> b = a;
    b[k] = std::nextafter(b[k], 1e9f);  // one bit in one word, or in the tail
    CHECK(fingerprint(std::as_bytes(std::span(b))) != h);
  }
  std::vector<float> swapped = a;
  std::swap(swapped[3], swapped[4]);
  CHECK(fingerprint(std::as_bytes(std::span(swapped))) != h);
  // Chaining two halves is not the fingerprint of one half twice.
  const auto first = std::as_bytes(std::span(a).first(500)), second = std::as_bytes(std::span(a).last(501));
  CHECK(fingerprint(second, fingerprint(first)) != fingerprint(second, fingerprint(second)));
  CHECK(fingerprint({}) == 0xcbf29ce484222325ULL);
}

}  // namespace
}  // namespace bonsai
