# Resume is exact: N steps straight and (K steps, stop, --resume, N - K steps) must leave
# byte-identical model and optimizer checkpoints and the same loss log. EXTRA adds trainer
# flags, FFN replaces the default FFN flags (--ffn lowrank --rank 8); with SGT flags that release the guides between steps 3 and 6, the step-3 checkpoint
# must hold the guides and the step-6 one must not.
#   cmake -DTRAIN=<train_gpt> -DDATA=<shard dir> -DOUT=<scratch dir> [-DEXTRA="--sgt cosine"]
#         [-DFFN="--ffn dense"] -P check_resume.cmake
file(REMOVE_RECURSE "${OUT}")
separate_arguments(extra UNIX_COMMAND "${EXTRA}")
if(NOT DEFINED FFN)
  set(FFN "--ffn lowrank --rank 8")
endif()
separate_arguments(ffn UNIX_COMMAND "${FFN}")
set(args --train "${DATA}/train_*.bin" --val "${DATA}/val_*.bin" --tokenizer byte
         --layers 2 --d-model 32 --heads 2 --seq-len 32 --batch 2 --grad-accum 2 --steps 6
         --warmup 2 --eval-every 2 --eval-batches 2 --sample-tokens 4 ${ffn} --shuffle
         --threads 2 ${extra})

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
if(EXTRA MATCHES "--sgt")
  file(READ "${OUT}/resumed/ckpt_00000003/model.safetensors" head OFFSET 8 LIMIT 65536)
  file(READ "${OUT}/resumed/ckpt_00000006/model.safetensors" tail OFFSET 8 LIMIT 65536)
  if(NOT head MATCHES "mlp\\.up\\.guide" OR tail MATCHES "guide")
    message(FATAL_ERROR "the guides should be in the step-3 checkpoint and gone by step 6")
  endif()
endif()
message(STATUS "resume is bit-for-bit")
