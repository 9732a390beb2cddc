# Two flag sets train the same model: the step-6 model and optimizer checkpoints of the run with
# A and of the run with B must be byte-identical (e.g. SAT whose ladder is dense from step 0
# against plain training).
#   cmake -DTRAIN=<train_gpt> -DDATA=<shard dir> -DOUT=<scratch dir> -DA="..." -DB="..."
#         -P check_same_run.cmake
file(REMOVE_RECURSE "${OUT}")
set(args --train "${DATA}/train_*.bin" --val "${DATA}/val_*.bin" --tokenizer byte
         --layers 2 --d-model 32 --heads 2 --seq-len 32 --batch 2 --grad-accum 2 --steps 6
         --warmup 2 --eval-every 3 --eval-batches 2 --sample-tokens 0 --ffn lowrank --rank 8
         --shuffle --threads 2)

foreach(run A B)
  separate_arguments(extra UNIX_COMMAND "${${run}}")
  execute_process(COMMAND "${TRAIN}" ${args} ${extra} --out "${OUT}/${run}" RESULT_VARIABLE rc
                  OUTPUT_VARIABLE log ERROR_VARIABLE log)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "train_gpt ${${run}} failed (${rc}):\n${log}")
  endif()
endforeach()
foreach(f ckpt_00000006/model.safetensors ckpt_00000006/optimizer.safetensors)
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files "${OUT}/A/${f}" "${OUT}/B/${f}"
                  RESULT_VARIABLE differ)
  if(differ)
    message(FATAL_ERROR "'${A}' and '${B}' differ in ${f}")
  endif()
endforeach()
message(STATUS "'${A}' and '${B}' train bit for bit the same")
