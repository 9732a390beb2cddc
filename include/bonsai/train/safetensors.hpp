// bonsai/train/safetensors.hpp — the safetensors format: u64 LE header length N, an N-byte JSON
// header ({"__metadata__": {string: string}, name: {dtype, shape, data_offsets}}) padded with
// spaces to a multiple of 8, then the tensors' bytes back to back. SafetensorsFile reads and
// validates a file as strictly as the reference reader; SafetensorsWriter writes one as the
// reference writer does (tensors by descending alignment, then by name; no gaps).
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "atomic_file.hpp"

namespace bonsai {

static_assert(std::endian::native == std::endian::little,
              "safetensors and llm.c files are little-endian; bonsai reads them in place");

/// Every dtype of the format. Sub-byte types (F4, F6_*) are validated but not converted.
enum class Dtype {
  boolean, u8, i8, i16, u16, f16, bf16, i32, u32, f32, f64, i64, u64, c64,
  f8_e5m2, f8_e4m3, f8_e8m0, f8_e4m3fnuz, f8_e5m2fnuz, f4, f6_e2m3, f6_e3m2
};

namespace detail {
struct DtypeInfo {
  Dtype dtype;
  const char* name;
  int bits;
};
inline constexpr DtypeInfo dtype_table[] = {
    {Dtype::boolean, "BOOL", 8},     {Dtype::u8, "U8", 8},
    {Dtype::i8, "I8", 8},            {Dtype::i16, "I16", 16},
    {Dtype::u16, "U16", 16},         {Dtype::f16, "F16", 16},
    {Dtype::bf16, "BF16", 16},       {Dtype::i32, "I32", 32},
    {Dtype::u32, "U32", 32},         {Dtype::f32, "F32", 32},
    {Dtype::f64, "F64", 64},         {Dtype::i64, "I64", 64},
    {Dtype::u64, "U64", 64},         {Dtype::c64, "C64", 64},
    {Dtype::f8_e5m2, "F8_E5M2", 8},  {Dtype::f8_e4m3, "F8_E4M3", 8},
    {Dtype::f8_e8m0, "F8_E8M0", 8},  {Dtype::f8_e4m3fnuz, "F8_E4M3FNUZ", 8},
    {Dtype::f8_e5m2fnuz, "F8_E5M2FNUZ", 8}, {Dtype::f4, "F4", 4},
    {Dtype::f6_e2m3, "F6_E2M3", 6},  {Dtype::f6_e3m2, "F6_E3M2", 6},
};
inline const DtypeInfo& dtype_info(Dtype d) {
  for (const DtypeInfo& i : dtype_table)
    if (i.dtype == d) return i;
  fail("unknown Dtype ", static_cast<int>(d));
}
}  // namespace detail

/// "F32", "BF16", ... as written in the header.
inline const char* dtype_name(Dtype d) { return detail::dtype_info(d).name; }
/// Bits per element (4 and 6 for the sub-byte float types).
inline int dtype_bits(Dtype d) { return detail::dtype_info(d).bits; }
/// The dtype named `s` in a header, or nothing.
inline std::optional<Dtype> parse_dtype(std::string_view s) {
  for (const detail::DtypeInfo& i : detail::dtype_table)
    if (s == i.name) return i.dtype;
  return std::nullopt;
}

/// The dtype that stores a C++ scalar type as is.
template <class T>
inline constexpr Dtype dtype_of = [] {
  if constexpr (std::is_same_v<T, float>) return Dtype::f32;
  else if constexpr (std::is_same_v<T, double>) return Dtype::f64;
  else if constexpr (std::is_same_v<T, Eigen::half>) return Dtype::f16;
  else if constexpr (std::is_same_v<T, Eigen::bfloat16>) return Dtype::bf16;
  else if constexpr (std::is_same_v<T, bool>) return Dtype::boolean;
  else if constexpr (std::is_same_v<T, std::int8_t>) return Dtype::i8;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return Dtype::u8;
  else if constexpr (std::is_same_v<T, std::int16_t>) return Dtype::i16;
  else if constexpr (std::is_same_v<T, std::uint16_t>) return Dtype::u16;
  else if constexpr (std::is_same_v<T, std::int32_t>) return Dtype::i32;
  else if constexpr (std::is_same_v<T, std::uint32_t>) return Dtype::u32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return Dtype::i64;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return Dtype::u64;
  else static_assert(detail::dependent_false<T>, "no safetensors dtype for this scalar type");
}();

namespace detail {

/// Product of the extents, or nothing on overflow of index_t.
inline std::optional<index_t> checked_numel(std::span<const index_t> shape) {
  index_t n = 1;
  for (index_t e : shape)
    if (e < 0 || __builtin_mul_overflow(n, e, &n)) return std::nullopt;
  return n;
}

/// Bytes of `numel` elements of `d`, or nothing on overflow or a sub-byte remainder.
inline std::optional<index_t> checked_nbytes(Dtype d, index_t numel) {
  index_t bits = 0;
  if (__builtin_mul_overflow(numel, index_t(dtype_bits(d)), &bits) || bits % 8 != 0)
    return std::nullopt;
  return bits / 8;
}

/// One element of a floating dtype as double.
inline double float_at(Dtype d, const std::byte* p) {
  switch (d) {
    case Dtype::f32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case Dtype::f64: {
      double f;
      std::memcpy(&f, p, 8);
      return f;
    }
    case Dtype::f16: {
      std::uint16_t u;
      std::memcpy(&u, p, 2);
      return static_cast<double>(static_cast<float>(std::bit_cast<Eigen::half>(u)));
    }
    case Dtype::bf16: {
      std::uint16_t u;
      std::memcpy(&u, p, 2);
      return static_cast<double>(std::bit_cast<float>(std::uint32_t(u) << 16));
    }
    default: fail("float_at: ", dtype_name(d), " is not a floating dtype");
  }
}

/// Writes `v` as one element of a floating dtype (round to nearest even).
inline void store_float(Dtype d, double v, std::byte* p) {
  switch (d) {
    case Dtype::f32: {
      const float f = static_cast<float>(v);
      std::memcpy(p, &f, 4);
      return;
    }
    case Dtype::f64: std::memcpy(p, &v, 8); return;
    case Dtype::f16: {
      const auto u = std::bit_cast<std::uint16_t>(Eigen::half(static_cast<float>(v)));
      std::memcpy(p, &u, 2);
      return;
    }
    case Dtype::bf16: {
      const auto u = std::bit_cast<std::uint16_t>(Eigen::bfloat16(static_cast<float>(v)));
      std::memcpy(p, &u, 2);
      return;
    }
    default: fail("store_float: ", dtype_name(d), " is not a floating dtype");
  }
}

inline bool is_float_dtype(Dtype d) {
  return d == Dtype::f32 || d == Dtype::f64 || d == Dtype::f16 || d == Dtype::bf16;
}

}  // namespace detail

/// One tensor of a file: its bytes are a view into the SafetensorsFile that owns them.
struct SafeTensor {
  std::string name;
  Dtype dtype = Dtype::f32;
  std::vector<index_t> shape;
  std::span<const std::byte> bytes;
  index_t numel() const { return *detail::checked_numel(shape); }
};

/// A safetensors file read into memory and validated. Move-only (tensors view its buffer).
class SafetensorsFile {
 public:
  /// Reads and validates `path`; every defect throws bonsai::Error naming the file.
  static SafetensorsFile open(const std::filesystem::path& path) {
    return from_bytes(read_file_bytes(path), path.string());
  }

