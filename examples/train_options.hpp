// examples/train_options.hpp — the command line shared by the GPT trainers (train_gpt on the
// CPU, train_gpt_cuda on a GPU): every flag, its default and its help text in one place, the
// model configuration they describe, and the checks of every flag and input before the first
// step. A trainer rejects, with a sentence, the flags it does not implement.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <bonsai/nn/config.hpp>
#include <bonsai/nn/ffn_structure.hpp>
#include <bonsai/nn/from_dense.hpp>
#include <bonsai/nn/gpt.hpp>
#include <bonsai/nn/premerge.hpp>
#include <bonsai/nn/sampling.hpp>
#include <bonsai/train/data_loader.hpp>
#include <bonsai/train/gpt2_io.hpp>
#include <bonsai/train/load_tokenizer.hpp>
#include <bonsai/train/evaluate.hpp>
#include <bonsai/train/trainer_options.hpp>

namespace bonsai {

/// The trainer's options (train/trainer.hpp) and what the program adds: tokenizer, starting
/// weights, exports, the final sample, threads.
struct Options : TrainerOptions {
  std::string tokenizer = "data/gpt2";
  std::string init_from, export_hf, export_llmc;
  index_t sample_tokens = 64;
  std::string prompt = "The";
  double temperature = 0.8;  // of the final sample
  int threads = 0;
};

/// The model flags that are parsed into GptConfig's enumerations after the command line.
struct ModelFlags {
  std::string norm = "layernorm", pos = "learned", act = "gelu", ffn = "dense", gating = "topk_softmax";
  double ffn_params = 0;
};

/// Registers every trainer flag on `app`, writing into o, c (the model; a 6 x 384 GPT by
/// default) and f.
inline void add_train_options(CLI::App& app, Options& o, GptConfig& c, ModelFlags& f) {
  c.n_layer = 6;
  c.d_model = 384;
  c.n_head = 6;
  c.max_seq_len = 256;
  // A flag given twice takes its last value, so a script's defaults can be overridden by
  // arguments appended after them (bash scripts/demo.sh --steps 50).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  app.add_option("--layers", c.n_layer, "transformer layers")->capture_default_str();
  app.add_option("--d-model", c.d_model, "residual width")->capture_default_str();
  app.add_option("--heads", c.n_head, "query heads")->capture_default_str();
  app.add_option("--kv-heads", c.n_kv_head, "key/value heads (grouped-query attention; 0 = heads)");
  app.add_option("--attn-dim", c.attn_dim, "attention width (0 = d-model)");
  app.add_option("--ffn-dim", c.ffn_dim, "FFN hidden width (0 = 4 d-model)");
  app.add_option("--seq-len", c.max_seq_len, "context length T")->capture_default_str();
  app.add_option("--norm", f.norm, "layernorm | rmsnorm")->capture_default_str();
  app.add_option("--pos", f.pos, "learned | rope")->capture_default_str();
  app.add_option("--act", f.act, "gelu | swiglu")->capture_default_str();
  app.add_option("--ffn", f.ffn, "dense | lowrank | blockdense | blockshuffle")->capture_default_str();
  app.add_option("--rank", c.rank, "LowRank / BlockDense rank");
  app.add_option("--blocks", c.blocks, "BlockDense / BlockShuffle blocks");
  app.add_option("--ffn-params", f.ffn_params, "choose rank/blocks as the paper does: 0.63 or 0.32");
  app.add_option("--moe-experts", c.moe_experts,
                 "Mixture-of-Experts FFN layers with this many experts (0: none)");
  app.add_option("--moe-top-k", c.moe_top_k, "experts per token")->capture_default_str();
  app.add_option("--moe-every", c.moe_every, "every N-th layer is a MoE layer")
      ->capture_default_str();
  app.add_option("--moe-ffn-dim", c.moe_ffn_dim, "an expert's hidden width (0 = the FFN width)");
  app.add_option("--moe-gating", f.gating, "topk_softmax (Mixtral) | softmax_topk (Switch)")
      ->capture_default_str();
  app.add_option("--moe-aux-loss", c.moe_aux_loss, "weight of the load-balancing loss")
      ->capture_default_str();
  app.add_flag("!--structured-first-ffn", c.dense_first_ffn,
               "also structure layer 0's FFN (the paper keeps it dense)");
  app.add_option("--sgt", o.sgt, "self-guided training of the structured FFNs: off | cosine | linear")
      ->capture_default_str();
  app.add_option("--sgt-ratio", o.sgt_ratio, "SGT over this fraction of the steps (--sgt-budget steps)")
      ->capture_default_str();
  app.add_flag("--sgt-reduce-flop", o.sgt_reduce_flop,
               "per map and micro-batch, run the guide only with probability alpha");
  app.add_option("--sgt-budget", o.sgt_budget,
                 "steps: SGT within --steps; flops: extend the run so its FLOPs equal the dense model's")
      ->capture_default_str();
  app.add_option("--grow", o.grow,
                 "a growth stage STEP:METHOD:key=value,... (repeat for more stages) with METHOD "
                 "net2net | stackbert | interpolate | mslt | fpi | aki | lemon | msg | ligo | mango and "
                 "keys d, heads, ffn, layers, rank (e.g. 200:lemon:d=384,heads=6,layers=6; ligo and "
                 "mango also steps and lr of the operator's training, mango's rank is its ring rank), "
                 "or upcycle with keys "
                 "experts, top_k, granularity, every, gating, router, scale (e.g. "
                 "300:upcycle:experts=8,top_k=2)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--grow-state", o.grow_state,
                 "optimizer state at growth: reset | carry | duplicate | gradient")
      ->capture_default_str();
  app.add_option("--grow-lr", o.grow_lr, "learning rate after growth: keep | rewind | rewarm:N")
      ->capture_default_str();
  app.add_option("--grow-noise", o.grow_noise,
                 "std of the centred split noise that breaks symmetry (default: LEMON 0.02, others 0)");
  app.add_option("--grow-new-layers", o.grow_new_layers, "LEMON's new layers: cancel | zero_out")
      ->capture_default_str();
  app.add_option("--mslt-steps", o.mslt_steps,
                 "MSLT: steps that only the new layers train (0: half-way to the next stage or the end)");
  app.add_option("--msg-steps", o.msg_steps,
                 "MSG: steps over which the masks of new parts rise from 0 to 1 (0: half-way to the "
                 "next stage or the end)");
  app.add_option("--sat-rate", o.sat_rate,
                 "sparsity-accelerated training: omit this fraction of every layer's heads and FFN "
                 "channels per step (0: off)")->capture_default_str();
  app.add_option("--sat-ladder", o.sat_ladder,
                 "t1,t2,K: the rate until step t1, then K stairs down to dense at t2 (default: "
                 "half-way from --sat-start to the end, 4 stairs, dense at 90% of the way)");
  app.add_option("--sat-start", o.sat_start,
                 "the first step SAT omits anything (dense before; e.g. after SGT or a growth stage)")
      ->capture_default_str();
  app.add_option("--sat-score", o.sat_score, "neuron importance: activation | magnitude | wanda")
      ->capture_default_str();
  app.add_option("--sat-aggregate", o.sat_aggregate, "activation scores over tokens: l2 | max")
      ->capture_default_str();
  app.add_option("--sat-select", o.sat_select, "sample (in proportion to the scores) | topk")
      ->capture_default_str();
  app.add_option("--sat-align", o.sat_align, "kept FFN channels: a multiple of this")
      ->capture_default_str();
  app.add_option("--sat-optimizer", o.sat_optimizer,
                 "omitted parameters: skip (values and moments untouched) | step (AdamW on a zero "
                 "gradient)")->capture_default_str();
  app.add_option("--batch,-b", o.batch, "sequences per micro-batch")->capture_default_str();
  app.add_option("--grad-accum", o.grad_accum, "micro-batches per step and rank")->capture_default_str();
  app.add_option("--total-batch-tokens,-d", o.total_batch_tokens,
                 "tokens per step over all ranks; sets --grad-accum to it / (ranks x batch x seq-len)");
  app.add_option("--steps,-x", o.steps, "optimizer steps")->capture_default_str();
  app.add_option("--lr,-l", o.lr, "peak learning rate")->capture_default_str();
  app.add_option("--warmup,-u", o.warmup, "warm-up steps")->capture_default_str();
  app.add_option("--min-lr-fraction,-q", o.min_lr_fraction, "final lr / peak lr")->capture_default_str();
  app.add_option("--lr-schedule", o.lr_schedule,
                 "cosine (warm-up, then cosine decay) | wsd (warm-up, stable, decay)")
      ->capture_default_str();
  app.add_option("--wsd-decay-fraction", o.wsd_decay_fraction, "WSD: the share of the steps that decay")
      ->capture_default_str();
  app.add_option("--wsd-shape", o.wsd_shape, "WSD: the decay's shape, linear | sqrt (1 - sqrt x) | cosine")
      ->capture_default_str();
  app.add_option("--weight-decay,-c", o.weight_decay, "AdamW weight decay (matrices only)")->capture_default_str();
  app.add_option("--beta2", o.beta2, "AdamW beta2 (the paper: 0.999)")->capture_default_str();
  app.add_option("--clip", o.clip, "clip the global gradient norm to this (0: off)")->capture_default_str();
  app.add_option("--train,-i", o.train, "training shards (glob)")->capture_default_str();
  app.add_option("--val,-j", o.val, "validation shards (glob)")->capture_default_str();
  app.add_option("--tokenizer", o.tokenizer, "byte, or a folder with encoder.json and vocab.bpe")->capture_default_str();
  app.add_flag("--shuffle", o.shuffle, "visit training windows in a seeded random order");
  app.add_option("--out,-o", o.out, "run folder: checkpoints, metrics.csv, main.log")->capture_default_str();
  app.add_option("--eval-every,-v", o.eval_every, "validate every N steps (0: at the end only)")->capture_default_str();
  app.add_option("--eval-batches,-m", o.eval_batches, "validation batches")->capture_default_str();
  app.add_option("--ckpt-every,-n", o.ckpt_every, "checkpoint every N steps (and at the end)")->capture_default_str();
  app.add_option("--keep-ckpts", o.keep_ckpts, "checkpoints kept")->capture_default_str();
  app.add_flag("--resume,-y", o.resume, "continue from the newest checkpoint in --out");
  app.add_option("--on-divergence", o.on_divergence,
                 "a non-finite loss, gradient or parameter, or a loss spike: stop (naming the step and the first "
                 "non-finite tensor; the checkpoints stay) | rollback (to the last checkpoint, "
                 "with the learning rate times --rollback-lr-factor)")->capture_default_str();
  app.add_option("--rollback-lr-factor", o.rollback_lr_factor,
                 "learning-rate factor of every rollback")->capture_default_str();
  app.add_option("--max-rollbacks", o.max_rollbacks, "rollbacks before the run stops")
      ->capture_default_str();
  app.add_option("--spike-factor", o.spike_factor,
                 "a finite loss above this many times the mean of the last --spike-window losses "
                 "is a spike, treated like a divergence: its update is not taken (0: off)")
      ->capture_default_str();
  app.add_option("--spike-window", o.spike_window, "losses in the spike guard's running mean")
      ->capture_default_str();
  app.add_option("--stop-after", o.stop_after, "leave after N steps of this run (resume later)");
  app.add_option("--init-from,-e", o.init_from,
                 "start from GPT-2 weights, an llm.c .bin or a Hugging Face folder: the architecture "
                 "and vocabulary come from the file, --seq-len its first positions, and --ffn fits "
                 "its FFNs into that structure");
  app.add_option("--export-hf", o.export_hf,
                 "write a Hugging Face GPT-2 folder at the end (structured FFNs merged to dense)");
  app.add_option("--export-llmc", o.export_llmc,
                 "write an llm.c model file (.bin, fp32) at the end (structured FFNs merged to dense)");
  app.add_option("--sample-tokens,-g", o.sample_tokens, "tokens to generate at the end")->capture_default_str();
  app.add_option("--prompt", o.prompt, "prompt of the final sample")->capture_default_str();
  app.add_option("--temperature", o.temperature, "softmax temperature of the final sample")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "initialisation, shuffling and sampling seed")->capture_default_str();
  app.add_option("--threads", o.threads, "OpenMP threads (0: all)");
  app.add_option("--peak-gflops", o.peak_gflops, "this machine's peak, to print utilisation");
}

