// Fuzzes the safetensors reader (header JSON, dtypes, shapes, offsets, coverage of the data
// section) and, on files it accepts, the Hugging Face GPT-2 import that reads its tensors.
#include "fuzz.hpp"

#include <bonsai/train/gpt2_io.hpp>
#include <bonsai/train/safetensors.hpp>

#include <cstring>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace bonsai;
  return fuzz::errors_only([&] {
    std::vector<std::byte> bytes(size);
    if (size) std::memcpy(bytes.data(), data, size);
    const SafetensorsFile file = SafetensorsFile::from_bytes(std::move(bytes), "fuzz input");
    std::size_t touched = 0;
    for (const SafeTensor& t : file.tensors()) {
      if (detail::is_float_dtype(t.dtype)) {
        const std::vector<float> values = file.read_as<float>(t.name);
        fuzz::require(index_t(values.size()) == t.numel(), "read_as gives numel values");
      }
      for (const std::byte b : t.bytes) touched += std::size_t(b);  // every byte in bounds
    }
    (void)touched;
    // A model folder without config.json: the import infers the configuration from the shapes.
    const auto dir = fuzz::scratch() / "hf";
    std::filesystem::create_directories(dir);
    std::filesystem::remove(dir / "config.json");
    fuzz::write_scratch("hf/model.safetensors", fuzz::as_text(data, size));
    (void)import_hf(dir);
  });
}
