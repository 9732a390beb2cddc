# run(<expected exit code> <flags>...): runs ${TRAIN} ${args} <flags>, fails unless it succeeds
# (0) or fails (any other code) as expected, and leaves its standard output and error in `out`.
function(run expect_rc)
  execute_process(COMMAND "${TRAIN}" ${args} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE out)
  if((expect_rc EQUAL 0 AND NOT rc EQUAL 0) OR (NOT expect_rc EQUAL 0 AND rc EQUAL 0))
    message(FATAL_ERROR "train_gpt ${ARGN}: exit code ${rc}, expected ${expect_rc}:\n${out}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()
