# fnbus_configure_pkg_config(<target> <template> <output>)
#
# Writes fnbus.pc from <template>, with Requires taken from the target's own
# link libraries so that the pkg-config file and the CMake package cannot
# list different dependencies: PUBLIC ones go to Requires (Libs and Cflags
# for Threads), PRIVATE ones to Requires.private, which pkg-config adds only
# with --static (a shared libfnbus.so records them itself; a static libfnbus.a
# is linked with `pkg-config --static --libs fnbus`).
#
# Debian names Abseil's pkg-config modules after its CMake targets
# (absl::statusor -> absl_statusor, see /usr/lib/*/pkgconfig/absl_*.pc); a
# link library of another kind must be given a module name below.
function(fnbus_pkg_config_module library out_var)
  if(library MATCHES "^absl::(.+)$")
    set(module "absl_${CMAKE_MATCH_1}")
  elseif(library STREQUAL "fmt::fmt" OR library STREQUAL "fmt::fmt-header-only")
    set(module fmt)
  else()
    message(FATAL_ERROR
      "fnbus.pc: no pkg-config module known for link library '${library}'; "
      "add one to cmake/fnbus-pkg-config.cmake")
  endif()
  set(${out_var} ${module} PARENT_SCOPE)
endfunction()

function(fnbus_configure_pkg_config target template output)
  get_target_property(all_libraries ${target} LINK_LIBRARIES)
  get_target_property(interface_libraries ${target} INTERFACE_LINK_LIBRARIES)
  # A static library's interface also lists its private dependencies, as
  # $<LINK_ONLY:...>: those are not public.
  set(public_libraries "")
  foreach(library IN LISTS interface_libraries)
    if(NOT library MATCHES "^\\$<LINK_ONLY:")
      list(APPEND public_libraries "${library}")
    endif()
  endforeach()

  set(requires "")
  set(requires_private "")
  set(libs "")
  set(cflags "")
  foreach(library IN LISTS all_libraries)
    if(library STREQUAL "Threads::Threads")
      # Public: fnbus's headers start and join threads.
      list(APPEND libs -pthread)
      list(APPEND cflags -pthread)
      continue()
    endif()
    fnbus_pkg_config_module("${library}" module)
    if(library IN_LIST public_libraries)
      list(APPEND requires ${module})
    else()
      list(APPEND requires_private ${module})
    endif()
  endforeach()
  list(REMOVE_DUPLICATES requires)
  list(REMOVE_DUPLICATES requires_private)
  list(JOIN requires ", " FNBUS_PC_REQUIRES)
  list(JOIN requires_private ", " FNBUS_PC_REQUIRES_PRIVATE)
  list(JOIN libs " " FNBUS_PC_LIBS)
  list(JOIN cflags " " FNBUS_PC_CFLAGS)
  get_target_property(FNBUS_PC_LIBNAME ${target} OUTPUT_NAME)
  if(NOT FNBUS_PC_LIBNAME)
    set(FNBUS_PC_LIBNAME ${target})
  endif()

  # prefix relative to the .pc file's folder (${pcfiledir}), so that the
  # file works wherever the prefix is installed or moved to; absolute
  # install dirs are used as they are.
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
    set(FNBUS_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
    set(FNBUS_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
    set(FNBUS_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
  else()
    file(RELATIVE_PATH up "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
    string(REGEX REPLACE "/$" "" up "${up}")
    set(FNBUS_PC_PREFIX "\${pcfiledir}/${up}")
    set(FNBUS_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
    set(FNBUS_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
  endif()
  configure_file("${template}" "${output}" @ONLY)
endfunction()
