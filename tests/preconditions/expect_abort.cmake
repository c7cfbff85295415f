# Runs PROGRAM (with the optional argument ARGS), which must stop (non-zero
# exit or a signal) and print something matching EXPECT on stderr or
# stdout.
execute_process(COMMAND ${PROGRAM} ${ARGS} RESULT_VARIABLE result
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(result EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} ${ARGS} exited 0; it should have stopped")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "${PROGRAM} ${ARGS} stopped (${result}) without the "
                      "message '${EXPECT}'; it printed:\n${out}${err}")
endif()
