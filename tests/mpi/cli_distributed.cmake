# One `ctest -L mpi` case: `MPIEXEC NUMPROC_FLAG NP PREFLAGS kfuse run SPEC
# --distributed --check` must pass its checks (bit-identical to a
# single-process run, and the float64 reference) and write the same .npy
# bytes as `kfuse run SPEC` in one process. With INPUT_SPEC, the input is an
# .npy made first by `kfuse run INPUT_SPEC --output` and given to both runs
# with --input (each rank reads its rows at their offset).
# PREFLAGS and POSTFLAGS are lists with '|' for ';'.
foreach(v KFUSE MPIEXEC NUMPROC_FLAG NP SPEC WORK)
  if(NOT DEFINED ${v} OR "${${v}}" STREQUAL "")
    message(FATAL_ERROR "cli_distributed.cmake: -D${v}=... is required")
  endif()
endforeach()
string(REPLACE "|" ";" preflags "${PREFLAGS}")
string(REPLACE "|" ";" postflags "${POSTFLAGS}")
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

function(run_or_fail what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${what}: ${ARGN}\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (exit ${rc})")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

set(input_args)
if(DEFINED INPUT_SPEC AND NOT INPUT_SPEC STREQUAL "")
  run_or_fail("making the input" ${KFUSE} run ${INPUT_SPEC} --repeat 0 --warmup 0 --output ${WORK}/x.npy)
  set(input_args --input ${WORK}/x.npy)
endif()

run_or_fail("single process" ${KFUSE} run ${SPEC} ${input_args} --repeat 0 --warmup 0 --output ${WORK}/single.npy)
run_or_fail("${NP} ranks" ${MPIEXEC} ${NUMPROC_FLAG} ${NP} ${preflags} ${KFUSE} ${postflags} run ${SPEC} ${input_args}
            --distributed --check --repeat 1 --warmup 0 --output ${WORK}/distributed.npy)
if(NOT last_output MATCHES "check: single-process run \\(strategy [a-z]+\\): bit-identical")
  message(FATAL_ERROR "the distributed run did not report a bit-identical single-process check")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${WORK}/single.npy ${WORK}/distributed.npy RESULT_VARIABLE differ)
if(NOT differ EQUAL 0)
  message(FATAL_ERROR "${WORK}/distributed.npy (${NP} ranks) differs from ${WORK}/single.npy (one process)")
endif()
message(STATUS "${NP} ranks: the same bytes as one process")
