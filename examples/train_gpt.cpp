// train_gpt — train a GPT-style language model on the CPU from bonsai's parts.
//
//   build/cpu-release/examples/train_gpt --train "data/brown/gpt2/train_*.bin" \
//       --val "data/brown/gpt2/val_*.bin" --tokenizer data/gpt2 --ffn lowrank --ffn-params 0.32
//
// Reads llm.c token shards, trains with AdamW (warm-up + cosine, global-norm clipping, gradient
// accumulation), evaluates validation loss and perplexity, writes metrics.csv / main.log and
// atomic safetensors checkpoints into --out, resumes bit-for-bit with --resume, and samples
// text at the end. A non-finite loss, gradient or parameter stops the run with a report naming
// the step and the first non-finite tensor (the checkpoints stay), or, with --on-divergence
// rollback, returns to the last checkpoint with a lower learning rate. With --sgt the
// structured FFNs train with dense guides (self-guided training) that are released, and freed,
// when their weight reaches 0. With --grow the model grows at the given steps (Net2Net,
// StackBERT, MSLT, bert2BERT, LEMON, MSG with its masks ramped in, the learned operators LiGO
// and Mango trained for a few steps first, or sparse upcycling of the FFNs into
// Mixture-of-Experts layers), its optimizer state and learning rate carried across as
// --grow-state and --grow-lr say. With --sat-rate each step computes only the heads and FFN
// channels that matter (sparsity-accelerated training), returning to dense along the ladder
// schedule. With --moe-experts every --moe-every-th FFN is a Mixture-of-Experts layer. The FFN
// structure is picked once, in main(), through a closed switch; the training loop below it
// (train_run.hpp) is statically typed on it.
//
// Data parallel: built with MPI (cmake -DBONSAI_WITH_MPI=ON), `mpirun -np R train_gpt ...` runs
// R ranks. Each reads its slices of every global batch (R x --grad-accum micro-batches of
// --batch sequences), the gradients are summed over ranks in one all-reduce, and every rank
// takes the same AdamW step; rank 0 alone prints, logs, evaluates and writes checkpoints, and
// broadcasts what it loads. Two ranks reproduce one process with twice the micro-batches bit for
// bit. Ranks must hold identical parameters and optimizer state, which every checkpoint checks.
#include <fmt/core.h>

#include <cstdio>
#include <memory>
#include <thread>

#include <bonsai/bonsai.hpp>
#include <bonsai/train/communicator.hpp>

#include "train_options.hpp"
#if BONSAI_WITH_MPI
#include <bonsai/train/mpi_communicator.hpp>
#endif

using namespace bonsai;

/// The run of one FFN structure Map (train_run.hpp), compiled in instances/, two structures to a
/// file; this file sees only its declaration.
template <class Map>
int train(const Options& o, const GptConfig& config, Communicator& comm, const RunInputs& inputs);

/// MPI when an MPI launcher started this process (and MPI is built in), else one process.
static std::unique_ptr<Communicator> make_communicator() {
#if BONSAI_WITH_MPI
  if (MpiCommunicator::launched()) return std::make_unique<MpiCommunicator>();
#else
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!size) size = std::getenv("PMI_SIZE");
  BONSAI_CHECK(!size || std::string_view(size) == "1", "started by an MPI launcher with ", size,
               " ranks, but this train_gpt was built without MPI (configure with "
               "-DBONSAI_WITH_MPI=ON): every rank would train alone into the same --out");
#endif
  return std::make_unique<SingleProcess>();
}

/// The cores of this machine shared by the ranks on it (at least 1 thread each).
static int threads_per_rank([[maybe_unused]] const Communicator& comm) {
  int local = 1;
#if BONSAI_WITH_MPI
  if (const auto* mpi = dynamic_cast<const MpiCommunicator*>(&comm)) local = mpi->local_size();
#endif
  return std::max(1, int(std::thread::hardware_concurrency()) / local);
}

int main(int argc, char** argv) {
  CLI::App app{"train_gpt: train a GPT-style model with structured FFNs on the CPU"};
  Options o;
  GptConfig c;
  ModelFlags flags;
  add_train_options(app, o, c, flags);
  CLI11_PARSE(app, argc, argv);

  std::unique_ptr<Communicator> comm;
  try {
    comm = make_communicator();
    if (comm->size() > 1 && o.threads == 0) o.threads = threads_per_rank(*comm);
    if (!comm->is_root() && !std::freopen("/dev/null", "w", stdout))  // rank 0 alone prints
      detail::fail("cannot silence the standard output of rank ", comm->rank());
    set_threads(o.threads);
    const RunInputs inputs = prepare_run(app, c, flags, o);  // every flag and file, checked
    // The closed switch: everything below train<Map> is statically typed.
    return with_ffn_structure<float>(c, [&](auto map) {
      return train<typename decltype(map)::type>(o, c, *comm, inputs);
    });
  } catch (const std::exception& e) {
    if (!comm || comm->size() == 1) {
      fmt::print(stderr, "train_gpt: {}\n", e.what());
      return 1;
    }
    fmt::print(stderr, "train_gpt: rank {}: {}\n", comm->rank(), e.what());
    std::fflush(stderr);
    comm->abort(1);  // the other ranks would wait for this one forever
  }
}
