// Gpt<LowRank<T>, LowRank<T>, Device> in fp32 and bf16 (instances/models_device.cuh).
#include "models_device.cuh"

BONSAI_PROJECT_DEVICE_MODELS(, LowRank)
