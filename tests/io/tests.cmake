# Checkpoint loading (csrc/io): fixtures are written by the tests into temporary directories.
# Included from tests/CMakeLists.txt.
if(MOE_WITH_CJSON)
  file(GLOB MOE_IO_TEST_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/io/*.cc)
  if(MOE_WITH_MPI)  # the EP engine (and its loopback communicator) is built with MPI
    list(APPEND MOE_IO_TEST_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/io/ep/test_checkpoint_ep.cc)
  endif()
  add_executable(moe_io_tests ${MOE_IO_TEST_SOURCES} ${CMAKE_CURRENT_SOURCE_DIR}/common/test_util.cc)
  # csrc for core/dtype.h's header-only scalar conversions (the fixture writer rounds with them).
  target_include_directories(moe_io_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}
                             ${CMAKE_CURRENT_SOURCE_DIR}/io ${PROJECT_SOURCE_DIR}/csrc)
  target_link_libraries(moe_io_tests PRIVATE moe moe_naive GTest::gtest GTest::gtest_main)
  # Label cpu: the CPU suites carry CI. `ctest -R ^io/` selects this suite alone.
  gtest_discover_tests(moe_io_tests TEST_PREFIX "io/" PROPERTIES LABELS cpu DISCOVERY_TIMEOUT 60)

  # White-box tests of the reader: moe_static exposes the internal csrc/io functions.
  add_executable(moe_io_internal_tests ${CMAKE_CURRENT_SOURCE_DIR}/io/internal/test_reader_internal.cc
                 ${CMAKE_CURRENT_SOURCE_DIR}/io/ckpt_writer.cc)
  target_include_directories(moe_io_internal_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/io
                             ${PROJECT_SOURCE_DIR}/csrc)
  target_link_libraries(moe_io_internal_tests PRIVATE moe_static moe_naive GTest::gtest
                        GTest::gtest_main)
  gtest_discover_tests(moe_io_internal_tests TEST_PREFIX "io/" PROPERTIES LABELS cpu
                       DISCOVERY_TIMEOUT 60)
endif()

# libFuzzer target for the safetensors header parser: clang only, -DMOE_BUILD_FUZZERS=ON.
# `ctest -L fuzz` runs it for 30 s from the committed seeds in tests/io/corpus.
option(MOE_BUILD_FUZZERS "Build libFuzzer targets (needs clang)" OFF)
if(MOE_BUILD_FUZZERS AND MOE_WITH_CJSON)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "MOE_BUILD_FUZZERS needs clang (CC=clang); the C compiler is "
                        "${CMAKE_C_COMPILER_ID}")
  endif()
  add_executable(fuzz_safetensors ${CMAKE_CURRENT_SOURCE_DIR}/io/fuzz_safetensors.c
                 ${PROJECT_SOURCE_DIR}/csrc/io/safetensors.c ${PROJECT_SOURCE_DIR}/csrc/core/status.c)
  target_include_directories(fuzz_safetensors PRIVATE ${PROJECT_SOURCE_DIR}/include
                             ${PROJECT_SOURCE_DIR}/csrc)
  target_compile_definitions(fuzz_safetensors PRIVATE MOE_WITH_CJSON=1)
  target_compile_options(fuzz_safetensors PRIVATE -g -O1 -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_safetensors PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_safetensors PRIVATE PkgConfig::CJSON)
  set(_moe_fuzz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_safetensors_corpus)
  file(MAKE_DIRECTORY ${_moe_fuzz_work})
  # New inputs go to the first (build-tree) directory; the committed seeds stay untouched.
  add_test(NAME fuzz_safetensors
           COMMAND fuzz_safetensors -max_total_time=30 -rss_limit_mb=2048
                   -dict=${CMAKE_CURRENT_SOURCE_DIR}/io/safetensors.dict
                   ${_moe_fuzz_work} ${CMAKE_CURRENT_SOURCE_DIR}/io/corpus)
  set_tests_properties(fuzz_safetensors PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
