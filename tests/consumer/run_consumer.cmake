# cmake -DMODE=find_package|add_subdirectory -DBONSAI_SOURCE_DIR=... -DCONSUMER_SOURCE_DIR=...
#       -DWORK_DIR=... [-DCXX_COMPILER=...] -P run_consumer.cmake
#
# find_package:      configure bonsai afresh (no tests/benchmarks/CUDA), install it into
#                    WORK_DIR/prefix, then configure, build and run the consumer against it.
# add_subdirectory:  configure, build and run the consumer, which pulls bonsai in itself.
cmake_minimum_required(VERSION 3.24)

foreach(var MODE BONSAI_SOURCE_DIR CONSUMER_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()

# Same generator family as the main build where possible.
set(generator_args)
find_program(NINJA_EXECUTABLE ninja)
if(NINJA_EXECUTABLE)
  set(generator_args -G Ninja "-DCMAKE_MAKE_PROGRAM=${NINJA_EXECUTABLE}")
endif()
if(CXX_COMPILER)
  list(APPEND generator_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()

function(run)
  string(REPLACE ";" " " pretty "${ARGN}")
  message(STATUS "run_consumer: ${pretty}")
  execute_process(COMMAND ${ARGN} COMMAND_ERROR_IS_FATAL ANY)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(consumer_args)

if(MODE STREQUAL "find_package")
  set(prefix "${WORK_DIR}/prefix")
  run("${CMAKE_COMMAND}" -S "${BONSAI_SOURCE_DIR}" -B "${WORK_DIR}/bonsai-build"
      ${generator_args}
      -DCMAKE_BUILD_TYPE=Release
      "-DCMAKE_INSTALL_PREFIX=${prefix}"
      -DBONSAI_BUILD_TESTS=OFF -DBONSAI_BUILD_BENCHMARKS=OFF -DBONSAI_BUILD_EXAMPLES=OFF
      -DBONSAI_ENABLE_CUDA=OFF -DBONSAI_INSTALL=ON)
  run("${CMAKE_COMMAND}" --build "${WORK_DIR}/bonsai-build")
  run("${CMAKE_COMMAND}" --install "${WORK_DIR}/bonsai-build")
  list(APPEND consumer_args "-DCMAKE_PREFIX_PATH=${prefix}")
elseif(MODE STREQUAL "add_subdirectory")
  list(APPEND consumer_args "-DBONSAI_SOURCE_DIR=${BONSAI_SOURCE_DIR}" -DBONSAI_ENABLE_CUDA=OFF)
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

set(build "${WORK_DIR}/consumer-build")
run("${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${build}" ${generator_args}
    -DCMAKE_BUILD_TYPE=Release ${consumer_args})
run("${CMAKE_COMMAND}" --build "${build}")

# The extern-template pattern of docs/compile_times.md: the model's forward (and with it the
# softmax cross-entropy it calls) is compiled into model_instances.cpp's object and not into
# train_step.cpp's.
if(MODE STREQUAL "find_package")
  set(objects "${build}/CMakeFiles/consumer_instances.dir")
  file(STRINGS "${objects}/model_instances.cpp.o" defined REGEX "softmax_cross_entropy")
  file(STRINGS "${objects}/train_step.cpp.o" leaked REGEX "softmax_cross_entropy")
  if(NOT defined OR leaked)
    message(FATAL_ERROR "run_consumer.cmake: Gpt::forward should be compiled in "
                        "model_instances.cpp only (there: '${defined}'; in train_step.cpp: "
                        "'${leaked}')")
  endif()
endif()

# Run the programs: "consumer" always, "consumer_onednn" when bonsai::onednn exists, and
# "consumer_instances" (find_package).
if(NOT EXISTS "${build}/consumer")
  message(FATAL_ERROR "run_consumer.cmake: ${build}/consumer was not built")
endif()
set(ran 0)
foreach(program consumer consumer_onednn consumer_instances)
  if(EXISTS "${build}/${program}")
    run("${build}/${program}")
    math(EXPR ran "${ran} + 1")
  endif()
endforeach()
message(STATUS "run_consumer: ${MODE} OK (${ran} program(s) ran)")
