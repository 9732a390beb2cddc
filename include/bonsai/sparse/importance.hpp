// bonsai/sparse/importance.hpp — importance scores of FFN channels and attention heads for
// sparsity-accelerated training (spec sat.md §3), over the valid tokens of a micro-batch:
//   magnitude   s_i = || weights of neuron i ||_2: its rows of the up (and gate) map, its
//               column of the down map; for a head, its q/k/v rows and output columns. No data.
//   activation  s_i = max_t |a[t, i]| or ||a[:, i]||_2 for a channel; ||o_h||_F or
//               max_t ||o_h[t, :]||_2 for a head's output o_h (T, head_dim).
//   wanda       s_i = sum over the neuron's columns c of sum_j |W_down[j, c]| ||a[:, c]||_2.
// Which metric and aggregation the paper settled on is not verified, so each is an option.
// Scores are doubles, accumulated in double whatever T is.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/view.hpp"

namespace bonsai {

enum class ScoreKind : std::uint8_t { magnitude, activation, wanda };
/// How an activation score reduces over tokens.
enum class Aggregate : std::uint8_t { max, l2 };

inline const char* to_string(ScoreKind s) {
  switch (s) {
    case ScoreKind::magnitude:
      return "magnitude";
    case ScoreKind::activation:
      return "activation";
    case ScoreKind::wanda:
      return "wanda";
  }
  return "?";
}

inline ScoreKind parse_score_kind(std::string_view s) {
  for (ScoreKind k : {ScoreKind::magnitude, ScoreKind::activation, ScoreKind::wanda})
    if (s == to_string(k)) return k;
  detail::fail("importance score: expected magnitude, activation or wanda, got '", s, "'");
}

/// Which tokens of a micro-batch count: all (empty) or those with valid[t] != 0 (padding
/// excluded).
using TokenMask = std::span<const std::uint8_t>;

namespace detail {

inline bool counts(TokenMask valid, index_t t) {
  return valid.empty() || valid[std::size_t(t)] != 0;
}

inline void check_scores(const char* who, index_t neurons, std::span<double> out, index_t rows,
                         TokenMask valid) {
  BONSAI_CHECK(index_t(out.size()) == neurons, who, ": ", out.size(), " scores for ", neurons,
               " neurons");
  BONSAI_CHECK(valid.empty() || index_t(valid.size()) == rows, who, ": a token mask of ",
               valid.size(), " for ", rows, " tokens");
}

}  // namespace detail

/// Per-column activation statistic of a (T, F) over the valid tokens: max_t |a[t, c]| or
/// ||a[:, c]||_2; one score per column (FFN channels).
template <class T>
void activation_scores(MatrixView<const T> a, Aggregate agg, TokenMask valid,
                       std::span<double> out) {
  detail::check_scores("activation_scores", a.cols(), out, a.rows(), valid);
  constexpr index_t panel = 64;  // columns per task, each walked row by row
  const index_t cols = a.cols();
  parallel_for((cols + panel - 1) / panel, [&](index_t q) {
    const index_t c0 = q * panel, c1 = std::min(cols, c0 + panel);
    double s[panel] = {};
    for (index_t t = 0; t < a.rows(); ++t) {
      if (!detail::counts(valid, t)) continue;
      for (index_t c = c0; c < c1; ++c) {
        const double x = std::abs(double(a(t, c)));
        s[c - c0] = agg == Aggregate::max ? std::max(s[c - c0], x) : s[c - c0] + x * x;
      }
    }
    for (index_t c = c0; c < c1; ++c)
      out[std::size_t(c)] = agg == Aggregate::l2 ? std::sqrt(s[c - c0]) : s[c - c0];
  }, a.rows() * panel);
}

/// Per-head activation statistic of head outputs o (T, H head_dim), head h in columns
/// [h head_dim, (h + 1) head_dim): ||o_h||_F (l2) or max_t ||o_h[t, :]||_2 (max).
template <class T>
void head_activation_scores(MatrixView<const T> o, index_t head_dim, Aggregate agg, TokenMask valid,
                            std::span<double> out) {
  BONSAI_CHECK(head_dim > 0 && o.cols() % head_dim == 0, "head_activation_scores: ", o.cols(),
               " columns are not whole heads of ", head_dim);
  const index_t heads = o.cols() / head_dim;
  detail::check_scores("head_activation_scores", heads, out, o.rows(), valid);
  std::fill(out.begin(), out.end(), 0.0);
  for (index_t t = 0; t < o.rows(); ++t) {
    if (!detail::counts(valid, t)) continue;
    for (index_t h = 0; h < heads; ++h) {
      double sq = 0;
      for (index_t e = 0; e < head_dim; ++e) {
        const double x = double(o(t, h * head_dim + e));
        sq += x * x;
      }
      double& s = out[std::size_t(h)];
      s = agg == Aggregate::max ? std::max(s, std::sqrt(sq)) : s + sq;
    }
  }
  if (agg == Aggregate::l2)
    for (double& s : out) s = std::sqrt(s);
}

/// Adds the squared entries of rows [i group, (i + 1) group) of w to energy[i] (a neuron's
/// producer rows: the up or gate rows of a channel, the q/k/v rows of a head).
template <class T>
void add_row_energy(MatrixView<const T> w, index_t group, std::span<double> energy) {
  BONSAI_CHECK(group > 0 && w.rows() == group * index_t(energy.size()),
               "add_row_energy: ", w.rows(), " rows are not ", energy.size(), " neurons of ",
               group);
  for (index_t r = 0; r < w.rows(); ++r) {
    double sq = 0;
    for (index_t c = 0; c < w.cols(); ++c) sq += double(w(r, c)) * double(w(r, c));
    energy[std::size_t(r / group)] += sq;
  }
}

/// Adds the squared entries of columns [i group, (i + 1) group) of w to energy[i] (a
/// neuron's reader columns: the down column of a channel, the output columns of a head).
template <class T>
void add_column_energy(MatrixView<const T> w, index_t group, std::span<double> energy) {
  BONSAI_CHECK(group > 0 && w.cols() == group * index_t(energy.size()),
               "add_column_energy: ", w.cols(), " columns are not ", energy.size(), " neurons of ",
               group);
  for (index_t r = 0; r < w.rows(); ++r)
    for (index_t c = 0; c < w.cols(); ++c)
      energy[std::size_t(c / group)] += double(w(r, c)) * double(w(r, c));
}

/// Magnitude scores from accumulated energies: s_i = sqrt(energy_i).
inline void magnitude_from_energy(std::span<double> energy) {
  for (double& e : energy) e = std::sqrt(e);
}

/// Wanda-style scores: for neuron i, the sum over its columns c (group per neuron: 1 for a
/// channel, head_dim for a head) of sum_j |w[j, c]| times ||a[:, c]||_2 over the valid tokens,
/// with w the reader (down or output projection, (out, F)) and a its input (T, F).
template <class T>
void wanda_scores(MatrixView<const T> a, MatrixView<const T> w, index_t group, TokenMask valid,
                  std::span<double> out) {
  BONSAI_CHECK(a.cols() == w.cols(), "wanda_scores: activations of ", a.cols(),
               " features for a map reading ", w.cols());
  BONSAI_CHECK(group > 0 && a.cols() == group * index_t(out.size()), "wanda_scores: ", a.cols(),
               " features are not ", out.size(), " neurons of ", group);
  std::vector<double> norm(static_cast<std::size_t>(a.cols()));
  activation_scores(a, Aggregate::l2, valid, norm);
  std::fill(out.begin(), out.end(), 0.0);
  for (index_t r = 0; r < w.rows(); ++r)
    for (index_t c = 0; c < w.cols(); ++c)
      out[std::size_t(c / group)] += std::abs(double(w(r, c))) * norm[std::size_t(c)];
}

}  // namespace bonsai