/// What a run reads besides its flags, resolved and checked before the first step.
struct RunInputs {
  std::shared_ptr<const Tokenizer> tokenizer;  // --tokenizer
  std::optional<ImportedModel> init;           // --init-from, shortened to the run's context
  std::string init_text;                       // what --init-from took, for the start-up lines
};

namespace detail {

/// Rethrows what `f` throws with "flag value: " in front, so the message names the flag.
template <class F>
void naming_flag(std::string_view flag, std::string_view value, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    fail(flag, " ", value, ": ", e.what());
  }
}

/// --init-from: the architecture, vocabulary and weights come from the file; --seq-len (at most
/// the positions it learned; by default the smaller of 256 and those), the FFN structure flags
/// and --structured-first-ffn from the command line. Shape flags that contradict the file are
/// refused.
inline ImportedModel import_init(const CLI::App& app, GptConfig& c, const Options& o,
                                 std::string& text) {
  ImportedModel m;
  naming_flag("--init-from", o.init_from, [&] {
    const bool llmc = std::filesystem::path(o.init_from).extension() == ".bin";
    m = llmc ? import_llmc(o.init_from) : import_hf(o.init_from);
  });
  const GptConfig& file = m.config;
  const auto same = [&](const char* flag, auto given, auto held) {
    BONSAI_CHECK(app.count(flag) == 0 || given == held, "--init-from ", o.init_from,
                 " holds a model with ", flag, " ", held, ", which ", flag, " ", given,
                 " contradicts; --init-from takes the architecture from the file (leave the flag out)");
  };
  same("--layers", c.n_layer, file.n_layer);
  same("--d-model", c.d_model, file.d_model);
  same("--heads", c.n_head, file.n_head);
  same("--kv-heads", c.kv_heads(), file.kv_heads());
  same("--attn-dim", c.attention_width(), file.attention_width());
  same("--ffn-dim", c.ffn_width(), file.ffn_width());
  same("--norm", std::string(to_string(c.norm)), std::string(to_string(file.norm)));
  same("--pos", std::string(to_string(c.pos)), std::string(to_string(file.pos)));
  same("--act", std::string(to_string(c.act)), std::string(to_string(file.act)));
  BONSAI_CHECK(c.moe_experts == 0, "--moe-experts: --init-from starts from a dense model; make it "
               "a Mixture-of-Experts model with --grow STEP:upcycle:experts=E");
  const index_t positions = file.max_seq_len;
  index_t seq = std::min(c.max_seq_len, positions);  // the default: 256 or fewer
  if (app.count("--seq-len") > 0) {
    BONSAI_CHECK(c.max_seq_len <= positions, "--seq-len ",
                 c.max_seq_len, " exceeds the ", positions, " positions that the --init-from "
                 "model ", o.init_from, " learned; train on at most ", positions, " tokens");
    seq = c.max_seq_len;
  }
  shorten_context(m, seq, o.init_from);
  GptConfig next = m.config;
  next.ffn = c.ffn;
  next.rank = c.rank;
  next.blocks = c.blocks;
  next.dense_first_ffn = c.dense_first_ffn;
  c = next;
  text = fmt::format("--init-from {}: {} layers, d_model {}, {} heads, vocabulary {}, positions 0..{} "
                     "of its {}", o.init_from, c.n_layer, c.d_model, c.n_head, c.vocab_size, seq - 1,
                     positions);
  if (c.ffn != FfnKind::dense)
    text += fmt::format("; its FFNs fitted to {} by truncated SVD", to_string(c.ffn));
  return m;
}