  /// Validates `bytes` as a safetensors file; `origin` names it in errors.
  static SafetensorsFile from_bytes(std::vector<std::byte> bytes, std::string origin) {
    SafetensorsFile f;
    f.m_origin = std::move(origin);
    f.m_bytes = std::move(bytes);
    f.parse();
    return f;
  }

  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  /// The file name (or origin) used in error messages.
  const std::string& origin() const noexcept { return m_origin; }
  const std::map<std::string, std::string>& metadata() const noexcept { return m_metadata; }
  /// The tensors in data order (by offset).
  const std::vector<SafeTensor>& tensors() const noexcept { return m_tensors; }
  /// Size of the JSON header in bytes (N), padding included.
  std::uint64_t header_size() const noexcept { return m_header_size; }

  const SafeTensor* find(std::string_view name) const {
    auto it = m_index.find(name);
    return it == m_index.end() ? nullptr : &m_tensors[it->second];
  }
  const SafeTensor& tensor(std::string_view name) const {
    const SafeTensor* t = find(name);
    BONSAI_CHECK(t != nullptr, m_origin, ": no tensor named '", name, "'");
    return *t;
  }

  /// Copies tensor `name` into `out`, converting F32/F64/F16/BF16 to a floating T; any other T
  /// must match the stored dtype exactly. A non-empty `expected_shape` must equal the stored
  /// shape (an empty one checks nothing); out.size() must equal the element count.
  template <class T>
  void read_into(std::string_view name, std::span<T> out,
                 std::span<const index_t> expected_shape = {}) const {
    const SafeTensor& t = tensor(name);
    check_shape(t, expected_shape);
    const index_t n = t.numel();
    BONSAI_CHECK(index_t(out.size()) == n, m_origin, ": tensor '", name, "' of shape ",
                 detail::shape_string(t.shape), " has ", n, " elements but the destination ",
                 "holds ", out.size());
    if constexpr (std::is_floating_point_v<T>) {
      if (t.dtype == dtype_of<T>) {
        if (n) std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
        return;
      }
      BONSAI_CHECK(detail::is_float_dtype(t.dtype), m_origin, ": tensor '", name, "' is ",
                   dtype_name(t.dtype), ", which cannot be read as ", dtype_name(dtype_of<T>));
      const std::size_t step = std::size_t(dtype_bits(t.dtype) / 8);
      for (index_t i = 0; i < n; ++i)
        out[i] = static_cast<T>(detail::float_at(t.dtype, t.bytes.data() + i * step));
    } else {
      BONSAI_CHECK(t.dtype == dtype_of<T>, m_origin, ": tensor '", name, "' is ",
                   dtype_name(t.dtype), ", which cannot be read as ", dtype_name(dtype_of<T>));
      if (n) std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
    }
  }

