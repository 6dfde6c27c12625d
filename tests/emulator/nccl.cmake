# The emulated NCCL (tests/emulator/src/nccl.cc, the API, over nccl_engine.cc; header
# tests/emulator/include/nccl.h): what the NCCL transport of expert parallelism calls, between
# ranks that are threads of one process on the emulated device. Included from cmake/ep.cmake in
# the emulation build, after tests/emulator/emulator.cmake has defined moe_cuda_emu. A shared
# library, as libnccl is, so that libmoe and the tests share one set of communicators.
add_library(moe_nccl_emu SHARED ${CMAKE_CURRENT_LIST_DIR}/src/nccl.cc
            ${CMAKE_CURRENT_LIST_DIR}/src/nccl_engine.cc)
set_target_properties(moe_nccl_emu PROPERTIES CXX_VISIBILITY_PRESET hidden)
# BEFORE: the CUDA toolkit's include directory may hold the real nccl.h.
target_include_directories(moe_nccl_emu BEFORE PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include)
target_compile_options(moe_nccl_emu PRIVATE -Wall -Wextra -Wno-unused-parameter)
target_link_libraries(moe_nccl_emu PUBLIC moe_cuda_emu Threads::Threads)
