# The CPU emulation of the CUDA device (tests/emulator/README.md). Included from the top-level
# CMakeLists.txt when MOE_CUDA_EMULATION is ON; defines moe_cuda_emu (the emulated CUDA runtime
# and cuBLAS subset, a shared library so that libmoe and the tests share one device) and
# MOE_EMU_KERNEL_SOURCES (kernels/*.cu rewritten for the host C++ compiler).
find_package(Python3 REQUIRED COMPONENTS Interpreter)
find_package(Threads REQUIRED)
set(_emu_dir ${CMAKE_CURRENT_LIST_DIR})
set(MOE_EMU_INCLUDE_DIR ${_emu_dir}/include)

add_library(moe_cuda_emu SHARED ${_emu_dir}/src/runtime.cc ${_emu_dir}/src/cublas.cc
            ${_emu_dir}/src/scheduler.cc ${_emu_dir}/src/hopper.cc)
set_target_properties(moe_cuda_emu PROPERTIES CXX_VISIBILITY_PRESET default VISIBILITY_INLINES_HIDDEN OFF)
target_include_directories(moe_cuda_emu PUBLIC ${MOE_EMU_INCLUDE_DIR} ${CUDAToolkit_INCLUDE_DIRS})
target_compile_definitions(moe_cuda_emu PUBLIC MOE_CUDA_EMULATION=1)
target_compile_options(moe_cuda_emu PRIVATE -Wall -Wextra -Wno-unused-parameter)
target_link_libraries(moe_cuda_emu PUBLIC Threads::Threads)

# kernels/*.cu -> <build>/emu_kernels/*.cu.cc and *.cuh -> <build>/emu_kernels/*.cuh, so that the
# kernels' own includes of .cuh files find the rewritten ones first.
file(GLOB _emu_kernel_inputs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/*.cu
     ${PROJECT_SOURCE_DIR}/kernels/*.cuh)
set(MOE_EMU_KERNEL_SOURCES)
set(_emu_kernel_units)
foreach(_in IN LISTS _emu_kernel_inputs)
  get_filename_component(_name ${_in} NAME)
  set(_out ${CMAKE_BINARY_DIR}/emu_kernels/${_name})
  if(_name MATCHES "\\.cu$")
    set(_out ${_out}.cc)
    list(APPEND _emu_kernel_units ${_out})
  endif()
  add_custom_command(OUTPUT ${_out}
                     COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/emu_kernels
                     COMMAND Python3::Interpreter ${_emu_dir}/rewrite_kernels.py ${_in} ${_out}
                     DEPENDS ${_in} ${_emu_dir}/rewrite_kernels.py
                     COMMENT "Rewriting ${_name} for the CUDA emulator" VERBATIM)
  list(APPEND MOE_EMU_KERNEL_SOURCES ${_out})
endforeach()
# -Wno-psabi: gcc notes an ABI change for passing the 64-byte-aligned CUtensorMap by value, which
# only matters across compilers. -ffp-contract=off: __fadd_rn / __fmul_rn and the kernels' separate multiply-then-add must not
# become FMAs, as they do not on the GPU. -fno-strict-aliasing: kernels move 16-byte vectors
# through reinterpret_cast (uint4 over __half[8]), which nvcc compiles as meant and g++ at -O2
# would be free to reorder.
set_source_files_properties(${_emu_kernel_units} PROPERTIES
  COMPILE_OPTIONS "-include;${MOE_EMU_INCLUDE_DIR}/moe_emu/device.h;-ffp-contract=off;-fno-strict-aliasing;-Wno-unknown-pragmas;-Wno-psabi")
