# Resume is exact: N steps straight and (K steps, stop, --resume, N - K steps) must leave
# byte-identical model and optimizer checkpoints and the same loss log.
#   cmake -DTRAIN=<train_gpt> -DDATA=<shard dir> -DOUT=<scratch dir> -P check_resume.cmake
file(REMOVE_RECURSE "${OUT}")
set(args --train "${DATA}/train_*.bin" --val "${DATA}/val_*.bin" --tokenizer byte
         --layers 2 --d-model 32 --heads 2 --seq-len 32 --batch 2 --grad-accum 2 --steps 6
         --warmup 2 --eval-every 2 --eval-batches 2 --sample-tokens 4 --ffn lowrank --rank 8
         --shuffle --threads 2)

function(run)
  execute_process(COMMAND "${TRAIN}" ${args} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE log
                  ERROR_VARIABLE log)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "train_gpt ${ARGN} failed (${rc}):\n${log}")
  endif()
endfunction()

run(--out "${OUT}/straight")
run(--out "${OUT}/resumed" --stop-after 3)
if(NOT EXISTS "${OUT}/resumed/ckpt_00000003/DONE")
  message(FATAL_ERROR "--stop-after 3 left no checkpoint at step 3")
endif()
run(--out "${OUT}/resumed" --resume)

foreach(f ckpt_00000006/model.safetensors ckpt_00000006/optimizer.safetensors main.log)
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files "${OUT}/straight/${f}"
                          "${OUT}/resumed/${f}" RESULT_VARIABLE differ)
  if(differ)
    message(FATAL_ERROR "resumed run differs from the straight run in ${f}")
  endif()
endforeach()
message(STATUS "resume is bit-for-bit")
