# Runs PRODUCER (with PRODUCER_ARGS), then feeds its standard output to
# CHECKER (with CHECKER_ARGS; both argument lists are space-separated
# strings, so that no `;` has to pass through add_test) and fails unless
#   - both exit with status 0,
#   - the producer's output contains REQUIRE_TEXT (so that an empty or
#     truncated output cannot pass), and
#   - with EXPECT_SILENT, the checker prints nothing at all (promtool
#     reports lint problems as text).
# With PRODUCER_WRITES_WORK_FILE, the producer writes WORK_FILE itself
# (e.g. `storefront --metrics-out FILE`) and its standard output is ignored.
# Used by the ctests metrics.promtool and metrics.json:
#   cmake -DPRODUCER=... -DCHECKER=/usr/bin/promtool "-DCHECKER_ARGS=check metrics"
#         -DEXPECT_SILENT=ON -DREQUIRE_TEXT=... -DWORK_FILE=... -P check_output.cmake
foreach(var PRODUCER CHECKER REQUIRE_TEXT WORK_FILE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_output.cmake: ${var} is not set")
  endif()
endforeach()

separate_arguments(producer_args UNIX_COMMAND "${PRODUCER_ARGS}")
separate_arguments(checker_args UNIX_COMMAND "${CHECKER_ARGS}")
set(checker_line "${CHECKER} ${CHECKER_ARGS}")

if(PRODUCER_WRITES_WORK_FILE)
  # The producer writes WORK_FILE itself (its arguments name it); what it
  # prints is not checked.
  file(REMOVE ${WORK_FILE})
  execute_process(COMMAND ${PRODUCER} ${producer_args}
                  OUTPUT_VARIABLE producer_out
                  ERROR_VARIABLE producer_err
                  RESULT_VARIABLE producer_rc)
else()
  execute_process(COMMAND ${PRODUCER} ${producer_args}
                  OUTPUT_FILE ${WORK_FILE}
                  ERROR_VARIABLE producer_err
                  RESULT_VARIABLE producer_rc)
endif()
if(NOT producer_rc EQUAL 0)
  message(FATAL_ERROR "${PRODUCER} ${PRODUCER_ARGS} failed (${producer_rc}):\n${producer_err}")
endif()
file(READ ${WORK_FILE} produced)
string(FIND "${produced}" "${REQUIRE_TEXT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the output of ${PRODUCER} lacks \"${REQUIRE_TEXT}\" (see ${WORK_FILE})")
endif()

execute_process(COMMAND ${CHECKER} ${checker_args}
                INPUT_FILE ${WORK_FILE}
                OUTPUT_VARIABLE checker_out
                ERROR_VARIABLE checker_err
                RESULT_VARIABLE checker_rc)
string(STRIP "${checker_out}${checker_err}" checker_text)
if(NOT checker_rc EQUAL 0)
  message(FATAL_ERROR "`${checker_line}` rejected ${WORK_FILE} (exit ${checker_rc}):\n${checker_text}")
endif()
if(EXPECT_SILENT AND NOT checker_text STREQUAL "")
  message(FATAL_ERROR "`${checker_line}` complained about ${WORK_FILE}:\n${checker_text}")
endif()
string(LENGTH "${produced}" produced_length)
message(STATUS "`${checker_line}` accepted ${produced_length} bytes from ${PRODUCER} ${PRODUCER_ARGS}")
