// bonsai/core/rng.hpp — Rng: a seeded, platform-independent random stream (xoshiro256** seeded
// by splitmix64; normals by Box-Muller). Unlike std::normal_distribution, the same seed gives
// the same numbers with every compiler and standard library, so initialisations reproduce.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "view.hpp"

namespace bonsai {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 1005) noexcept {
    std::uint64_t x = seed;
    for (auto& s : m_state) s = splitmix64(x);
  }

  /// A uniformly random 64-bit word.
  std::uint64_t next_u64() noexcept {
    const std::uint64_t result = rotl(m_state[1] * 5, 7) * 9;
    const std::uint64_t t = m_state[1] << 17;
    m_state[2] ^= m_state[0];
    m_state[3] ^= m_state[1];
    m_state[1] ^= m_state[2];
    m_state[0] ^= m_state[3];
    m_state[2] ^= t;
    m_state[3] = rotl(m_state[3], 45);
    return result;
  }

  /// Uniform on [0, 1), 53 random bits.
  /// Everything the generator's future depends on, to save and restore it exactly.
  struct State {
    std::array<std::uint64_t, 4> words{};
    double spare = 0.0;
    bool has_spare = false;
    friend bool operator==(const State&, const State&) = default;
  };
  State state() const noexcept { return {{m_state[0], m_state[1], m_state[2], m_state[3]}, m_spare, m_has_spare}; }
  void restore(const State& s) noexcept {
    for (int i = 0; i < 4; ++i) m_state[i] = s.words[i];
    m_spare = s.spare;
    m_has_spare = s.has_spare;
  }

  double uniform() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  /// Uniform on [lo, hi).
  double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform(); }

  /// Normal with the given mean and standard deviation.
  double normal(double mean = 0.0, double stddev = 1.0) noexcept {
    if (m_has_spare) {
      m_has_spare = false;
      return mean + stddev * m_spare;
    }
    double u1 = 0.0;
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double theta = 2.0 * std::numbers::pi * u2;
    m_spare = r * std::sin(theta);
    m_has_spare = true;
    return mean + stddev * r * std::cos(theta);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix64(std::uint64_t& x) noexcept {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  std::uint64_t m_state[4];
  double m_spare = 0.0;
  bool m_has_spare = false;
};

/// Fills a host view with N(mean, stddev^2) draws, in row-major order.
template <class T, int Rank>
void fill_normal(const TensorView<T, Rank, Host>& v, Rng& rng, double mean = 0.0,
                 double stddev = 1.0) {
  BONSAI_CHECK(v.is_contiguous(), "fill_normal needs a contiguous view");
  for (index_t i = 0, n = v.size(); i < n; ++i) v.data()[i] = static_cast<T>(rng.normal(mean, stddev));
}

}  // namespace bonsai
