// train_gpt_cuda — train a GPT-style language model on one NVIDIA GPU with train_gpt's flags.
//
//   build/cuda/examples/train_gpt_cuda --train "data/brown/gpt2/train_*.bin" \
//       --val "data/brown/gpt2/val_*.bin" --tokenizer data/gpt2 --ffn lowrank --ffn-params 0.32
//
// The model is bonsai's Gpt on the device (Gpt<Up, Down, Device>) in bf16 (--precision fp32 for
// exact float math) with fp32 master weights and AdamW moments on the device, beside its host
// twin Gpt<Up, Down> of the same layout, which initialises, imports, checkpoints and samples; everything else is train_gpt's: llm.c token shards,
// warm-up + cosine, global-norm clipping, gradient accumulation, validation, metrics.csv and
// main.log, atomic safetensors checkpoints, --resume, --init-from, --export-hf and a sample at
// the end. Checkpoints hold the fp32 master weights in the CPU model's layout, so a run started
// here resumes in train_gpt and the other way round (with the same micro-batches per step).
// Self-guided training, growth, sparsity-accelerated training, Mixture-of-Experts layers,
// --on-divergence rollback and data parallelism are CPU-only for now: their flags are rejected
// with a sentence. A non-finite loss, gradient or parameter stops the run, as in train_gpt.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <bonsai/cuda.hpp>
#include <bonsai/nn/sampling.hpp>
#include <bonsai/train/adamw.hpp>
#include <bonsai/train/checkpoint.hpp>
#include <bonsai/train/divergence.hpp>
#include <bonsai/train/gpt2_io.hpp>
#include <bonsai/train/gpt_config_json.hpp>
#include <bonsai/train/grad_clip.hpp>
#include <bonsai/train/lr_schedule.hpp>
#include <bonsai/train/metrics.hpp>
#include <bonsai/nn/premerge.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "train_options.hpp"