  /// Tensor `name` as a vector of T (see read_into).
  template <class T>
  std::vector<T> read_as(std::string_view name, std::span<const index_t> expected_shape = {}) const {
    const SafeTensor& t = tensor(name);
    check_shape(t, expected_shape);
    std::vector<T> out(static_cast<std::size_t>(t.numel()));
    read_into<T>(name, std::span<T>(out), expected_shape);
    return out;
  }
  template <class T>
  std::vector<T> read_as(std::string_view name, std::initializer_list<index_t> expected_shape) const {
    return read_as<T>(name, std::span<const index_t>(expected_shape.begin(), expected_shape.size()));
  }

 private:
  SafetensorsFile() = default;

  void check_shape(const SafeTensor& t, std::span<const index_t> expected) const {
    BONSAI_CHECK(expected.empty() || std::ranges::equal(expected, t.shape), m_origin,
                 ": tensor '", t.name, "' has shape ", detail::shape_string(t.shape),
                 " but ", detail::shape_string(expected), " was expected");
  }

  template <class... Parts>
  [[noreturn]] void bad(Parts&&... parts) const {
    detail::fail(m_origin, ": invalid safetensors file: ", std::forward<Parts>(parts)...);
  }

  static index_t json_extent(const nlohmann::json& j) {
    if (j.is_number_unsigned()) {
      const auto u = j.get<std::uint64_t>();
      return u > std::uint64_t(std::numeric_limits<index_t>::max()) ? -1 : index_t(u);
    }
    if (j.is_number_integer()) return j.get<std::int64_t>() < 0 ? -1 : j.get<std::int64_t>();
    return -2;  // not an integer
  }

  void parse() {
    static constexpr std::uint64_t max_header = 100'000'000;
    const std::uint64_t file_size = m_bytes.size();
    if (file_size < 8) bad("the file is ", file_size, " bytes, shorter than the 8-byte header length");
    std::uint64_t n = 0;
    std::memcpy(&n, m_bytes.data(), 8);
    if (n > max_header) bad("header length ", n, " exceeds the limit of ", max_header, " bytes");
    if (n > file_size - 8)
      bad("header length ", n, " runs past the end of the ", file_size, "-byte file");
    m_header_size = n;

    // Parse the header, recording the first duplicated key of any object (nlohmann keeps the
    // last value of a duplicate silently).
    std::vector<std::set<std::string>> keys;
    std::string duplicate;
    auto on_event = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
      using E = nlohmann::json::parse_event_t;
      if (ev == E::object_start) keys.emplace_back();
      else if (ev == E::object_end) keys.pop_back();
      else if (ev == E::key && !keys.back().insert(parsed.get<std::string>()).second &&
               duplicate.empty())
        duplicate = parsed.get<std::string>();
      return true;
    };
    const char* text = reinterpret_cast<const char*>(m_bytes.data()) + 8;
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(text, text + n, on_event);
    } catch (const nlohmann::json::exception& e) {
      bad("the header is not valid UTF-8 JSON: ", e.what());
    }
    if (!duplicate.empty()) bad("the header repeats the key '", duplicate, "'");
    if (!header.is_object()) bad("the header is not a JSON object");

