// bonsai/train/mpi_communicator.hpp — the Communicator over MPI (Open MPI, MPICH): one rank per
// process, started by `mpirun -np N`, on one machine or many. Buffers are host memory. Needs
// <mpi.h> and linking MPI (CMake: bonsai::mpi); nothing else in bonsai includes this header.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>

#include "communicator.hpp"

namespace bonsai {

class MpiCommunicator final : public Communicator {
 public:
  /// Joins MPI_COMM_WORLD, initialising MPI (funneled: OpenMP threads, MPI on the main thread)
  /// unless the program already has; the destructor finalises what it initialised.
  MpiCommunicator() {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      m_owns_mpi = true;
    }
    check(MPI_Comm_dup(MPI_COMM_WORLD, &m_comm), "MPI_Comm_dup");
    // Errors come back as codes (and become bonsai::Error) instead of ending the job.
    MPI_Comm_set_errhandler(m_comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m_comm, &m_rank);
    MPI_Comm_size(m_comm, &m_size);
    MPI_Comm local;
    check(MPI_Comm_split_type(m_comm, MPI_COMM_TYPE_SHARED, m_rank, MPI_INFO_NULL, &local),
          "MPI_Comm_split_type");
    MPI_Comm_rank(local, &m_local_rank);
    MPI_Comm_size(local, &m_local_size);
    MPI_Comm_free(&local);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  ~MpiCommunicator() override {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (finalised) return;
    MPI_Comm_free(&m_comm);
    if (m_owns_mpi) MPI_Finalize();
  }

  /// Whether this process was started by an MPI launcher (mpirun, mpiexec, srun with PMI):
  /// a trainer uses MPI then and a SingleProcess otherwise, without initialising MPI for nothing.
  static bool launched() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
      if (std::getenv(v)) return true;
    return false;
  }

  int rank() const noexcept override { return m_rank; }
  int size() const noexcept override { return m_size; }
  /// This rank's index among the ranks on its machine, and their number (for threads, GPUs).
  int local_rank() const noexcept { return m_local_rank; }
  int local_size() const noexcept { return m_local_size; }
  MPI_Comm comm() const noexcept { return m_comm; }

  void allreduce_sum(std::span<float> x) override { allreduce(x, MPI_FLOAT, MPI_SUM); }
  void allreduce_sum(std::span<double> x) override { allreduce(x, MPI_DOUBLE, MPI_SUM); }
  void allreduce_max(std::span<std::int64_t> x) override { allreduce(x, MPI_INT64_T, MPI_MAX); }
  void allreduce_max(std::span<std::uint8_t> x) override { allreduce(x, MPI_UINT8_T, MPI_MAX); }

  void broadcast_bytes(std::span<std::byte> bytes, int root) override {
    BONSAI_CHECK(root >= 0 && root < m_size, "MpiCommunicator::broadcast: root ", root,
                 " is not a rank (size ", m_size, ")");
    for_chunks(bytes, [&](std::byte* p, int n) {
      check(MPI_Bcast(p, n, MPI_BYTE, root, m_comm), "MPI_Bcast");
    });
  }

  void barrier() override { check(MPI_Barrier(m_comm), "MPI_Barrier"); }

  [[noreturn]] void abort(int code) noexcept override {
    MPI_Abort(m_comm, code);
    std::exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
  }

 private:
  template <class T>
  void allreduce(std::span<T> x, MPI_Datatype type, MPI_Op op) {
    for_chunks(x, [&](T* p, int n) {
      check(MPI_Allreduce(MPI_IN_PLACE, p, n, type, op, m_comm), "MPI_Allreduce");
    });
  }

  /// MPI counts are ints: longer buffers go in pieces of at most 2^30 elements.
  template <class T, class F>
  static void for_chunks(std::span<T> x, F&& f) {
    constexpr std::size_t most = std::size_t(1) << 30;
    for (std::size_t i = 0; i < x.size(); i += most)
      f(x.data() + i, int(std::min(most, x.size() - i)));
  }

  static void check(int code, const char* call) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    detail::fail("MPI error in ", call, ": ", std::string(text, std::size_t(length)));
  }

  MPI_Comm m_comm = MPI_COMM_NULL;
  int m_rank = 0, m_size = 1, m_local_rank = 0, m_local_size = 1;
  bool m_owns_mpi = false;
};

}  // namespace bonsai
