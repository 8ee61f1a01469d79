# mfpo_warnings(target): the project's warning set, applied to our own targets only.
function(mfpo_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()

# mfpo_torch_pch(target): LibTorch headers cost ~15 s per translation unit; share one
# precompiled header across every torch-heavy target.
# The first target called with it builds the header; later ones reuse it.
function(mfpo_torch_pch target)
  if(NOT MFPO_USE_PCH)
    return()
  endif()
  get_property(anchor GLOBAL PROPERTY MFPO_PCH_ANCHOR)
  if(anchor)
    target_precompile_headers(${target} REUSE_FROM ${anchor})
  else()
    target_precompile_headers(${target} PRIVATE <torch/torch.h> <vector> <string>)
    set_property(GLOBAL PROPERTY MFPO_PCH_ANCHOR ${target})
  endif()
endfunction()

# mfpo_test(name SOURCES ... LIBS ...): one GoogleTest binary registered with CTest.
function(mfpo_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  mfpo_warnings(${name})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES
    ENVIRONMENT "MFPO_SOURCE_DIR=${PROJECT_SOURCE_DIR};MFPO_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()
