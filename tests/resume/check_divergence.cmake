# Divergence: a run resumed from a good checkpoint with an absurd learning rate (1e40, so the
# first update overflows) must stop naming the step and the first non-finite tensor, keep the
# checkpoint and write none after it; with --on-divergence rollback it must return to that
# checkpoint with the rate lowered and finish; with too few rollbacks it must stop saying so.
#   cmake -DTRAIN=<train_gpt> -DDATA=<shard dir> -DOUT=<scratch dir> -P check_divergence.cmake
file(REMOVE_RECURSE "${OUT}")
set(args --train "${DATA}/train_*.bin" --val "${DATA}/val_*.bin" --tokenizer byte
         --layers 2 --d-model 32 --heads 2 --seq-len 32 --batch 2 --steps 6 --warmup 2
         --eval-every 2 --eval-batches 2 --sample-tokens 0 --ckpt-every 1 --keep-ckpts 10
         --threads 2 --out "${OUT}")

include("${CMAKE_CURRENT_LIST_DIR}/train_run.cmake")
function(expect pattern)
  if(NOT out MATCHES "${pattern}")
    message(FATAL_ERROR "expected output matching '${pattern}', got:\n${out}")
  endif()
endfunction()

run(0 --lr 1e-3 --stop-after 3)
run(1 --lr 1e40 --resume)
expect("step 3: the loss is [0-9.]+ and the gradient norm [0-9.]+; the first non-finite tensor is the value of wte \\(element [0-9]+ is -?(inf|nan)\\); training diverged\\. The last good checkpoint is [^\n]*ckpt_00000003")
if(NOT EXISTS "${OUT}/ckpt_00000003/DONE" OR EXISTS "${OUT}/ckpt_00000004")
  message(FATAL_ERROR "the divergence should keep ckpt_00000003 and write nothing after it")
endif()

run(1 --lr 1e40 --resume --on-divergence rollback --rollback-lr-factor 0.5 --max-rollbacks 2)
expect("rolled back to [^\n]*ckpt_00000003 \\(rollback 2 of 2\\)")
expect("2 rollbacks did not help")

run(0 --lr 1e40 --resume --on-divergence rollback --rollback-lr-factor 1e-43)
expect("rolled back to [^\n]*ckpt_00000003 \\(rollback 1 of 3\\); learning rate x1e-43 from now on")
if(NOT EXISTS "${OUT}/ckpt_00000006/DONE")
  message(FATAL_ERROR "the rolled-back run did not finish")
endif()
message(STATUS "divergence stops or rolls back as asked")
