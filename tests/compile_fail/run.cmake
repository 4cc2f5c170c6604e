# Compile-fail check (after Eigen's failtests): SRC must NOT compile, and the compiler's message
# must match EXPECT (the concept's name), so the test fails for the right reason only.
separate_arguments(flags UNIX_COMMAND "${FLAGS}")
string(REPLACE "|" ";" incs "${INCLUDES}")
set(args)
foreach(i ${incs})
  list(APPEND args "-I${i}")
endforeach()
execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only ${args} ${flags} ${SRC}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SRC} compiled, but it must be rejected")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "${SRC} failed to compile, but not with '${EXPECT}':\n${err}")
endif()
message(STATUS "rejected as expected ('${EXPECT}')")
