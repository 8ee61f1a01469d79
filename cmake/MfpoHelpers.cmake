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
  # One CTest entry per test case; GTEST_SKIP shows as skipped, not passed.
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)
endfunction()