    const std::uint64_t buffer_size = file_size - 8 - n;
    const std::byte* buffer = m_bytes.data() + 8 + n;
    struct Extent {
      std::uint64_t begin, end;
      std::size_t index;
    };
    std::vector<Extent> extents;
    for (const auto& [name, entry] : std::as_const(header).items()) {
      if (name == "__metadata__") {
        if (entry.is_null()) continue;
        if (!entry.is_object()) bad("__metadata__ is not an object");
        for (const auto& [key, value] : entry.items()) {
          if (!value.is_string()) bad("__metadata__ value of '", key, "' is not a string");
          m_metadata.emplace(key, value.get<std::string>());
        }
        continue;
      }
      SafeTensor t;
      t.name = name;
      if (!entry.is_object()) bad("tensor '", name, "': the entry is not an object");
      for (const char* field : {"dtype", "shape", "data_offsets"})
        if (!entry.contains(field)) bad("tensor '", name, "': missing \"", field, "\"");
      const nlohmann::json& dtype = entry["dtype"];
      if (!dtype.is_string()) bad("tensor '", name, "': dtype is not a string");
      const std::optional<Dtype> d = parse_dtype(dtype.get<std::string>());
      if (!d) bad("tensor '", name, "': unknown dtype '", dtype.get<std::string>(), "'");
      t.dtype = *d;
      const nlohmann::json& shape = entry["shape"];
      if (!shape.is_array()) bad("tensor '", name, "': shape is not an array");
      for (const nlohmann::json& e : shape) {
        const index_t x = json_extent(e);
        if (x < 0) bad("tensor '", name, "': shape ", shape.dump(), " has an extent that is not a non-negative 64-bit integer");
        t.shape.push_back(x);
      }
      const nlohmann::json& offsets = entry["data_offsets"];
      if (!offsets.is_array() || offsets.size() != 2)
        bad("tensor '", name, "': data_offsets is not an array of two integers");
      const index_t begin = json_extent(offsets[0]), end = json_extent(offsets[1]);
      if (begin < 0 || end < 0 || end < begin)
        bad("tensor '", name, "': data_offsets ", offsets.dump(), " are not 0 <= begin <= end");
      const std::optional<index_t> numel = detail::checked_numel(t.shape);
      const std::optional<index_t> nbytes =
          numel ? detail::checked_nbytes(t.dtype, *numel) : std::nullopt;
      if (!nbytes)
        bad("tensor '", name, "': shape ", detail::shape_string(t.shape), " of ",
            dtype_name(t.dtype), " overflows or does not end on a byte boundary");
      if (end - begin != *nbytes)
        bad("tensor '", name, "': data_offsets ", offsets.dump(), " span ", end - begin,
            " bytes but ", dtype_name(t.dtype), " ", detail::shape_string(t.shape), " needs ",
            *nbytes);
      extents.push_back({std::uint64_t(begin), std::uint64_t(end), m_tensors.size()});
      m_tensors.push_back(std::move(t));
    }

    // The extents must tile [0, buffer_size) exactly.
    std::sort(extents.begin(), extents.end(), [](const Extent& a, const Extent& b) {
      return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
    });
    std::uint64_t at = 0;
    for (const Extent& e : extents) {
      const std::string& name = m_tensors[e.index].name;
      if (e.begin != at)
        bad("tensor '", name, "' begins at byte ", e.begin, " of the data buffer but the ",
            "previous tensor ends at ", at, " (offsets must tile the buffer without gaps or overlap)");
      at = e.end;
    }
    if (at != buffer_size)
      bad("the tensors cover ", at, " bytes but the data buffer holds ", buffer_size,
          " (header ", n, " bytes, file ", file_size, " bytes)");

    std::vector<SafeTensor> ordered;
    ordered.reserve(m_tensors.size());
    for (const Extent& e : extents) {
      SafeTensor& t = m_tensors[e.index];
      t.bytes = std::span<const std::byte>(buffer + e.begin, e.end - e.begin);
      m_index.emplace(t.name, ordered.size());
      ordered.push_back(std::move(t));
    }
    m_tensors = std::move(ordered);
  }

  std::string m_origin;
  std::vector<std::byte> m_bytes;
  std::uint64_t m_header_size = 0;
  std::map<std::string, std::string> m_metadata;
  std::vector<SafeTensor> m_tensors;
  std::map<std::string, std::size_t, std::less<>> m_index;
};

