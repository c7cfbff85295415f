# Packaging test fixture (ctest packaging.shared_install): builds fnbus as a
# shared library (BUILD_SHARED_LIBS=ON; the library only, no tests or
# examples) in its own build folder and installs it into a fresh prefix,
# for the consumers of packaging.find_package_shared and
# packaging.pkg_config_shared. The build folder is kept between runs, so a
# rerun rebuilds only what changed.
#
#   cmake -DSOURCE_DIR=<fnbus source dir> -DBUILD_DIR=<build dir, kept>
#         -DPREFIX=<install prefix, deleted and recreated>
#         -DCMAKE_GENERATOR=<generator>
#         [-DCMAKE_CXX_COMPILER=<compiler>] [-DCMAKE_BUILD_TYPE=<type>]
#         -P shared_install.cmake
cmake_minimum_required(VERSION 3.25)
include("${CMAKE_CURRENT_LIST_DIR}/packaging_common.cmake")

fnbus_packaging_require(SOURCE_DIR BUILD_DIR PREFIX CMAKE_GENERATOR)

set(options
  -DBUILD_SHARED_LIBS=ON -DFNBUS_INSTALL=ON
  -DFNBUS_BUILD_TESTS=OFF -DFNBUS_BUILD_EXAMPLES=OFF -DFNBUS_BUILD_BENCH=OFF)
foreach(var IN ITEMS CMAKE_CXX_COMPILER CMAKE_BUILD_TYPE)
  if(DEFINED ${var} AND NOT "${${var}}" STREQUAL "")
    list(APPEND options "-D${var}=${${var}}")
  endif()
endforeach()

run_step("configure a shared fnbus in ${BUILD_DIR}"
  "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BUILD_DIR}" -G "${CMAKE_GENERATOR}"
  ${options})

cmake_host_system_information(RESULT cores QUERY NUMBER_OF_LOGICAL_CORES)
run_step("build the shared fnbus"
  "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --parallel ${cores})
# Shown in the test's output (ctest -V): the shared build must be as free
# of warnings as the others.
string(REGEX MATCHALL "[^\n]*warning:[^\n]*" warnings "${step_output}")
foreach(warning IN LISTS warnings)
  message(WARNING "shared build: ${warning}")
endforeach()

file(REMOVE_RECURSE "${PREFIX}")
run_step("install the shared fnbus into ${PREFIX}"
  "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}")
