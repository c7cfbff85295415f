# Helpers shared by the packaging tests' scripts (check.cmake here,
# ../pkg_config/check.cmake, shared_install.cmake, check_exports.cmake).
# Included by a script run with `cmake -P`.

# fnbus_packaging_require(<var>...): stops when a -D<var>=... is missing.
function(fnbus_packaging_require)
  foreach(var IN LISTS ARGN)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
      message(FATAL_ERROR "${CMAKE_SCRIPT_MODE_FILE}: pass -D${var}=...")
    endif()
  endforeach()
endfunction()

# run_step(<name> <command>...): runs one command; on failure prints its
# output and stops the test. Leaves the output in step_output.
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

# fnbus_stage_prefix(<out_var>): the prefix to build a consumer against:
# FNBUS_PREFIX when the caller installed fnbus already, else a fresh
# install of the build in FNBUS_BINARY_DIR into <WORK_DIR>/prefix.
function(fnbus_stage_prefix out_var)
  if(DEFINED FNBUS_PREFIX AND NOT "${FNBUS_PREFIX}" STREQUAL "")
    if(NOT IS_DIRECTORY "${FNBUS_PREFIX}")
      message(FATAL_ERROR "packaging: no installed fnbus in ${FNBUS_PREFIX}")
    endif()
    set(${out_var} "${FNBUS_PREFIX}" PARENT_SCOPE)
    return()
  endif()
  fnbus_packaging_require(FNBUS_BINARY_DIR)
  set(prefix "${WORK_DIR}/prefix")
  run_step("install fnbus into ${prefix}"
    "${CMAKE_COMMAND}" --install "${FNBUS_BINARY_DIR}" --prefix "${prefix}")
  set(${out_var} "${prefix}" PARENT_SCOPE)
endfunction()

# fnbus_check_linkage(<program> <static|shared> <prefix> <major version>):
# a static fnbus must be linked into the program; a shared one must be
# loaded, as libfnbus.so.<major>, from <prefix> (what ldd resolves).
function(fnbus_check_linkage program linkage prefix major)
  find_program(ldd_program ldd)
  if(NOT ldd_program)
    message(STATUS "packaging: ldd not found; linkage not checked")
    return()
  endif()
  run_step("ldd ${program}" "${ldd_program}" "${program}")
  set(ldd_output "${step_output}")
  if(linkage STREQUAL "static")
    if(ldd_output MATCHES "libfnbus")
      message(FATAL_ERROR "packaging: a static fnbus, yet the consumer loads:\n${ldd_output}")
    endif()
    message(STATUS "packaging: the consumer has fnbus linked in (no libfnbus.so)")
    return()
  endif()
  set(soname "libfnbus.so.${major}")
  string(REPLACE "." "\\." soname_pattern "${soname}")
  if(NOT ldd_output MATCHES "${soname_pattern} => ([^ \n]+)")
    message(FATAL_ERROR "packaging: the consumer does not load ${soname}:\n${ldd_output}")
  endif()
  set(loaded_as "${CMAKE_MATCH_1}")
  file(REAL_PATH "${loaded_as}" loaded)
  file(REAL_PATH "${prefix}" real_prefix)
  string(FIND "${loaded}" "${real_prefix}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR
      "packaging: the consumer loads ${soname} from ${loaded}, not from ${prefix}")
  endif()
  message(STATUS "packaging: the consumer loads ${soname} => ${loaded_as}")
endfunction()
