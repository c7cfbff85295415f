# Packaging test (ctest packaging.shared_exports): a shared libfnbus has the
# soname libfnbus.so.<major>, and exports fnbus's own symbols only (see
# cmake/fnbus.map): every defined dynamic symbol, demangled, is in the
# fnbus namespace or is the type_info, vtable, thunk, guard variable or TLS
# helper of a name in it. Nothing of fmt, Abseil or std.
#
#   cmake -DLIBRARY=<libfnbus.so.N> -DEXPECT_VERSION=<project version>
#         -DNM=<nm> -DREADELF=<readelf> -P check_exports.cmake
cmake_minimum_required(VERSION 3.25)
include("${CMAKE_CURRENT_LIST_DIR}/packaging_common.cmake")

fnbus_packaging_require(LIBRARY EXPECT_VERSION NM READELF)
if(NOT EXISTS "${LIBRARY}")
  message(FATAL_ERROR "packaging: no shared library ${LIBRARY}")
endif()

string(REGEX MATCH "^[0-9]+" major "${EXPECT_VERSION}")
run_step("read the dynamic section" "${READELF}" -d "${LIBRARY}")
if(NOT step_output MATCHES "SONAME[^\n]*\\[libfnbus\\.so\\.${major}\\]")
  message(FATAL_ERROR "packaging: the soname of ${LIBRARY} is not libfnbus.so.${major}:\n${step_output}")
endif()

run_step("list the exported symbols" "${NM}" -D --defined-only -C "${LIBRARY}")
# One list element per line. Square brackets (operator[], abi tags) would
# keep CMake from splitting the list at the `;` between them: read them as
# parentheses.
string(REPLACE ";" "\\;" listing "${step_output}")
string(REPLACE "[" "(" listing "${listing}")
string(REPLACE "]" ")" listing "${listing}")
string(REPLACE "\n" ";" lines "${listing}")
set(abi_prefixes
  "typeinfo for " "typeinfo name for " "vtable for " "VTT for "
  "non-virtual thunk to " "virtual thunk to " "covariant return thunk to "
  "guard variable for " "TLS init function for " "TLS wrapper function for ")
set(exported 0)
set(unexpected "")
foreach(line IN LISTS lines)
  if(line STREQUAL "")
    continue()
  endif()
  # "<address> <type> <demangled name>"
  if(NOT line MATCHES "^[0-9a-fA-F]* *[A-Za-z] (.*)$")
    message(FATAL_ERROR "packaging: unexpected nm line: ${line}")
  endif()
  set(name "${CMAKE_MATCH_1}")
  foreach(abi_prefix IN LISTS abi_prefixes)
    string(FIND "${name}" "${abi_prefix}" at)
    if(at EQUAL 0)
      string(LENGTH "${abi_prefix}" length)
      string(SUBSTRING "${name}" ${length} -1 name)
      break()
    endif()
  endforeach()
  if(name MATCHES "^construction vtable for .*-in-(.*)$")
    set(name "${CMAKE_MATCH_1}")
  endif()
  if(name MATCHES "^fnbus::")
    math(EXPR exported "${exported} + 1")
  else()
    string(APPEND unexpected "  ${line}\n")
  endif()
endforeach()
if(NOT unexpected STREQUAL "")
  message(FATAL_ERROR
    "packaging: ${LIBRARY} exports symbols outside fnbus (see cmake/fnbus.map):\n${unexpected}")
endif()
if(exported EQUAL 0)
  message(FATAL_ERROR "packaging: ${LIBRARY} exports nothing")
endif()
message(STATUS "packaging: libfnbus.so.${major} exports ${exported} symbols, all of fnbus")
