// Gpt<Map, Map, Device> over every FFN structure in fp32 and bf16 (instances/models_device.cuh).
// One file: the kernels every structure runs are most of each model's compilation (nvcc, Zen 3:
// one structure's two models 45 s, all eight 53 s).
#include "models_device.cuh"

BONSAI_PROJECT_DEVICE_MODELS(, Dense)
BONSAI_PROJECT_DEVICE_MODELS(, LowRank)
BONSAI_PROJECT_DEVICE_MODELS(, BlockDense)
BONSAI_PROJECT_DEVICE_MODELS(, BlockShuffle)
