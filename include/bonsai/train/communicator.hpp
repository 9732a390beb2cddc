// bonsai/train/communicator.hpp — what data-parallel training needs from the processes it runs
// on: a rank r in [0, size), the element-wise sum over ranks of a buffer (all-reduce), a copy of
// rank `root`'s buffer to every rank (broadcast), and a check that all ranks hold the same bytes.
//
// Three implementations share this interface:
//   SingleProcess      (this header)                         size 1, every call a no-op
//   MpiCommunicator    (train/mpi_communicator.hpp, MPI)     host buffers, CPU ranks
//   NcclCommunicator   (train/nccl_communicator.cuh)         device buffers, GPU ranks
// A span passed to a communicator lies in the memory of its backend: host memory for the first
// two, device memory for NCCL. Every rank must make the same calls in the same order.
//
// Summation order: with 2 ranks the sum is a + b on both (IEEE addition commutes), so 2 ranks
// reproduce one process that adds 2 micro-batches' partial sums bit for bit. With more ranks the
// library's reduction tree decides the order; results agree to rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "../core/error.hpp"

namespace bonsai {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  bool is_root() const noexcept { return rank() == 0; }

  /// x <- sum over ranks of x, element-wise, on every rank.
  virtual void allreduce_sum(std::span<float> x) = 0;
  virtual void allreduce_sum(std::span<double> x) = 0;
  /// x <- max over ranks of x, element-wise, on every rank.
  virtual void allreduce_max(std::span<std::int64_t> x) = 0;
  virtual void allreduce_max(std::span<std::uint8_t> x) = 0;
  /// Rank `root`'s bytes to every rank.
  virtual void broadcast_bytes(std::span<std::byte> bytes, int root) = 0;
  /// Returns once every rank has called it.
  virtual void barrier() = 0;
  /// Ends every rank's process with `code` (after an error on one rank, which the others
  /// would otherwise wait for forever).
  [[noreturn]] virtual void abort(int code) noexcept = 0;
  /// The communicator for host memory: this one, or the one a device communicator runs beside.
  /// Strings and lock-step checks go through it.
  virtual Communicator& host() noexcept { return *this; }

  /// Rank `root`'s elements of a trivially copyable type to every rank.
  template <class T>
  void broadcast(std::span<T> x, int root = 0) {
    static_assert(std::is_trivially_copyable_v<T>,
                  "Communicator::broadcast copies bytes: the element type must be trivially copyable");
    broadcast_bytes(std::as_writable_bytes(x), root);
  }

  /// Rank `root`'s string to every rank (its length first, then its characters).
  void broadcast(std::string& s, int root = 0) {
    Communicator& h = host();
    std::uint64_t n = s.size();
    h.broadcast(std::span<std::uint64_t>(&n, 1), root);
    s.resize(n);
    h.broadcast(std::span<char>(s.data(), s.size()), root);
  }

  /// Whether `value` is the same on every rank (the same answer on all of them).
  bool same_on_all_ranks(std::uint64_t value) {
    // max(v) and max(~v) give the largest and (complemented) the smallest value.
    std::int64_t both[2];
    std::memcpy(&both[0], &value, sizeof value);
    const std::uint64_t complement = ~value;
    std::memcpy(&both[1], &complement, sizeof complement);
    host().allreduce_max(std::span<std::int64_t>(both, 2));
    std::uint64_t largest, smallest;
    std::memcpy(&largest, &both[0], sizeof largest);
    std::memcpy(&smallest, &both[1], sizeof smallest);
    return largest == ~smallest;
  }
};

/// One process, no peers: sums and broadcasts leave buffers as they are.
class SingleProcess final : public Communicator {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  void allreduce_sum(std::span<float>) override {}
  void allreduce_sum(std::span<double>) override {}
  void allreduce_max(std::span<std::int64_t>) override {}
  void allreduce_max(std::span<std::uint8_t>) override {}
  void broadcast_bytes(std::span<std::byte>, int root) override {
    BONSAI_CHECK(root == 0, "SingleProcess::broadcast: root ", root, " is not a rank (size 1)");
  }
  void barrier() override {}
  [[noreturn]] void abort(int code) noexcept override { std::exit(code); }
};

/// A fingerprint of bytes for comparing buffers across ranks: FNV-1a's multiply-xor over
/// 8-byte words, then the tail bytes (equal bytes give equal fingerprints on every platform of
/// one byte order).
inline std::uint64_t fingerprint(std::span<const std::byte> bytes,
                                 std::uint64_t h = 0xcbf29ce484222325ULL) {
  constexpr std::uint64_t prime = 0x100000001b3ULL;
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    std::uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    h = (h ^ word) * prime;
  }
  for (; i < bytes.size(); ++i) h = (h ^ std::uint64_t(bytes[i])) * prime;
  return h;
}

}  // namespace bonsai