/// The shards `pattern` names: each must hold a batch of B x T tokens, and the first shard's
/// tokens must lie below `vocab`.
inline void check_shards(std::string_view flag, const std::string& pattern, index_t B, index_t T,
                         index_t vocab) {
  naming_flag(flag, pattern, [&] {
    DataLoader probe(pattern, {.batch_size = B, .seq_len = T, .vocab_size = vocab});
    std::vector<std::int32_t> in(std::size_t(B * T)), tgt(in.size());  // (B, T)
    probe.next_batch(in, tgt);  // reads the first shard: its tokens are checked against vocab
  });
}

}  // namespace detail

/// Refuses, with a sentence naming the flag, the export flags (--export-hf, --export-llmc) that
/// cannot hold `final`, the model the run ends with (structured FFNs are merged to dense).
inline void check_exports(const Options& o, GptConfig final) {
  final.ffn = FfnKind::dense;
  final.rank = final.blocks = 0;
  if (!o.export_hf.empty()) check_dense_gpt2(final, "--export-hf");
  if (!o.export_llmc.empty()) check_llmc_config(final, "--export-llmc");
}

/// Completes c from the parsed flags (the enumerations, --init-from's model, --ffn-params, the
/// tokenizer's vocabulary) and checks, before anything trains, every flag value and every input
/// the run reads: shards, tokenizer, init file. Throws with a sentence naming the flag.
inline RunInputs prepare_run(const CLI::App& app, GptConfig& c, const ModelFlags& f, const Options& o) {
  const auto at_least = [](const char* flag, index_t v, index_t min) {
    BONSAI_CHECK(v >= min, flag, " ", v, " must be at least ", min);
  };
  at_least("--batch", o.batch, 1);
  at_least("--steps", o.steps, 1);
  at_least("--warmup", o.warmup, 0);
  BONSAI_CHECK(o.warmup < o.steps, "--warmup ", o.warmup, " must be smaller than --steps ", o.steps,
               " (the learning rate warms up, then decays over the remaining steps)");
  at_least("--eval-every", o.eval_every, 0);
  at_least("--eval-batches", o.eval_batches, 1);
  at_least("--ckpt-every", o.ckpt_every, 0);
  at_least("--keep-ckpts", o.keep_ckpts, 1);
  at_least("--stop-after", o.stop_after, 0);
  at_least("--sample-tokens", o.sample_tokens, 0);
  BONSAI_CHECK(std::isfinite(o.temperature) && o.temperature >= 0, "--temperature ", o.temperature,
               " must be 0 (greedy) or positive");
  BONSAI_CHECK(std::isfinite(o.lr) && o.lr > 0, "--lr ", o.lr, " must be a positive number");
  BONSAI_CHECK(o.min_lr_fraction >= 0 && o.min_lr_fraction <= 1, "--min-lr-fraction ",
               o.min_lr_fraction, " must lie in [0, 1]");
  BONSAI_CHECK(o.clip >= 0 && o.weight_decay >= 0, "--clip ", o.clip, " and --weight-decay ",
               o.weight_decay, " must not be negative");
  BONSAI_CHECK(o.beta2 > 0 && o.beta2 < 1, "--beta2 ", o.beta2, " must lie in (0, 1)");

  detail::naming_flag("--norm", f.norm, [&] { c.norm = parse_norm(f.norm); });
  detail::naming_flag("--pos", f.pos, [&] { c.pos = parse_pos(f.pos); });
  detail::naming_flag("--act", f.act, [&] { c.act = parse_act(f.act); });
  detail::naming_flag("--ffn", f.ffn, [&] { c.ffn = parse_ffn(f.ffn); });
  detail::naming_flag("--moe-gating", f.gating, [&] { c.moe_gating = parse_gating(f.gating); });
  RunInputs in;
  if (!o.init_from.empty()) in.init = detail::import_init(app, c, o, in.init_text);
  if (f.ffn_params > 0) set_ffn_params_fraction(c, f.ffn_params);
  const bool needs_rank = c.ffn == FfnKind::lowrank || c.ffn == FfnKind::blockdense;
  const bool needs_blocks = c.ffn == FfnKind::blockdense || c.ffn == FfnKind::blockshuffle;
  BONSAI_CHECK((!needs_rank || c.rank > 0) && (!needs_blocks || c.blocks > 0), "--ffn ", f.ffn,
               " needs ", needs_rank ? "--rank R" : "", needs_rank && needs_blocks ? " and " : "",
               needs_blocks ? "--blocks B" : "", ", or --ffn-params 0.63 | 0.32 to choose them");
  detail::naming_flag("--tokenizer", o.tokenizer, [&] { in.tokenizer = load_tokenizer(o.tokenizer); });
  const std::int32_t vocab = in.tokenizer->vocab_size();
  BONSAI_CHECK(o.sample_tokens == 0 || !in.tokenizer->encode(o.prompt).empty(), "--prompt \"", o.prompt,
               "\" holds no token; the final sample continues a prompt of at least one (or set "
               "--sample-tokens 0)");
  if (in.init) {
    BONSAI_CHECK(c.vocab_size == vocab, "--tokenizer ", o.tokenizer, " has a vocabulary of ", vocab,
                 " tokens but the --init-from model ", o.init_from, " has ", c.vocab_size,
                 "; use the tokenizer it was trained with");
  }
  c.vocab_size = vocab;
  c.validate();
  detail::check_shards("--train", o.train, o.batch, c.max_seq_len, c.vocab_size);
  detail::check_shards("--val", o.val, o.batch, c.max_seq_len, c.vocab_size);
  return in;
}