namespace bonsai {
namespace {

namespace fs = std::filesystem;

/// The flags only train_gpt implements, each with the value that means "off".
void reject_cpu_only(const Options& o) {
  const auto refuse = [](bool used, const char* what) {
    BONSAI_CHECK(!used, "train_gpt_cuda: ", what, " runs on the CPU only for now; use train_gpt");
  };
  refuse(o.sgt != "off", "--sgt (self-guided training)");
  refuse(!o.grow.empty(), "--grow (model growth)");
  refuse(o.sat_rate > 0 || !o.sat_ladder.empty() || o.sat_start != 0,
         "--sat-rate (sparsity-accelerated training)");
  refuse(o.on_divergence != "stop", "--on-divergence rollback");
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!size) size = std::getenv("PMI_SIZE");
  refuse(size && std::string_view(size) != "1", "data-parallel training under mpirun");
}

template <class Map, class T>
int train(const Options& o, GptConfig config, const RunInputs& inputs) {
  using DeviceMap = rebind_scalar_t<Map, T>;
  using Model = Gpt<DeviceMap, DeviceMap, Device>;
  const auto& tokenizer = inputs.tokenizer;  // loaded and checked by prepare_run
  const index_t B = o.batch, Tlen = config.max_seq_len;
  index_t accum = o.grad_accum;
  if (o.total_batch_tokens > 0) {
    BONSAI_CHECK(o.total_batch_tokens % (B * Tlen) == 0, "--total-batch-tokens ", o.total_batch_tokens,
                 " is not a multiple of --batch x --seq-len = ", B * Tlen);
    accum = o.total_batch_tokens / (B * Tlen);
  }
  BONSAI_CHECK(o.total_batch_tokens >= 0 && accum >= 1, "--grad-accum must be at least 1 and "
               "--total-batch-tokens not negative, got ", o.grad_accum, " and ", o.total_batch_tokens);

  // ---- model and optimizer: initialised (or imported) on the host, then uploaded --------------
  Rng init_rng(o.seed);
  Gpt<Map, Map> host(config);  // the host twin: layout, and the staging copy of checkpoints
  host.init(init_rng);
  if (inputs.init) load_init(host, *inputs.init, o.init_from);
  Model model(config);
  const auto upload = [&] { model.arena().assign(host.arena().values_view()); };
  const auto download = [&] { model.arena().copy_to(host.arena().values_view()); };
  upload();
  const AdamWConfig adamw{.beta1 = o.beta1, .beta2 = o.beta2, .weight_decay = o.weight_decay};
  AdamW<float> host_opt(host.arena(), adamw);  // the moments as checkpoints hold them
  AdamW<T, Device> opt(model.arena(), adamw);
  const auto schedule = lr_schedule_of(o, o.steps);
  DataLoader loader(o.train, {.batch_size = B, .seq_len = Tlen, .world = int(accum), .shuffle = o.shuffle,
                              .seed = o.seed, .vocab_size = config.vocab_size});
  const nlohmann::json config_json = gpt_config_to_json(config);
  double train_flops = 0;
  LossSpikeGuard spike({.factor = o.spike_factor, .window = o.spike_window});

  // ---- checkpoints: the host model and moments after a download --------------------------------
  const auto host_moments = [&] {
    return std::pair{std::span<float>(host_opt.m().data(), std::size_t(host_opt.size())),
                     std::span<float>(host_opt.v().data(), std::size_t(host_opt.size()))};
  };
  const auto save = [&](index_t step) {
    download();
    opt.download(host_opt);
    nlohmann::json state = {{"step", step}, {"adamw_step", host_opt.step_count()},
                            {"loader", loader.state()}, {"seed", o.seed}, {"train_flops", train_flops}};
    if (spike.enabled()) state["loss_window"] = spike.state();
    const auto [m, v] = host_moments();
    save_checkpoint<float>(o.out, step, host.arena(), m, v, state, config_json);
    prune_checkpoints(o.out, o.keep_ckpts);
  };
  index_t start = 0;
  if (o.resume) {
    if (const auto dir = latest_checkpoint(o.out)) {
      const auto [m, v] = host_moments();
      const CheckpointState st = load_checkpoint<float>(*dir, host.arena(), m, v);
      BONSAI_CHECK(st.config == config_json, "--resume: ", dir->string(),
                   " was written by a different model configuration");
      const nlohmann::json& ts = st.trainer_state;
      for (const char* key : {"sgt", "growth", "sat"})
        BONSAI_CHECK(!ts.contains(key), "--resume: ", dir->string(), " was written with --", key,
                     " settings, which train_gpt_cuda does not run; resume it with train_gpt");
      host_opt.set_step_count(ts.at("adamw_step").get<std::int64_t>());
      const auto position = ts.at("loader").get<DataLoaderState>();
      BONSAI_CHECK(position.world == accum, "--resume: ", dir->string(), " was written by a run of ",
                   position.world, " micro-batches per step; this one runs ", accum);
      loader.restore(position);
      train_flops = ts.value("train_flops", 0.0);
      spike.restore(ts.value("loss_window", std::vector<double>{}));
      start = ts.at("step").get<index_t>();
      upload();
      opt.upload(host_opt);
      fmt::print("resumed from {} at step {}\n", dir->string(), start);
    } else {
      fmt::print("--resume: no checkpoint in {}, starting afresh\n", o.out);
    }
  }

  cudaDeviceProp prop{};
  BONSAI_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  fmt::print("model: {} layers, d_model {}, {} heads ({} kv), FFN {} {} (rank {}, blocks {}), {:.2f}M parameters, "
             "{:.2f} GFLOP per step\n",
             config.n_layer, config.d_model, config.n_head, config.kv_heads(), to_string(config.ffn),
             config.ffn_width(), config.rank, config.blocks, double(model.param_count()) * 1e-6,
             double(model.training_flops(B, Tlen)) * double(accum) * 1e-9);
  if (!inputs.init_text.empty()) fmt::print("{}\n", inputs.init_text);
  fmt::print("data: {} ({} batches of {}x{} per epoch), tokenizer {} (vocab {}), GPU {} in {}\n", o.train,
             loader.batches_per_epoch(), B, Tlen, tokenizer->name(), tokenizer->vocab_size(), prop.name,
             std::is_same_v<T, float> ? "fp32" : "bf16 (fp32 master weights)");

  // ---- training loop -------------------------------------------------------------------------
  MetricsLog log(o.out, o.resume ? start - 1 : -1);
  ConsoleReporter console(o.steps);
  typename Model::Context ctx;
  cuda::GradNormState norm_state;
  std::vector<std::int32_t> in(B * Tlen), tgt(B * Tlen);  // (B, T)
  const index_t end = o.stop_after > 0 ? std::min(o.steps, start + o.stop_after) : o.steps;
  double tokens_per_s = 0, val_loss = std::nan("");
  const auto validate = [&] { return evaluate(model, ctx, o.val, o.batch, Tlen, config.vocab_size, o.eval_batches); };
  for (index_t step = start; step < end; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    double loss = 0;
    model.arena().zero_grads();  // micro-batches add their gradients in place
    for (index_t micro = 0; micro < accum; ++micro) {
      loader.read_slice(std::span<std::int32_t>(in.data(), in.size()), std::span<std::int32_t>(tgt.data(), tgt.size()),
                        micro);
      loss += model.forward(ctx, TokenBatch{in.data(), tgt.data(), B, Tlen}, 1.0f / float(accum));
      model.backward(ctx);
    }
    loader.next_window();
    loss /= double(accum);
    auto& arena = model.arena();
    const double norm = cuda::grad_norm(arena.grads_view(), norm_state);
    const double lr = schedule.at(step);
    bool finite = std::isfinite(loss) && std::isfinite(norm);
    if (finite && spike.is_spike(loss)) {
      console.clear();
      const auto dir = latest_checkpoint(o.out);
      detail::fail(spike.report(step, loss), "; the update was not taken. ",
                   dir ? fmt::format("The last good checkpoint is {}; resume from it with a lower --lr, "
                                     "or raise --spike-factor (0: off)", dir->string())
                       : std::string("No checkpoint was written (--ckpt-every)"));
    }
    if (finite) {
      opt.step(arena, lr, clip_scale(norm, o.clip));
      finite = std::isfinite(cuda::grad_norm(arena.master(), norm_state));  // an update can overflow
      if (finite) spike.observe(loss);
    }
    if (!finite) {
      console.clear();
      download();
      const auto dir = latest_checkpoint(o.out);
      detail::fail(divergence_report(step, loss, norm, first_non_finite(host.arena())), "; training diverged. ",
                   dir ? fmt::format("The last good checkpoint is {}; resume from it with a lower --lr", dir->string())
                       : std::string("No checkpoint was written (--ckpt-every)"));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double step_flops = double(model.training_flops(B, Tlen)) * double(accum);
    train_flops += step_flops;
    tokens_per_s = double(B * Tlen * accum) / seconds;
    const double gflops = step_flops / seconds * 1e-9;
    const StepMetrics m{.step = step, .loss = loss, .lr = lr, .grad_norm = norm, .ms = seconds * 1e3,
                        .tokens_per_s = tokens_per_s, .gflops = gflops,
                        .mfu = o.peak_gflops > 0 ? 100.0 * gflops / o.peak_gflops : StepMetrics::none,
                        .train_flops = train_flops};
    log.log_train(m);
    console.train(m);
    const index_t done = step + 1;
    // The evaluation's line precedes the checkpoint (a resume continues after both); an
    // evaluation that fails still leaves the step's checkpoint behind.
    const bool checkpoint = (o.ckpt_every > 0 && done % o.ckpt_every == 0) || done == end;
    if ((o.eval_every > 0 && done % o.eval_every == 0) || done == o.steps) {
      try {
        val_loss = validate();
      } catch (...) {
        if (checkpoint) save(done);
        throw;
      }
      log.log_val(done, val_loss, train_flops);
      console.val(done, val_loss);
    }
    if (checkpoint) save(done);
  }
  console.clear();

  // ---- results: sampled and exported from the host copy of the trained weights ----------------
  if (end < o.steps) {
    fmt::print("stopped after step {} of {}; continue with --resume\n", end, o.steps);
    return 0;
  }
  if (std::isnan(val_loss) && o.steps > start) val_loss = validate();
  if (!std::isnan(val_loss)) fmt::print("validation loss {:.4f}, perplexity {:.2f}\n", val_loss, std::exp(val_loss));
  std::size_t free_bytes = 0, total_bytes = 0;
  BONSAI_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  fmt::print("training FLOPs {:.4e}, last step {:.0f} tokens/s, GPU memory in use {:.0f} MiB\n", train_flops,
             tokens_per_s, double(total_bytes - free_bytes) / (1024.0 * 1024.0));
  download();
  print_sample(host, *tokenizer, o);
  export_model(o, host);
  return 0;
}

}  // namespace
}  // namespace bonsai

