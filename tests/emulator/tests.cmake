# The emulator's own check: its mma / ldmatrix against a plain matrix product, shuffles,
# votes, barriers, graph capture. Included from tests/CMakeLists.txt in the emulation build.
add_executable(moe_emulator_tests ${CMAKE_CURRENT_LIST_DIR}/emulator_test.cc)
target_link_libraries(moe_emulator_tests PRIVATE moe_cuda_emu GTest::gtest GTest::gtest_main)
target_compile_options(moe_emulator_tests PRIVATE -ffp-contract=off)
gtest_discover_tests(moe_emulator_tests PROPERTIES LABELS "gpu;emulator" DISCOVERY_TIMEOUT 60)
