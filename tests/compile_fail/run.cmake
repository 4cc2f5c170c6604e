# Compile-fail check (after Eigen's failtests): SRC must NOT compile, and the compiler's message
# must match EXPECT, so the test fails for the right reason only. EXPECT names the unsatisfied
# concept in the line GCC gives it alone ("required for the satisfaction of '...' [with ...]" or
# "the expression '...' evaluated to 'false'"), never a name that the template's whole requires
# clause, printed in the first error line, also contains. The compiler runs in the C locale, so its
# quotes are ASCII.
separate_arguments(flags UNIX_COMMAND "${FLAGS}")
string(REPLACE "|" ";" incs "${INCLUDES}")
set(args)
foreach(i ${incs})
  list(APPEND args "-I${i}")
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -E env LC_ALL=C LANG=C ${CXX} -std=c++20 -fsyntax-only ${args} ${flags} ${SRC}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SRC} compiled, but it must be rejected")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "${SRC} failed to compile, but not with '${EXPECT}':\n${err}")
endif()
message(STATUS "rejected as expected ('${EXPECT}')")
