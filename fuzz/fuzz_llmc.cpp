// Fuzzes the llm.c model-file import (the 256-int header, its sizes against the file's, fp32
// and bf16 payloads).
#include "fuzz.hpp"

#include <bonsai/train/gpt2_io.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace bonsai;
  return fuzz::errors_only([&] {
    const auto path = fuzz::write_scratch("model.bin", fuzz::as_text(data, size));
    const ImportedModel m = import_llmc(path);
    for (const ParamInfo& p : gpt2_parameters(m.config))
      fuzz::require(m.tensors.at(p.name).data.size() == std::size_t(*detail::checked_numel(p.shape)),
                    "every imported tensor has its shape's element count");
  });
}
