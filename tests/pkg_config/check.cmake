# Packaging test: builds ../find_package/consumer.cpp (the find_package
# test's consumer) against an installed fnbus with pkg-config only (no
# CMake package), the way a Makefile would:
#
#   c++ -std=c++20 consumer.cpp -o consumer $(pkg-config --cflags --libs fnbus)
#
# with PKG_CONFIG_PATH pointing at the prefix's fnbus.pc, then checks how
# the program is linked to fnbus (ldd) and runs it. A static fnbus is
# linked with `pkg-config --static` (its private dependencies, fmt and
# absl_strings, are in Requires.private); a shared one with an rpath to the
# .pc's libdir, as the prefix is not on the loader's path.
#
#   cmake -DFNBUS_BINARY_DIR=<fnbus build dir, installed into WORK_DIR/prefix>
#         (or -DFNBUS_PREFIX=<a prefix fnbus is installed in already>)
#         -DCONSUMER_SOURCE=<repo>/tests/find_package/consumer.cpp
#         -DWORK_DIR=<scratch dir, deleted and recreated>
#         -DPKG_CONFIG=<pkg-config> -DCXX=<C++ compiler>
#         -DEXPECT_VERSION=<fnbus's project version>
#         -DEXPECT_LINKAGE=static|shared
#         -P check.cmake
cmake_minimum_required(VERSION 3.25)
include("${CMAKE_CURRENT_LIST_DIR}/../find_package/packaging_common.cmake")

fnbus_packaging_require(CONSUMER_SOURCE WORK_DIR PKG_CONFIG CXX
                        EXPECT_VERSION EXPECT_LINKAGE)

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

fnbus_stage_prefix(prefix)

file(GLOB_RECURSE pc_files "${prefix}/*/fnbus.pc")
list(LENGTH pc_files count)
if(NOT count EQUAL 1)
  message(FATAL_ERROR "packaging: want one fnbus.pc under ${prefix}, found: ${pc_files}")
endif()
cmake_path(GET pc_files PARENT_PATH pc_dir)
# Only the prefix's fnbus.pc is added; absl_*.pc and fmt.pc come from the
# system's pkg-config path, as they would for a user.
set(ENV{PKG_CONFIG_PATH} "${pc_dir}")

run_step("pkg-config --modversion fnbus" "${PKG_CONFIG}" --modversion fnbus)
string(STRIP "${step_output}" version)
if(NOT version STREQUAL EXPECT_VERSION)
  message(FATAL_ERROR "packaging: fnbus.pc has version ${version}, expected ${EXPECT_VERSION}")
endif()

if(EXPECT_LINKAGE STREQUAL "static")
  set(static --static)
  set(rpath "")
else()
  set(static "")
  set(rpath "-Wl,-rpath,$(\"$PKG_CONFIG\" --variable=libdir fnbus)")
endif()
run_step("pkg-config ${static} --cflags --libs fnbus"
  "${PKG_CONFIG}" ${static} --cflags --libs fnbus)
string(STRIP "${step_output}" flags)
message(STATUS "packaging: ${flags}")

# The command as a user would type it, run by sh. The version macros must
# match EXPECT_VERSION (static_asserts in consumer.cpp); -Werror: fnbus's
# headers must compile without warnings in a user's -Wall -Wextra build.
string(REPLACE "." ";" numbers "${EXPECT_VERSION}")
list(GET numbers 0 major)
list(GET numbers 1 minor)
list(GET numbers 2 patch)
set(ENV{CXX} "${CXX}")
set(ENV{PKG_CONFIG} "${PKG_CONFIG}")
set(consumer "${WORK_DIR}/consumer")
set(command
  "\"$CXX\" -std=c++20 -Wall -Wextra -Werror"
  "-DEXPECTED_VERSION_MAJOR=${major} -DEXPECTED_VERSION_MINOR=${minor}"
  "-DEXPECTED_VERSION_PATCH=${patch}"
  "\"${CONSUMER_SOURCE}\" -o \"${consumer}\""
  "$(\"$PKG_CONFIG\" ${static} --cflags --libs fnbus) ${rpath}")
list(JOIN command " " command)
message(STATUS "packaging: ${command}")
run_step("compile and link the consumer" sh -c "${command}")

fnbus_check_linkage("${consumer}" "${EXPECT_LINKAGE}" "${prefix}" "${major}")

run_step("run the consumer" "${consumer}")
string(STRIP "${step_output}" step_output)
message(STATUS "${step_output}")