/// Collects tensors and metadata, then writes a safetensors file atomically. add() keeps a
/// pointer to the caller's data, which must stay alive until write(); add_converted() keeps
/// its own converted copy. The metadata always has "format": "pt" unless overridden.
class SafetensorsWriter {
 public:
  /// A tensor whose bytes are already `dtype`, little-endian, C order: numel * bits / 8 bytes.
  void add(std::string name, Dtype dtype, std::vector<index_t> shape, const void* data) {
    const std::optional<index_t> numel = detail::checked_numel(shape);
    const std::optional<index_t> nbytes =
        numel ? detail::checked_nbytes(dtype, *numel) : std::nullopt;
    BONSAI_CHECK(nbytes.has_value(), "SafetensorsWriter: tensor '", name, "' has shape ",
                 detail::shape_string(shape), " of ", dtype_name(dtype),
                 ", which is negative, overflows or does not end on a byte boundary");
    BONSAI_CHECK(name != "__metadata__", "SafetensorsWriter: '__metadata__' is not a tensor name");
    BONSAI_CHECK(data != nullptr || *nbytes == 0, "SafetensorsWriter: tensor '", name,
                 "' has no data");
    BONSAI_CHECK(m_names.insert(name).second, "SafetensorsWriter: duplicate tensor '", name, "'");
    m_entries.push_back({std::move(name), dtype, std::move(shape),
                         static_cast<const std::byte*>(data), *nbytes, {}});
  }

  /// A tensor of C++ scalars stored as dtype_of<T>; values.size() must equal the shape's size.
  template <class T>
  void add(std::string name, std::vector<index_t> shape, std::span<const T> values) {
    check_count(name, shape, values.size());
    add(std::move(name), dtype_of<T>, std::move(shape), values.data());
  }

  /// A temporary vector would dangle before write(): keep it alive and pass a span.
  template <class T>
  void add(std::string name, std::vector<index_t> shape, std::vector<T>&& values) = delete;

  /// A floating tensor converted to `dtype` (F32, F64, F16 or BF16; round to nearest even).
  template <class T>
  void add_converted(std::string name, Dtype dtype, std::vector<index_t> shape,
                     std::span<const T> values) {
    static_assert(std::is_floating_point_v<T>, "add_converted converts float or double");
    BONSAI_CHECK(detail::is_float_dtype(dtype), "SafetensorsWriter: cannot convert tensor '",
                 name, "' to ", dtype_name(dtype));
    check_count(name, shape, values.size());
    const std::size_t step = std::size_t(dtype_bits(dtype) / 8);
    std::vector<std::byte> bytes(values.size() * step);
    for (std::size_t i = 0; i < values.size(); ++i)
      detail::store_float(dtype, static_cast<double>(values[i]), bytes.data() + i * step);
    add(std::move(name), dtype, std::move(shape), bytes.data());
    m_entries.back().owned = std::move(bytes);  // the heap buffer does not move
  }

  void metadata(std::string key, std::string value) { m_metadata[std::move(key)] = std::move(value); }

  /// The padded JSON header (N bytes, N a multiple of 8, starting with '{').
  std::string header() const {
    nlohmann::ordered_json h;
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : m_metadata) meta[k] = v;
    h["__metadata__"] = std::move(meta);
    std::uint64_t at = 0;
    for (const Entry* e : ordered()) {
      h[e->name] = {{"dtype", dtype_name(e->dtype)},
                    {"shape", e->shape},
                    {"data_offsets", {at, at + std::uint64_t(e->nbytes)}}};
      at += std::uint64_t(e->nbytes);
    }
    std::string text = h.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    return text;
  }

  /// Writes the file atomically (temporary, fsync, rename).
  void write(const std::filesystem::path& path) const {
    const std::string text = header();
    const std::uint64_t n = text.size();
    AtomicFile f(path);
    f.write(&n, 8);
    f.write(text);
    for (const Entry* e : ordered())
      if (e->nbytes) f.write(e->data, std::size_t(e->nbytes));
    f.commit();
  }

 private:
  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<index_t> shape;
    const std::byte* data;
    index_t nbytes;
    std::vector<std::byte> owned;
  };

  static void check_count(const std::string& name, const std::vector<index_t>& shape,
                          std::size_t count) {
    const std::optional<index_t> numel = detail::checked_numel(shape);
    BONSAI_CHECK(numel && *numel == index_t(count), "SafetensorsWriter: tensor '", name,
                 "' has shape ", detail::shape_string(shape), " but ", count, " values");
  }

  /// The reference writer's order: descending element size (alignment), then name.
  std::vector<const Entry*> ordered() const {
    std::vector<const Entry*> out;
    for (const Entry& e : m_entries) out.push_back(&e);
    std::sort(out.begin(), out.end(), [](const Entry* a, const Entry* b) {
      const int aa = dtype_bits(a->dtype) / 8, ab = dtype_bits(b->dtype) / 8;
      return aa != ab ? aa > ab : a->name < b->name;
    });
    return out;
  }

  std::vector<Entry> m_entries;
  std::set<std::string> m_names;
  std::map<std::string, std::string> m_metadata{{"format", "pt"}};
};

}  // namespace bonsai
