# All third-party dependencies come from Debian packages (scripts/install-deps.sh).
find_package(Threads REQUIRED)
find_package(Torch REQUIRED)
find_package(absl REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs photo)
find_package(prometheus-cpp REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(SQLite3 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
find_library(SENTENCEPIECE_TRAIN_LIBRARY sentencepiece_train REQUIRED)

# Debian's TorchConfig exposes plain library names; wrap them in one imported target so that
# consumers link `mfpo::torch` with the include dirs and compile flags it needs.
add_library(mfpo_torch INTERFACE)
target_link_libraries(mfpo_torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(mfpo_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
if(TORCH_CXX_FLAGS)
  separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(mfpo_torch INTERFACE ${_torch_flags})
endif()
add_library(mfpo::torch ALIAS mfpo_torch)

if(MFPO_WITH_NCCL)
  # The NCCL process group comes with a CUDA build of LibTorch (e.g. the official libtorch 2.x
  # archive, or pip's torch: -DCMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')).
  # Debian's libtorch-dev is CPU-only: its headers lack c10/cuda's generated configuration.
  set(_mfpo_cuda_torch FALSE)
  foreach(_dir ${TORCH_INCLUDE_DIRS})
    if(EXISTS "${_dir}/c10/cuda/impl/cuda_cmake_macros.h")
      set(_mfpo_cuda_torch TRUE)
    endif()
  endforeach()
  if(NOT _mfpo_cuda_torch)
    message(FATAL_ERROR "MFPO_WITH_NCCL=ON needs a CUDA build of LibTorch (found ${Torch_DIR}, which is CPU-only): "
                        "point CMAKE_PREFIX_PATH at one, e.g. scripts/gpu-check.sh does")
  endif()
  find_package(CUDAToolkit REQUIRED)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64 REQUIRED)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include REQUIRED)
  message(STATUS "mfpo: NCCL path enabled (${NCCL_LIBRARY})")
endif()

if(MFPO_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
