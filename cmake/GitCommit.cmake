# Writes OUT, a header defining KFUSE_GIT_COMMIT as the commit of the tree at
# SRC (git describe --always --dirty: "-dirty" when tracked files differ from
# it), and only when that changed, so that an unchanged tree rebuilds nothing.
# Run at every build by perf/gpu/CMakeLists.txt.
execute_process(COMMAND git -C "${SRC}" describe --always --dirty --abbrev=7
                OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT commit)
  set(commit "unknown")
endif()
set(text "#define KFUSE_GIT_COMMIT \"${commit}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
