# Fuzzing build (MFPO_FUZZ=ON, clang only; see tests/fuzz/README.md and scripts/fuzz.sh).
#
# Every project target is compiled with coverage instrumentation for libFuzzer plus ASan and
# UBSan (`-fsanitize=fuzzer-no-link,address,undefined`); the fuzz executables themselves add
# libFuzzer's main (`-fsanitize=fuzzer,address,undefined`, tests/fuzz/CMakeLists.txt).
# Build-time tools whose output is part of the build (mfpo-spm-train) stay uninstrumented.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "MFPO_FUZZ needs clang (libFuzzer); configure with "
                      "-DCMAKE_CXX_COMPILER=clang++ or `cmake --preset fuzz`")
endif()

set(MFPO_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer)
set(MFPO_FUZZ_LIB_FLAGS -fsanitize=fuzzer-no-link ${MFPO_SANITIZE_FLAGS})
set(MFPO_FUZZ_EXE_FLAGS -fsanitize=fuzzer ${MFPO_SANITIZE_FLAGS})
set(MFPO_FUZZ_UNINSTRUMENTED mfpo-spm-train)

function(_mfpo_fuzz_collect dir out)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    _mfpo_fuzz_collect(${sub} sub_targets)
    list(APPEND targets ${sub_targets})
  endforeach()
  set(${out} ${targets} PARENT_SCOPE)
endfunction()

# Called once at the end of the top-level CMakeLists.txt, after every target exists. All
# targets sharing the LibTorch precompiled header get the same flags, as clang requires.
function(mfpo_fuzz_instrument_all)
  _mfpo_fuzz_collect(${PROJECT_SOURCE_DIR} targets)
  foreach(t IN LISTS targets)
    get_target_property(type ${t} TYPE)
    if(NOT type MATCHES "^(EXECUTABLE|STATIC_LIBRARY|SHARED_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY)$")
      continue()
    endif()
    if(t IN_LIST MFPO_FUZZ_UNINSTRUMENTED)
      continue()
    endif()
    get_target_property(is_fuzzer ${t} MFPO_FUZZER)
    if(is_fuzzer)
      target_compile_options(${t} PRIVATE ${MFPO_FUZZ_EXE_FLAGS})
      target_link_options(${t} PRIVATE ${MFPO_FUZZ_EXE_FLAGS})
    else()
      target_compile_options(${t} PRIVATE ${MFPO_FUZZ_LIB_FLAGS})
      if(type MATCHES "^(EXECUTABLE|SHARED_LIBRARY|MODULE_LIBRARY)$")
        target_link_options(${t} PRIVATE ${MFPO_SANITIZE_FLAGS})
      endif()
    endif()
  endforeach()
endfunction()
