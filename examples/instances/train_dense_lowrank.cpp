// train_gpt's training loop over Dense and LowRank FFNs (examples/train_run.hpp).
#include "../train_run.hpp"

BONSAI_TRAIN_INSTANCE(, bonsai::Dense<float>)
BONSAI_TRAIN_INSTANCE(, bonsai::LowRank<float>)
