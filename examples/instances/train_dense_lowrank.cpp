// train_gpt's training loop over Dense and LowRank FFNs (examples/train_loop.hpp).
#include "../train_loop.hpp"

BONSAI_TRAIN_INSTANCE(, bonsai::Dense<float>)
BONSAI_TRAIN_INSTANCE(, bonsai::LowRank<float>)