int main(int argc, char** argv) {
  using namespace bonsai;
  CLI::App app{"train_gpt_cuda: train a GPT-style model with structured FFNs on one NVIDIA GPU"};
  Options o;
  GptConfig c;
  ModelFlags flags;
  add_train_options(app, o, c, flags);
  std::string precision = "bf16";
  app.add_option("--precision", precision, "bf16 (fp32 master weights) | fp32 | tf32")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    reject_cpu_only(o);
    const RunInputs inputs = prepare_run(app, c, flags, o);  // every flag and file, checked
    require_support<Device>(c, "train_gpt_cuda");
    check_exports(o, c);
    BONSAI_CHECK(precision == "bf16" || precision == "fp32" || precision == "tf32",
                 "--precision: expected bf16, fp32 or tf32, got '", precision, "'");
    BONSAI_CHECK(bonsai::cuda::available(), "train_gpt_cuda: no CUDA device is visible (train_gpt trains on the CPU)");
    set_threads(o.threads);  // the host side: sampling, export, checkpoint conversion
    if (precision == "tf32") bonsai::cuda::set_math(bonsai::cuda::Math::tf32);
    return with_ffn_structure<float>(c, [&](auto map) {
      using Map = typename decltype(map)::type;
      return precision == "bf16" ? train<Map, bf16>(o, c, inputs) : train<Map, float>(o, c, inputs);
    });
  } catch (const std::exception& e) {
    fmt::print(stderr, "train_gpt_cuda: {}\n", e.what());
    return 1;
  }
}
