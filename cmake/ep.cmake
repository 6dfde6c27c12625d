# Expert parallelism (csrc/ep): the loopback transport, layout and cost model build everywhere;
# MPI (MOE_WITH_MPI, globbed by the top-level list) and NCCL (MOE_WITH_CUDA + libnccl; in the
# emulation build the emulated NCCL of tests/emulator) add transports. Included from the
# top-level CMakeLists.txt after moe_objects exists.
find_package(Threads REQUIRED)
target_link_libraries(moe_objects PUBLIC Threads::Threads)

if(NOT MOE_WITH_MPI)
  # Without MPI the top-level glob skips csrc/ep: add it here (mpi.c compiles to stubs).
  file(GLOB _moe_ep_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/csrc/ep/*.c)
  target_sources(moe_objects PRIVATE ${_moe_ep_sources})
endif()

set(MOE_WITH_NCCL OFF)
if(MOE_CUDA_EMULATION)
  # The emulated NCCL (tests/emulator/nccl.cmake): the same transport code, run in CI with ranks
  # as threads. NCCL_LIBRARY is a target here; nothing of the emulation build is installed.
  include(${CMAKE_CURRENT_SOURCE_DIR}/tests/emulator/nccl.cmake)
  set(MOE_WITH_NCCL ON)
  set(NCCL_LIBRARY moe_nccl_emu)
  set(NCCL_INCLUDE_DIR ${MOE_EMU_INCLUDE_DIR})
  target_compile_definitions(moe_objects PUBLIC MOE_WITH_NCCL=1)
  target_link_libraries(moe_objects PUBLIC moe_nccl_emu)
  message(STATUS "libmoe: emulated NCCL (tests/emulator/src/nccl.cc): GPU expert parallelism runs on the emulator")
elseif(MOE_WITH_CUDA)
  find_library(NCCL_LIBRARY nccl HINTS /usr/local/cuda/lib64 ${CUDAToolkit_LIBRARY_DIR}
               ENV NCCL_HOME PATH_SUFFIXES lib lib64)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS /usr/local/cuda/include ${CUDAToolkit_INCLUDE_DIRS}
            ENV NCCL_HOME PATH_SUFFIXES include)
  if(NCCL_LIBRARY AND NCCL_INCLUDE_DIR)
    set(MOE_WITH_NCCL ON)
    target_compile_definitions(moe_objects PUBLIC MOE_WITH_NCCL=1)
    target_include_directories(moe_objects PRIVATE ${NCCL_INCLUDE_DIR})
    target_link_libraries(moe_objects PUBLIC ${NCCL_LIBRARY})
    message(STATUS "libmoe: NCCL found (${NCCL_LIBRARY}): GPU expert parallelism enabled")
  else()
    message(STATUS "libmoe: NCCL not found: moeEpCommCreateNccl returns moeErrorNotSupported")
  endif()
endif()
