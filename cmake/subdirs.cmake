# vusb_add_subdirs(): add every direct subdirectory that has a CMakeLists.txt, so modules and test
# folders can be added without editing a shared list.
function(vusb_add_subdirs)
  file(GLOB _entries LIST_DIRECTORIES true RELATIVE ${CMAKE_CURRENT_SOURCE_DIR}
       ${CMAKE_CURRENT_SOURCE_DIR}/*)
  list(SORT _entries)
  foreach(_e ${_entries})
    if(IS_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/${_e} AND EXISTS
       ${CMAKE_CURRENT_SOURCE_DIR}/${_e}/CMakeLists.txt)
      add_subdirectory(${_e})
    endif()
  endforeach()
endfunction()

# vusb_unit_test(NAME SOURCES ... LIBS ...): one GoogleTest binary = one ctest entry.
function(vusb_unit_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gmock GTest::gtest GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME unit.${name} COMMAND ${name})
  set_tests_properties(unit.${name} PROPERTIES LABELS unit TIMEOUT 120)
endfunction()
