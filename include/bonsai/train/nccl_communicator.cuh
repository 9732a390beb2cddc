// bonsai/train/nccl_communicator.cuh — the Communicator over NCCL for GPU ranks: one GPU per MPI
// rank, NCCL's unique id created by rank 0 and broadcast over MPI (llm.c's scheme). Spans passed
// to it are device memory (a host pointer is refused with a sentence). Every collective first
// waits for the work already queued on bonsai's CUDA stream (the backward that wrote the
// gradients), runs on a stream of its own, and is waited for before the call returns, so
// buffers are ready when it does. Host-memory traffic (strings, lock-step checks) goes over the
// MPI communicator (host()). Needs nccl.h, libnccl and MPI (CMake: bonsai::nccl).
#pragma once

#include <nccl.h>

#include <string>

#include "../backend/cuda/error.cuh"
#include "../backend/cuda/runtime.cuh"
#include "mpi_communicator.hpp"

namespace bonsai::cuda {

namespace detail {
inline void check_nccl(ncclResult_t status, const char* call) {
  if (status != ncclSuccess)
    ::bonsai::detail::fail("NCCL error in ", call, ": ", ncclGetErrorString(status));
}
}  // namespace detail

class NcclCommunicator final : public Communicator {
 public:
  /// Joins the ranks of `mpi` on GPU `device` (by default the rank's index on its machine,
  /// modulo the GPUs there); its collectives run on a stream of its own.
  explicit NcclCommunicator(MpiCommunicator& mpi, int device = -1) : m_mpi(mpi) {
    int devices = 0;
    BONSAI_CUDA_CHECK(cudaGetDeviceCount(&devices));
    BONSAI_CHECK(devices > 0, "NcclCommunicator: rank ", mpi.rank(), " sees no CUDA device");
    m_device = device >= 0 ? device : mpi.local_rank() % devices;
    BONSAI_CHECK(m_device < devices, "NcclCommunicator: device ", m_device, " of ", devices);
    BONSAI_CUDA_CHECK(cudaSetDevice(m_device));
    BONSAI_CUDA_CHECK(cudaStreamCreateWithFlags(&m_stream, cudaStreamNonBlocking));
    BONSAI_CUDA_CHECK(cudaEventCreateWithFlags(&m_ready, cudaEventDisableTiming));
    ncclUniqueId id;
    if (mpi.is_root()) detail::check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    mpi.broadcast(std::span<ncclUniqueId>(&id, 1));
    detail::check_nccl(ncclCommInitRank(&m_comm, mpi.size(), id, mpi.rank()), "ncclCommInitRank");
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;
  ~NcclCommunicator() override {
    ncclCommDestroy(m_comm);
    cudaEventDestroy(m_ready);
    cudaStreamDestroy(m_stream);
  }

  int rank() const noexcept override { return m_mpi.rank(); }
  int size() const noexcept override { return m_mpi.size(); }
  int device() const noexcept { return m_device; }
  cudaStream_t stream() const noexcept { return m_stream; }
  Communicator& host() noexcept override { return m_mpi; }

  void allreduce_sum(std::span<float> x) override { allreduce(x.data(), x.size(), ncclFloat32, ncclSum); }
  void allreduce_sum(std::span<double> x) override { allreduce(x.data(), x.size(), ncclFloat64, ncclSum); }
  void allreduce_max(std::span<std::int64_t> x) override { allreduce(x.data(), x.size(), ncclInt64, ncclMax); }
  void allreduce_max(std::span<std::uint8_t> x) override { allreduce(x.data(), x.size(), ncclUint8, ncclMax); }

  void broadcast_bytes(std::span<std::byte> bytes, int root) override {
    BONSAI_CHECK(root >= 0 && root < size(), "NcclCommunicator::broadcast: root ", root,
                 " is not a rank (size ", size(), ")");
    if (bytes.empty()) return;
    prepare(bytes.data(), "broadcast");
    detail::check_nccl(ncclBroadcast(bytes.data(), bytes.data(), bytes.size(), ncclUint8, root,
                                     m_comm, m_stream), "ncclBroadcast");
    BONSAI_CUDA_CHECK(cudaStreamSynchronize(m_stream));
  }

  void barrier() override {
    BONSAI_CUDA_CHECK(cudaStreamSynchronize(m_stream));
    m_mpi.barrier();
  }

  [[noreturn]] void abort(int code) noexcept override {
    ncclCommAbort(m_comm);
    m_mpi.abort(code);
  }

 private:
  /// Refuses host memory, and makes the collective's stream wait for bonsai's stream.
  void prepare(const void* x, const char* what) {
    cudaPointerAttributes a{};
    BONSAI_CUDA_CHECK(cudaPointerGetAttributes(&a, x));
    BONSAI_CHECK(a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged,
                 "NcclCommunicator::", what, ": the buffer is host memory; NCCL reduces device "
                 "buffers (send host data through host())");
    BONSAI_CUDA_CHECK(cudaEventRecord(m_ready, runtime().stream()));
    BONSAI_CUDA_CHECK(cudaStreamWaitEvent(m_stream, m_ready, 0));
  }
  void allreduce(void* x, std::size_t n, ncclDataType_t type, ncclRedOp_t op) {
    if (n == 0) return;
    prepare(x, "allreduce");
    detail::check_nccl(ncclAllReduce(x, x, n, type, op, m_comm, m_stream), "ncclAllReduce");
    BONSAI_CUDA_CHECK(cudaStreamSynchronize(m_stream));
  }

  MpiCommunicator& m_mpi;
  int m_device = 0;
  cudaStream_t m_stream = nullptr;
  cudaEvent_t m_ready = nullptr;  // bonsai's stream reached the collective
  ncclComm_t m_comm = nullptr;
};

}  // namespace bonsai::cuda
