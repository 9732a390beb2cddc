# Start-up checks: every refused flag combination and every bad input (shards, init file,
# prompt) is refused before the first step, with a sentence that names the flag, and leaves no
# trace in --out; --init-from takes the architecture from the file, the first --seq-len
# positions, and fits a structured FFN; the exports write what they promise.
#   cmake -DTRAIN=<train_gpt> -DDATA=<shard dir> -DOUT=<scratch dir> -P check_start_up.cmake
file(REMOVE_RECURSE "${OUT}")
set(args --train "${DATA}/train_*.bin" --val "${DATA}/val_*.bin" --tokenizer byte
          --layers 2 --d-model 32 --heads 2 --batch 2 --steps 3 --warmup 1 --eval-every 0
          --eval-batches 2 --sample-tokens 4 --threads 2)

include("${CMAKE_CURRENT_LIST_DIR}/train_run.cmake")
function(expect text)
  string(FIND "${out}" "${text}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "expected output containing '${text}', got:\n${out}")
  endif()
endfunction()
# refuse(<expected text> <flags>...): exit 1 with the text, nothing trained or written.
set(n 0)
function(refuse text)
  math(EXPR k "${n} + 1")
  set(n ${k} PARENT_SCOPE)
  set(dir "${OUT}/refused_${k}")
  run(1 --seq-len 32 --out "${dir}" ${ARGN})
  expect("${text}")
  file(GLOB written "${dir}/*")
  if(written)
    message(FATAL_ERROR "train_gpt ${ARGN}: refused only after training started:\n${out}")
  endif()
endfunction()

# A model of 64 positions, exported to both formats.
run(0 --seq-len 64 --out "${OUT}/base" --export-hf "${OUT}/hf" --export-llmc "${OUT}/model.bin")
expect("exported Hugging Face GPT-2 folder")
expect("exported llm.c model file")

# Inputs: shards, init file, tokenizer, prompt.
refuse("--val ${DATA}/vall_*.bin: glob_files: no files match" --val "${DATA}/vall_*.bin")
refuse("--train ${DATA}/nope_*.bin: glob_files: no files match" --train "${DATA}/nope_*.bin")
refuse("--val ${DATA}/val_*.bin: DataLoader: shard" --seq-len 1024 --batch 8)
refuse("--init-from ${OUT}/missing:" --init-from "${OUT}/missing")
refuse("--tokenizer ${OUT}/none:" --tokenizer "${OUT}/none")
# (an empty argument does not survive a CMake list, so this one is spelled out)
execute_process(COMMAND "${TRAIN}" ${args} --seq-len 32 --out "${OUT}/empty_prompt" --prompt ""
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
expect("--prompt \"\" holds no token")
if(rc EQUAL 0 OR EXISTS "${OUT}/empty_prompt")
  message(FATAL_ERROR "an empty --prompt was not refused before training:\n${out}")
endif()
# Flag values.
refuse("--eval-batches 0 must be at least 1" --eval-batches 0)
refuse("--keep-ckpts 0 must be at least 1" --keep-ckpts 0 --ckpt-every 1)
refuse("--warmup 3 must be smaller than --steps 3" --warmup 3)
refuse("--norm batchnorm:" --norm batchnorm)
refuse("--ffn lowrank needs --rank R" --ffn lowrank)
refuse("--on-divergence: expected stop or rollback" --on-divergence maybe)
refuse("--sgt guides structured FFNs" --sgt cosine)
# Exports the final model cannot take, refused before training.
foreach(flags "--norm;rmsnorm" "--pos;rope" "--act;swiglu" "--kv-heads;1")
  refuse("--export-hf: only dense GPT-2 models" --export-hf "${OUT}/x" ${flags})
endforeach()
refuse("--export-llmc: llm.c fixes the FFN width" --export-llmc "${OUT}/x.bin" --ffn-dim 96)
refuse("--export-hf: only dense GPT-2 models" --export-hf "${OUT}/x" --grow 2:upcycle:experts=2)
# --init-from: the file's architecture; no more positions than it learned.
refuse("--seq-len 128 exceeds the 64 positions that the --init-from model" --init-from "${OUT}/hf"
       --seq-len 128)
refuse("holds a model with --layers 2, which --layers 3 contradicts" --init-from "${OUT}/hf" --layers 3)
refuse("--moe-experts: --init-from starts from a dense model" --init-from "${OUT}/hf" --moe-experts 2)

# Accepted: the default context (256) becomes the file's 64; a shorter one keeps its first rows;
# a structured FFN is fitted; the llm.c file loads too.
run(0 --init-from "${OUT}/hf" --out "${OUT}/from_hf")
expect("positions 0..63 of its 64")
run(0 --init-from "${OUT}/model.bin" --seq-len 16 --out "${OUT}/from_llmc")
expect("positions 0..15 of its 64")
run(0 --init-from "${OUT}/hf" --seq-len 32 --ffn lowrank --ffn-params 0.32 --out "${OUT}/lowrank"
    --export-hf "${OUT}/lowrank_hf")
expect("its FFNs fitted to lowrank by truncated SVD")
expect("exported Hugging Face GPT-2 folder")
# An evaluation that fails after training (here a second validation shard, past the first one
# that start-up reads, holds GPT-2 ids beyond the byte vocabulary) still leaves the checkpoint.
if(EXISTS "${GPT2}/encoder.json")
  execute_process(COMMAND "${PREPARE}" "${TEXT}" --tokenizer "${GPT2}" --documents blank-line
                          -o "${OUT}/gpt2_ids" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
  file(MAKE_DIRECTORY "${OUT}/mixed_val")
  file(COPY_FILE "${DATA}/val_000000.bin" "${OUT}/mixed_val/val_000000.bin")
  file(COPY_FILE "${OUT}/gpt2_ids/val_000000.bin" "${OUT}/mixed_val/val_000001.bin")
  run(1 --seq-len 32 --steps 2 --eval-batches 100000 --val "${OUT}/mixed_val/val_*.bin"
      --out "${OUT}/eval_fails")
  expect("is not below the vocabulary size 257")
  if(NOT EXISTS "${OUT}/eval_fails/ckpt_00000002/DONE")
    message(FATAL_ERROR "a failing final evaluation lost the final checkpoint:\n${out}")
  endif()
endif()
message(STATUS "start-up checks refuse ${n} bad runs before training; --init-from and the exports work")
