// train_gpt's training loop over the block-structured FFNs, BlockDense and BlockShuffle
// (examples/train_run.hpp).
#include "../train_run.hpp"

BONSAI_TRAIN_INSTANCE(, bonsai::BlockDense<float>)
BONSAI_TRAIN_INSTANCE(, bonsai::BlockShuffle<float>)
