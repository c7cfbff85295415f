# Packaging test: configures, builds and runs the consumer project in this
# folder with find_package(fnbus) against an installed fnbus, and checks
# how the consumer is linked to it (ldd).
#
# Run as a script (see tests/CMakeLists.txt):
#   cmake -DFNBUS_BINARY_DIR=<fnbus build dir, installed into WORK_DIR/prefix>
#         (or -DFNBUS_PREFIX=<a prefix fnbus is installed in already>)
#         -DCONSUMER_SOURCE_DIR=<repo>/tests/find_package
#         -DWORK_DIR=<scratch dir, deleted and recreated>
#         -DCMAKE_GENERATOR=<generator>
#         -DEXPECT_VERSION=<fnbus's project version>
#         -DEXPECT_LINKAGE=static|shared
#         [-DCMAKE_CXX_COMPILER=<compiler>]
#         -P check.cmake
cmake_minimum_required(VERSION 3.25)
include("${CMAKE_CURRENT_LIST_DIR}/packaging_common.cmake")

fnbus_packaging_require(CONSUMER_SOURCE_DIR WORK_DIR CMAKE_GENERATOR
                        EXPECT_VERSION EXPECT_LINKAGE)

# Build the consumer with the compiler fnbus was built with, if given.
set(consumer_compiler "")
if(DEFINED CMAKE_CXX_COMPILER AND NOT "${CMAKE_CXX_COMPILER}" STREQUAL "")
  set(consumer_compiler "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}")
endif()
set(consumer_build "${WORK_DIR}/build")

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

fnbus_stage_prefix(prefix)

# Only the staged prefix is searched for fnbus; its dependencies (absl,
# fmt, Threads) come from the system as they would for a user. The
# consumer checks that the package's version is EXPECT_VERSION and that
# fnbus/version.hpp says the same.
run_step("configure the consumer"
  "${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${consumer_build}"
  -G "${CMAKE_GENERATOR}" "-DCMAKE_PREFIX_PATH=${prefix}" ${consumer_compiler}
  "-DFNBUS_EXPECTED_VERSION=${EXPECT_VERSION}")

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

string(REGEX MATCH "^[0-9]+" major "${EXPECT_VERSION}")
fnbus_check_linkage("${consumer}" "${EXPECT_LINKAGE}" "${prefix}" "${major}")

run_step("run the consumer" "${consumer}")
string(STRIP "${step_output}" step_output)
message(STATUS "${step_output}")
