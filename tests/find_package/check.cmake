# Packaging test: installs a built fnbus into a staging prefix, then
# configures, builds and runs the consumer project in this folder against
# that prefix with find_package(fnbus).
#
# Run as a script (see tests/CMakeLists.txt):
#   cmake -DFNBUS_BINARY_DIR=<fnbus build dir>
#         -DCONSUMER_SOURCE_DIR=<repo>/tests/find_package
#         -DWORK_DIR=<scratch dir, deleted and recreated>
#         -DCMAKE_GENERATOR=<generator>
#         -P check.cmake
cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS FNBUS_BINARY_DIR CONSUMER_SOURCE_DIR WORK_DIR CMAKE_GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "check.cmake: pass -D${var}=...")
  endif()
endforeach()

set(prefix "${WORK_DIR}/prefix")
# Build the consumer with the compiler fnbus was built with, if given.
set(consumer_compiler "")
if(DEFINED CMAKE_CXX_COMPILER AND NOT "${CMAKE_CXX_COMPILER}" STREQUAL "")
  set(consumer_compiler "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}")
endif()
set(consumer_build "${WORK_DIR}/build")

# Runs one command; on failure prints its output and stops the test.
function(run_step name)
  message(STATUS "packaging: ${name}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output)
  if(NOT result EQUAL 0)
    string(REPLACE ";" " " command "${ARGN}")
    message(FATAL_ERROR
      "packaging: ${name} failed (${result})\n"
      "command: ${command}\n"
      "output:\n${output}")
  endif()
  message(STATUS "packaging: ${name}: ok")
  set(step_output "${output}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

run_step("install fnbus into ${prefix}"
  "${CMAKE_COMMAND}" --install "${FNBUS_BINARY_DIR}" --prefix "${prefix}")

# Only the staged prefix is searched for fnbus; its dependencies (absl,
# fmt, Threads) come from the system as they would for a user.
run_step("configure the consumer"
  "${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${consumer_build}"
  -G "${CMAKE_GENERATOR}" "-DCMAKE_PREFIX_PATH=${prefix}" ${consumer_compiler})

run_step("build the consumer" "${CMAKE_COMMAND}" --build "${consumer_build}")

# Single-config generators put the program in the build folder; multi-config
# ones in a per-configuration subfolder.
set(consumer "")
foreach(candidate IN ITEMS
    "${consumer_build}/consumer" "${consumer_build}/consumer.exe"
    "${consumer_build}/Debug/consumer" "${consumer_build}/Debug/consumer.exe")
  if(EXISTS "${candidate}")
    set(consumer "${candidate}")
    break()
  endif()
endforeach()
if(consumer STREQUAL "")
  message(FATAL_ERROR "packaging: built consumer not found in ${consumer_build}")
endif()

run_step("run the consumer" "${consumer}")
string(STRIP "${step_output}" step_output)
message(STATUS "${step_output}")
