// NcclCommunicator under `mpirun -np N`, one GPU per rank (CTest runs it with 1 rank): sums,
// maxima and broadcasts of device buffers equal MpiCommunicator's on the same host data, and the
// host-side helpers go over MPI. Skipped without a CUDA device.
#include <doctest/doctest.h>

#include <bonsai/train/nccl_communicator.cuh>
#include <bonsai/core/rng.hpp>
#include <bonsai/cuda.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace bonsai {
namespace {

MpiCommunicator& world() {
  static MpiCommunicator comm;
  return comm;
}

/// A device copy of a host vector, freed at scope exit.
template <class T>
struct OnDevice {
  T* ptr = nullptr;
  std::size_t n = 0;
  explicit OnDevice(const std::vector<T>& host) : n(host.size()) {
    BONSAI_CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T)));
    BONSAI_CUDA_CHECK(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~OnDevice() { cudaFree(ptr); }
  std::span<T> span() { return {ptr, n}; }
  std::vector<T> to_host() const {
    std::vector<T> host(n);
    BONSAI_CUDA_CHECK(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

TEST_CASE("nccl: device sums, maxima and broadcasts equal MPI's on the same data") {
  if (!cuda::available()) {
    MESSAGE("no CUDA device: skipped");
    return;
  }
  MpiCommunicator& mpi = world();
  cuda::NcclCommunicator nccl(mpi);
  CHECK(nccl.rank() == mpi.rank());
  CHECK(nccl.size() == mpi.size());
  CHECK(&nccl.host() == &mpi);

  Rng rng(77 + std::uint64_t(mpi.rank()));
  std::vector<float> f(65537);
  for (float& v : f) v = float(rng.normal());
  std::vector<double> d{1.5 * mpi.rank(), -2.0};
  std::vector<std::int64_t> i{mpi.rank(), -mpi.rank()};
  std::vector<std::uint8_t> u{std::uint8_t(mpi.rank()), 9};
  OnDevice<float> df(f);
  OnDevice<double> dd(d);
  OnDevice<std::int64_t> di(i);
  OnDevice<std::uint8_t> du(u);
  nccl.allreduce_sum(df.span());
  nccl.allreduce_sum(dd.span());
  nccl.allreduce_max(di.span());
  nccl.allreduce_max(du.span());
  mpi.allreduce_sum(std::span(f));
  mpi.allreduce_sum(std::span(d));
  mpi.allreduce_max(std::span(i));
  mpi.allreduce_max(std::span(u));
  if (mpi.size() <= 2) {
    CHECK(df.to_host() == f);  // a + b either way
  } else {
    const auto g = df.to_host();
    double worst = 0;
    for (std::size_t k = 0; k < f.size(); ++k) worst = std::max(worst, double(std::abs(g[k] - f[k])));
    CHECK(worst <= 1e-5);
  }
  CHECK(dd.to_host() == d);
  CHECK(di.to_host() == i);
  CHECK(du.to_host() == u);

  std::vector<float> mine(1000, float(mpi.rank() + 1));
  OnDevice<float> dm(mine);
  nccl.broadcast(dm.span(), mpi.size() - 1);
  CHECK(dm.to_host() == std::vector<float>(1000, float(mpi.size())));
  std::string s = mpi.is_root() ? "from rank 0" : "";
  nccl.broadcast(s);  // a host string, over MPI
  CHECK(s == "from rank 0");
  CHECK(nccl.same_on_all_ranks(42));
  // Host memory is refused on every rank alike (no collective starts), with a sentence.
  std::vector<float> on_host(8, 1.0f);
  CHECK_THROWS_WITH(nccl.allreduce_sum(std::span<float>(on_host)),
                    doctest::Contains("the buffer is host memory"));
  nccl.barrier();
}

}  // namespace
}  // namespace bonsai
