// supports<Space>(config): the CPU runs every model; the GPU refuses, with a sentence naming the
// gap, Mixture-of-Experts layers and head widths its attention kernels lack.
#include <doctest/doctest.h>

#include <bonsai/nn/supports.hpp>

using namespace bonsai;

TEST_CASE("supports: the host runs every model; the device names what it lacks") {
  GptConfig c;  // GPT-2 124M: 12 heads of 64
  CHECK(supports<Host>(c));
  CHECK(supports<Device>(c));
  CHECK(unsupported<Device>(c).empty());

  GptConfig moe = c;
  moe.moe_experts = 8;
  CHECK(supports<Host>(moe));
  CHECK_FALSE(supports<Device>(moe));
  CHECK(unsupported<Device>(moe).find("Mixture-of-Experts layers (moe_experts = 8)") != std::string::npos);

  GptConfig odd = c;
  odd.d_model = 384;
  odd.n_head = 4;  // heads of 96
  CHECK(supports<Host>(odd));
  CHECK_THROWS_WITH(require_support<Device>(odd, "train_gpt_cuda"),
                    doctest::Contains("train_gpt_cuda: the CUDA attention kernels take heads of width "
                                      "32, 64 or 128, but this model's heads are 96 wide"));
  odd.n_head = 3;  // heads of 128
  CHECK(supports<Device>(odd));
}
