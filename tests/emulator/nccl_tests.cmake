# The emulated NCCL's own check (nccl_emu_test.cc). Included from tests/CMakeLists.txt in the
# emulation build.
add_executable(moe_nccl_emu_tests ${CMAKE_CURRENT_LIST_DIR}/nccl_emu_test.cc)
target_link_libraries(moe_nccl_emu_tests PRIVATE moe_nccl_emu moe_cuda_emu GTest::gtest GTest::gtest_main)
gtest_discover_tests(moe_nccl_emu_tests PROPERTIES LABELS "gpu;emulator" TIMEOUT 60
                     DISCOVERY_TIMEOUT 60)
