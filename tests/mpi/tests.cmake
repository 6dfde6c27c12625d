# Expert-parallel suites (included from tests/CMakeLists.txt).
#  moe_ep_tests   loopback communicator (threads as ranks) on CPU and CUDA, NCCL communicators
#                 (threads as ranks, with NCCL), the layout and the cost model; no MPI needed;
#                 CPU cases carry CI, CUDA and NCCL cases skip without a GPU (the emulation build
#                 runs them on the emulated device and the emulated NCCL).
#  moe_mpi_tests  the same cases over MPI, run by ctest under mpirun -np 1, 2 and 4.
set(_ep_dir ${CMAKE_CURRENT_SOURCE_DIR}/mpi)

add_executable(moe_ep_tests ${_ep_dir}/ep_loopback_test.cc ${_ep_dir}/ep_layout_test.cc
                            ${_ep_dir}/ep_nccl_test.cc)
target_include_directories(moe_ep_tests PRIVATE ${_ep_dir} ${PROJECT_SOURCE_DIR}/csrc
                                                ${PROJECT_SOURCE_DIR}/kernels)
# moe_static: the layout test calls internal (hidden) functions.
target_link_libraries(moe_ep_tests PRIVATE moe_static GTest::gtest GTest::gtest_main)
if(MOE_WITH_CUDA)
  target_link_libraries(moe_ep_tests PRIVATE ${MOE_CUDART_TARGET})
endif()
if(MOE_WITH_NCCL)  # ep_nccl_test.cc: NCCL communicators without MPI
  target_include_directories(moe_ep_tests PRIVATE ${NCCL_INCLUDE_DIR})
  target_link_libraries(moe_ep_tests PRIVATE ${NCCL_LIBRARY})
endif()
gtest_discover_tests(moe_ep_tests PROPERTIES LABELS cpu TIMEOUT 120 DISCOVERY_TIMEOUT 60)

if(MOE_WITH_MPI)
  add_executable(moe_mpi_tests ${_ep_dir}/ep_mpi_test.cc ${_ep_dir}/mpi_main.cc)
  target_include_directories(moe_mpi_tests PRIVATE ${_ep_dir})
  target_link_libraries(moe_mpi_tests PRIVATE moe GTest::gtest MPI::MPI_C)
  target_compile_definitions(moe_mpi_tests PRIVATE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
  if(MOE_WITH_CUDA)
    target_link_libraries(moe_mpi_tests PRIVATE ${MOE_CUDART_TARGET})
  endif()
  if(MPIEXEC_EXECUTABLE)
    foreach(_np 1 2 4)
      add_test(NAME moe_mpi_np${_np}
               COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe
                       ${MPIEXEC_NUMPROC_FLAG} ${_np} $<TARGET_FILE:moe_mpi_tests>)
      # OMP_NUM_THREADS=1: np ranks on a few cores must not oversubscribe each other further.
      # detect_leaks=0: Open MPI keeps allocations until exit, which LeakSanitizer reports.
      # RESOURCE_LOCK: two mpiruns starting at once under ctest -j failed to launch once here.
      set_tests_properties(moe_mpi_np${_np} PROPERTIES TIMEOUT 120 LABELS mpi
                           RESOURCE_LOCK mpirun PROCESSORS ${_np}
                           ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;ASAN_OPTIONS=detect_leaks=0")
    endforeach()
  endif()
endif()
