// CUDA rotary position embeddings against the CPU rope_forward / rope_backward in double: the
// rotated query and key columns after forward and after backward, for multi-head, grouped-query
// and multi-query layouts, sequence lengths 1, 17 and 64, head widths 32, 64 and 128 (and odd
// ones), position offsets 0 and 5, in fp32 and bf16, on contiguous, row-strided and misaligned
// views (16-byte vector and element kernels). Every column outside the rotated ones (values and
// the NaN-poisoned padding around the view) must come back bit for bit. Also: backward undoes
// forward (the rotation is orthogonal), the device table equals the CPU table rounded to float,
// and bad shapes throw. Skipped without a device.
#include <doctest/doctest.h>

#include <bonsai/cuda.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

// Inside namespace bonsai, `cuda` names bonsai::cuda first, not the global ::cuda of CCCL.
namespace bonsai {
namespace {


#define SKIP_WITHOUT_DEVICE()           \
  if (!cuda::available()) {             \
    MESSAGE("no CUDA device: skipped"); \
    return;                             \
  }

/// Relative Frobenius error bounds: an fp32 rotation is a couple of roundings from the exact one.
template <class U>
double tolerance() {
  return std::is_same_v<U, float> ? 1e-6 : 1e-2;
}

/// ||a - ref||_F / ||ref||_F over columns [c0, c1) of two matrices (NaN anywhere fails).
double rel_fro_cols(const Matrix<double>& a, const Matrix<double>& ref, index_t c0, index_t c1) {
  double num = 0, den = 0;
  for (index_t r = 0; r < ref.rows(); ++r)
    for (index_t c = c0; c < c1; ++c) {
      const double d = a(r, c) - ref(r, c);
      num += d * d;
      den += ref(r, c) * ref(r, c);
    }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

/// True when every column outside [c0, c1) of `got` equals `before` (NaN stays NaN).
bool untouched_outside(const Matrix<double>& got, const Matrix<double>& before, index_t c0, index_t c1) {
  for (index_t r = 0; r < before.rows(); ++r)
    for (index_t c = 0; c < before.cols(); ++c) {
      if (c >= c0 && c < c1) continue;
      const double b = before(r, c), g = got(r, c);
      if (std::isnan(b) ? !std::isnan(g) : !(g == b)) return false;
    }
  return true;
}

/// A (rows, width) matrix: random normal values rounded through U in columns [c0, c1), NaN in
/// the others (the padding around the view).
template <class U>
Matrix<double> random_padded(index_t rows, index_t width, index_t c0, index_t c1, Rng& rng) {
  Matrix<double> m(rows, width);
  fill_normal(m.view(), rng);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < width; ++c)
      m(r, c) = (c >= c0 && c < c1) ? double(cuda::convert<U>(float(m(r, c))))
                                    : std::numeric_limits<double>::quiet_NaN();
  return m;
}

struct Case {
  index_t batch, seq, heads, kv_heads, head_dim, pos;
  index_t offset = 0;  // the view starts at this column of its buffer
  index_t pad = 0;     // columns after the view: row stride offset + (A + 2KV) + pad
  double base = 10000.0;
  bool table_from_cpu = false;  // copy the CPU table to the device instead of building it there
};

/// rope_forward and rope_backward of one case on the CPU (double) and the device (U), and
/// backward(forward(x)) == x on the device.
template <class U>
void check_rope(const Case& k) {
  const AttentionShape s{k.batch, k.seq, k.heads, k.kv_heads, k.head_dim};
  INFO((std::is_same_v<U, float> ? "float " : "bf16 "), s, ", pos ", k.pos, ", column offset ", k.offset,
       ", pad ", k.pad, ", base ", k.base, (k.table_from_cpu ? ", table copied from the CPU" : ""));
  const index_t n = s.tokens(), w = s.qkv_width(), width = k.offset + w + k.pad;
  const index_t c0 = k.offset, c1 = k.offset + w;                         // the view
  const index_t r1 = k.offset + (s.heads + s.kv_heads) * s.head_dim;      // rotated: [c0, r1)
  const index_t max_seq = k.pos + k.seq + 3;
  Rng rng(0x807E + 131 * k.seq + 17 * k.head_dim + 7 * k.kv_heads + k.pos + 3 * k.offset);
  const auto x = random_padded<U>(n, width, c0, c1, rng);   // (B*T, width) qkv in its buffer
  const auto dy = random_padded<U>(n, width, c0, c1, rng);  // (B*T, width) dqkv in its buffer

  // CPU reference in double.
  const cpu::RopeTable<double> host_table(max_seq, s.head_dim, k.base);
  Matrix<double> yref(n, width), dxref(n, width);
  std::copy(x.data(), x.data() + x.size(), yref.data());
  std::copy(dy.data(), dy.data() + dy.size(), dxref.data());
  cpu::rope_forward(columns(yref.view(), c0, w), s, host_table, k.pos);
  cpu::rope_backward(columns(dxref.view(), c0, w), s, host_table, k.pos);

  // The same on the device in U.
  const cuda::RopeTable table =
      k.table_from_cpu ? cuda::RopeTable(host_table) : cuda::RopeTable(max_seq, s.head_dim, k.base);
  auto xd = cuda::to_device<U>(x.view());
  auto dyd = cuda::to_device<U>(dy.view());
  cuda::rope_forward(columns(xd.view(), c0, w), s, table, k.pos);
  cuda::rope_backward(columns(dyd.view(), c0, w), s, table, k.pos);
  cuda::synchronize();
  const double tol = tolerance<U>();
  const auto y = cuda::to_host<double>(xd.view());
  const auto dx = cuda::to_host<double>(dyd.view());
  CHECK(rel_fro_cols(y, yref, c0, r1) <= tol);
  CHECK(rel_fro_cols(dx, dxref, c0, r1) <= tol);
  CHECK(untouched_outside(y, x, c0, r1));
  CHECK(untouched_outside(dx, dy, c0, r1));

  // backward(forward(x)) = x: the rotation is orthogonal.
  cuda::rope_backward(columns(xd.view(), c0, w), s, table, k.pos);
  cuda::synchronize();
  const auto back = cuda::to_host<double>(xd.view());
  CHECK(rel_fro_cols(back, x, c0, r1) <= tol);
  CHECK(untouched_outside(back, x, c0, r1));
}

template <class U>
void check_grid() {
  for (index_t seq : {index_t(1), index_t(17), index_t(64)})
    for (index_t kv : {index_t(4), index_t(2), index_t(1)})
      for (index_t hd : {index_t(32), index_t(64), index_t(128)})
        for (index_t pos : {index_t(0), index_t(5)}) {
          Case k{2, seq, 4, kv, hd, pos};
          k.table_from_cpu = pos == 5;
          check_rope<U>(k);
        }
}

template <class U>
void check_layouts() {
  // ld = width + 8 keeps 16-byte rows (vector kernel); offset 1 and pad 3 do not (element kernel).
  check_rope<U>({2, 17, 4, 2, 64, 5, 0, 8});
  check_rope<U>({2, 17, 4, 2, 64, 5, 1, 3});
  check_rope<U>({3, 64, 4, 1, 128, 0, 1, 0});
  // Odd head widths: half = 3 and 5 (element kernel); half = 4 (vectors for float only).
  check_rope<U>({2, 17, 4, 2, 6, 5});
  check_rope<U>({1, 77, 3, 1, 10, 0});
  check_rope<U>({2, 33, 4, 4, 8, 5});
  // Many heads: rows of more than 256 units, so each thread does several (Llama-like GQA).
  check_rope<U>({2, 64, 32, 8, 128, 5});
  check_rope<U>({1, 77, 12, 3, 64, 0, 0, 0, 500000.0});
  check_rope<U>({3, 19, 12, 4, 96, 2, 0, 0, 500000.0, true});
}

/// The message of the bonsai::Error that f throws ("" when it throws none).
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

TEST_CASE("cuda: rope_forward and rope_backward match the CPU reference in fp32") {
  SKIP_WITHOUT_DEVICE();
  check_grid<float>();
}

TEST_CASE("cuda: rope_forward and rope_backward match the CPU reference in bf16") {
  SKIP_WITHOUT_DEVICE();
  check_grid<bf16>();
}

TEST_CASE("cuda: RoPE on strided, misaligned, odd-width and many-head views matches the CPU") {
  SKIP_WITHOUT_DEVICE();
  check_layouts<float>();
  check_layouts<bf16>();
}

TEST_CASE("cuda: the device RopeTable is the CPU RopeTable rounded to float") {
  SKIP_WITHOUT_DEVICE();
  const index_t max_seq = 100, hd = 64, half = hd / 2;
  for (double base : {10000.0, 500000.0}) {
    INFO("base ", base);
    const cpu::RopeTable<double> hd_table(max_seq, hd, base);
    const cpu::RopeTable<float> hf_table(max_seq, hd, base);
    const cpu::RopeTable<bf16> hb_table(max_seq, hd, base);
    const cuda::RopeTable built(max_seq, hd, base), from_double(hd_table), from_float(hf_table),
        from_bf16(hb_table);
    for (const cuda::RopeTable* t : {&built, &from_double, &from_float, &from_bf16}) {
      CHECK(t->max_seq() == max_seq);
      CHECK(t->head_dim() == hd);
      CHECK(t->base() == base);
    }
    const auto c = cuda::to_host<float>(built.cos_view()), sn = cuda::to_host<float>(built.sin_view());
    const auto cd = cuda::to_host<float>(from_double.cos_view()), sd = cuda::to_host<float>(from_double.sin_view());
    const auto cf = cuda::to_host<float>(from_float.cos_view()), sf = cuda::to_host<float>(from_float.sin_view());
    const auto cb = cuda::to_host<float>(from_bf16.cos_view()), sb = cuda::to_host<float>(from_bf16.sin_view());
    bool same = true, bf16_same = true;
    for (index_t p = 0; p < max_seq; ++p)
      for (index_t i = 0; i < half; ++i) {
        // Built on the device side, copied from the double table and from the float table: the
        // same float values, bit for bit.
        same = same && c(p, i) == float(hd_table.cos(p)[i]) && sn(p, i) == float(hd_table.sin(p)[i]);
        same = same && cd(p, i) == c(p, i) && sd(p, i) == sn(p, i);
        same = same && cf(p, i) == hf_table.cos(p)[i] && sf(p, i) == hf_table.sin(p)[i];
        bf16_same = bf16_same && cb(p, i) == float(hb_table.cos(p)[i]) && sb(p, i) == float(hb_table.sin(p)[i]);
      }
    CHECK(same);
    CHECK(bf16_same);
  }
  CHECK(contains(error_message([] { cuda::RopeTable t(10, 7); }), "head_dim = 7"));
  CHECK(contains(error_message([] { cuda::RopeTable t(0, 8); }), "max_seq = 0"));
}

TEST_CASE("cuda: RoPE rejects bad shapes") {
  SKIP_WITHOUT_DEVICE();
  const AttentionShape s{2, 17, 4, 2, 32};  // qkv (34, 256)
  const cuda::RopeTable table(20, 32);
  Matrix<float> host(34, 257);
  Rng rng(5);
  fill_normal(host.view(), rng);
  auto qkv = cuda::to_device<float>(host.view());  // (34, 257)
  const auto good = columns(qkv.view(), 0, 256);

  // The right shape runs.
  CHECK(error_message([&] { cuda::rope_forward(good, s, table, 3); }) == "");
  CHECK(error_message([&] { cuda::rope_backward(good, s, table, 3); }) == "");
  cuda::synchronize();
  const auto before = cuda::to_host<float>(qkv.view());

  // One column too many, one row too few, a column stride of 2.
  std::string msg = error_message([&] { cuda::rope_forward(qkv.view(), s, table); });
  CHECK(contains(msg, "rope_forward: qkv has shape (34, 257)"));
  CHECK(contains(msg, "takes (34, 256)"));
  msg = error_message([&] {
    cuda::rope_backward(matrix_view<Device>(qkv.data(), 33, 256, 257), s, table);
  });
  CHECK(contains(msg, "rope_backward: qkv has shape (33, 256)"));
  CHECK(contains(msg, "takes (34, 256)"));
  msg = error_message([&] {
    cuda::rope_forward(MatrixView<float, Device>(qkv.data(), {34, 128}, {257, 2}), s, table);
  });
  CHECK(contains(msg, "contiguous rows"));
  // A query-head count that is not a multiple of the kv heads.
  msg = error_message([&] {
    cuda::rope_forward(matrix_view<Device>(qkv.data(), 34, 224, 257), AttentionShape{2, 17, 3, 2, 32},
                       table);
  });
  CHECK(contains(msg, "not divisible"));
  // A table of another head width.
  const cuda::RopeTable table64(20, 64);
  msg = error_message([&] { cuda::rope_forward(good, s, table64); });
  CHECK(contains(msg, "rope_forward: the RopeTable has head_dim 64"));
  // Positions past the table, and a negative offset.
  msg = error_message([&] { cuda::rope_forward(good, s, table, 4); });
  CHECK(contains(msg, "positions [4, 21) exceed the RopeTable's max_seq = 20"));
  msg = error_message([&] { cuda::rope_backward(good, s, table, -1); });
  CHECK(contains(msg, "rope_backward: positions [-1, 16)"));
  // An empty table.
  msg = error_message([&] { cuda::rope_forward(good, s, cuda::RopeTable()); });
  CHECK(contains(msg, "head_dim 0"));

  // Nothing ran.
  cuda::synchronize();
  const auto after = cuda::to_host<float>(qkv.view());
  CHECK(std::memcmp(before.data(), after.data(), sizeof(float) * before.size()) == 0);
}

}  // namespace
}  // namespace bonsai
