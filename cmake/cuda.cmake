# The CUDA backend (lib/backend_cuda + kernels/): built when nvcc is found, for Hopper
# only (sm_90a: the kernels and cuBLASLt's FP8 block scaling target H100/H200). CI has
# nvcc but no GPU, so it compiles and links every kernel; the `gpu` tests run on a device.
include(CheckLanguage)
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  find_program(DSI_NVCC nvcc HINTS ENV CUDA_PATH PATHS /usr/local/cuda/bin NO_CACHE)
  if(DSI_NVCC)
    set(CMAKE_CUDA_COMPILER ${DSI_NVCC})
  endif()
endif()
check_language(CUDA)
# Sanitizer and fuzzing builds test host code only (CI never has a GPU, and the plain
# build already compiles every kernel): no CUDA there unless asked for.
if(CMAKE_CUDA_COMPILER AND NOT DSINFER_SANITIZE AND NOT DSINFER_TSAN AND NOT DSINFER_FUZZ)
  set(dsi_cuda_default ON)
else()
  set(dsi_cuda_default OFF)
endif()
option(DSINFER_CUDA "Build the CUDA backend (needs nvcc and the CUDA Toolkit)" ${dsi_cuda_default})
if(NOT DSINFER_CUDA)
  if(CMAKE_CUDA_COMPILER)
    message(STATUS "dsinfer: CUDA backend skipped: DSINFER_CUDA=OFF (the default in sanitizer and fuzz builds)")
  else()
    message(STATUS "dsinfer: CUDA backend skipped: no nvcc found (set CUDACXX or put nvcc on PATH)")
  endif()
  return()
endif()

# CMake's "90a" architecture spelling postdates our minimum version: pass -gencode.
set(CMAKE_CUDA_ARCHITECTURES OFF)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
message(STATUS "dsinfer: CUDA backend enabled (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, sm_90a)")

file(GLOB DSI_CUDA_SOURCES CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/kernels/*/*.cu ${PROJECT_SOURCE_DIR}/lib/backend_cuda/*.cu)
add_library(dsinfer_cuda OBJECT ${DSI_CUDA_SOURCES})
set_target_properties(dsinfer_cuda PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON)
# The directory's host flags (e.g. DSINFER_SANITIZE's -fsanitize) are not nvcc options:
# CUDA objects are built without them.
set_property(TARGET dsinfer_cuda PROPERTY COMPILE_OPTIONS "")
target_compile_options(dsinfer_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xcompiler=-Wall>)
target_include_directories(dsinfer_cuda PUBLIC
  ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/lib ${PROJECT_SOURCE_DIR}/kernels)
target_compile_definitions(dsinfer_cuda PRIVATE DSINFER_BUILD)
target_link_libraries(dsinfer_cuda PUBLIC CUDA::cudart CUDA::cublasLt)

target_compile_definitions(dsinfer_obj PRIVATE DSINFER_HAVE_CUDA)
set_target_properties(dsinfer dsinfer_internal PROPERTIES CUDA_ARCHITECTURES OFF)
target_sources(dsinfer PRIVATE $<TARGET_OBJECTS:dsinfer_cuda>)
target_link_libraries(dsinfer PRIVATE CUDA::cudart CUDA::cublasLt)
target_sources(dsinfer_internal PRIVATE $<TARGET_OBJECTS:dsinfer_cuda>)
target_link_libraries(dsinfer_internal PUBLIC CUDA::cudart CUDA::cublasLt)
target_include_directories(dsinfer_internal PUBLIC ${PROJECT_SOURCE_DIR}/kernels)

# GPU tests (label gpu: they need a device): the op harness, and the fast precision
# measured against the references.
if(DSINFER_BUILD_TESTS)
  find_package(doctest REQUIRED)
  file(GLOB DSI_CUDA_TESTS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/cuda/test_*.cpp)
  foreach(src ${DSI_CUDA_TESTS})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src} $<TARGET_OBJECTS:dsinfer_doctest_main>)
    target_link_libraries(${name} PRIVATE dsinfer_internal doctest::doctest)
    target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
    target_compile_definitions(${name} PRIVATE DSI_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data")
    set_target_properties(${name} PROPERTIES CUDA_ARCHITECTURES OFF)
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES LABELS "gpu" TIMEOUT 1200)
  endforeach()
  # Kernel benchmarks (not tests): docs/PERF.md.
  add_executable(bench_mla ${PROJECT_SOURCE_DIR}/tests/cuda/bench_mla.cpp)
  target_link_libraries(bench_mla PRIVATE dsinfer_internal)
  # The serving stress test on the CUDA backend in both precisions (what "equal" means
  # there: tests/test_serving_stress.cpp). Not named test_serving_stress*: CI selects that.
  foreach(precision f32 fast)
    add_test(NAME cuda_serving_stress_${precision} COMMAND test_serving_stress)
    set_tests_properties(cuda_serving_stress_${precision} PROPERTIES LABELS "gpu;serving" TIMEOUT 1200
      ENVIRONMENT "DSI_TEST_BACKEND=cuda;DSI_TEST_PRECISION=${precision}")
  endforeach()
endif()