/// Loads --init-from's weights into `model`, fitting a structured FFN to the dense one
/// (nn/from_dense.hpp) when the model has one.
template <class SU, class SD>
void load_init(Gpt<SU, SD>& model, const ImportedModel& init, const std::string& origin) {
  using T = scalar_of<SU>;
  if constexpr (std::is_same_v<SU, Dense<T>> && std::is_same_v<SD, Dense<T>>) {
    copy_into(model.arena(), init.tensors, origin);
  } else {
    Gpt<Dense<T>, Dense<T>> dense(init.config);
    copy_into(dense.arena(), init.tensors, origin);
    fit_from_dense(dense, model);
  }
}

/// --sample-tokens tokens after --prompt (temperature --temperature, top-k 40, seed --seed), printed as
/// they come.
template <class SU, class SD>
void print_sample(Gpt<SU, SD>& model, const Tokenizer& tokenizer, const Options& o) {
  if (o.sample_tokens == 0) return;
  Rng rng(o.seed);
  const std::vector<std::int32_t> prompt = tokenizer.encode(o.prompt);
  fmt::print("sample: {}", o.prompt);
  generate(model, prompt,
           {.max_new_tokens = o.sample_tokens, .temperature = o.temperature, .top_k = 40,
            .stop_token = tokenizer.eot_token()},
           rng, [&](std::int32_t id) {
             fmt::print("{}", tokenizer.decode_token(id));
             std::fflush(stdout);
           });
  fmt::print("\n");
}

/// --export-hf and --export-llmc: the trained model, its structured FFNs merged to dense
/// (check_exports refused at start-up what these formats cannot hold).
template <class SU, class SD>
void export_model(const Options& o, Gpt<SU, SD>& model) {
  if (o.export_hf.empty() && o.export_llmc.empty()) return;
  const auto write = [&](const GptConfig& c, const ParamArena<float>& arena) {
    if (!o.export_hf.empty()) {
      const auto tokenizer_dir = o.tokenizer == "byte" ? std::optional<std::filesystem::path>{}
                                                       : std::filesystem::path(o.tokenizer);
      export_hf(o.export_hf, c, arena, tokenizer_dir);
      fmt::print("exported Hugging Face GPT-2 folder {}\n", o.export_hf);
    }
    if (!o.export_llmc.empty()) {
      export_llmc(o.export_llmc, c, arena);
      fmt::print("exported llm.c model file {}\n", o.export_llmc);
    }
  };
  if constexpr (std::is_same_v<SU, Dense<float>> && std::is_same_v<SD, Dense<float>>) {
    write(model.config(), model.arena());
  } else {
    auto dense = merged_dense(model);  // structured FFNs multiplied out: a dense GPT-2
    write(dense.config(), dense.arena());
  }
}

}  // namespace bonsai
